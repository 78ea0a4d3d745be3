"""The agent's Prometheus metrics, in a registry of its own (never the global one).

Served on the agent's socket at ``/metrics`` (never by prometheus-client's
``start_http_server``, which listens on every address) and, when
``metrics_textfile`` is configured, written atomically to that file for
node_exporter's textfile collector.

- ``hostchaos_faults_active{kind}``: open faults by kind, read from the journal
  at each scrape (so faults injected by an in-process CLI count too);
- ``hostchaos_fault_records{state}``: journal records by state (plus
  ``unreadable``);
- ``hostchaos_injections_total{kind,result}`` and
  ``hostchaos_rollbacks_total{kind,result}``: what this agent did (result
  ``ok`` or the error's type);
- ``hostchaos_rollback_duration_seconds{kind}``: how long its rollbacks took;
- ``hostchaos_deadline_lateness_seconds``: for every fault that ended because
  its deadline or lease passed (whoever rolled it back: the warden
  or a command), its end time minus that deadline; noticed at the next
  scrape or textfile write after it ended.
"""

from __future__ import annotations

import threading
from collections import Counter as Tally
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import write_to_textfile
from prometheus_client.registry import Collector

from hostchaos.records import STATES

if TYPE_CHECKING:
    from hostchaos.journal import Journal
    from hostchaos.records import FaultRecord

disable_created_metrics()  # type: ignore[no-untyped-call]  # no *_created series: counters and histograms only

LATENESS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0)
DEADLINE_REASONS = ("deadline reached", "lease expired without renewal")


class JournalCollector(Collector):
    """Gauges read from the journal at collection time; notices deadline rollbacks."""

    def __init__(self, journal: Journal, lateness: Histogram) -> None:
        self.journal = journal
        self.lateness = lateness
        self._seen: set[str] | None = None  # ended records already judged
        self._lock = threading.Lock()
        self._snapshot: tuple[list[FaultRecord], list[Any]] | None = None

    def describe(self) -> Iterable[Metric]:
        return []  # no journal scan when registered

    def start(self) -> None:
        """Remember the records that ended before now: only later ends are observed."""
        self.notice_ended(self.journal.scan(include_ended=True)[0])

    def refresh(self) -> None:
        """Read the journal and observe new deadline rollbacks *before* the histogram is
        collected (collectors run in registration order; this one is last)."""
        records, unreadable = self.journal.scan(include_ended=True)
        self.notice_ended(records)
        self._snapshot = (records, unreadable)

    def collect(self) -> Iterable[Metric]:
        snapshot, self._snapshot = self._snapshot, None
        if snapshot is None:
            records, unreadable = self.journal.scan(include_ended=True)
            self.notice_ended(records)
        else:
            records, unreadable = snapshot
        active = GaugeMetricFamily("hostchaos_faults_active", "Open faults by kind.",
                                   labels=["kind"])
        for kind, count in sorted(Tally(r.kind for r in records if r.is_open).items()):
            active.add_metric([kind], count)
        by_state = GaugeMetricFamily("hostchaos_fault_records",
                                     "Journal records by state.", labels=["state"])
        states = Tally(r.state for r in records)
        for state in STATES:
            by_state.add_metric([state], states.get(state, 0))
        by_state.add_metric(["unreadable"], len(unreadable))
        return [active, by_state]

    def notice_ended(self, records: list[FaultRecord]) -> None:
        """Observe the lateness of deadline rollbacks not seen before (none on first call)."""
        with self._lock:
            ended = [r for r in records if not r.is_open]
            if self._seen is None:  # at start: history is not this agent's to count
                self._seen = {r.id for r in ended}
                return
            for record in ended:
                if record.id in self._seen:
                    continue
                self._seen.add(record.id)
                due = _deadline_of(record)
                if due is not None and record.ended_at is not None:
                    self.lateness.observe(max(0.0, record.ended_at - due))


def _deadline_of(record: FaultRecord) -> float | None:
    reason = record.end_reason or ""
    if reason.startswith(DEADLINE_REASONS[0]):
        return record.expires_at
    if reason.startswith(DEADLINE_REASONS[1]):
        return record.lease_expires_at
    return None


class AgentMetrics:
    """Every metric the agent exposes, in its own registry."""

    def __init__(self, journal: Journal) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.injections = Counter("hostchaos_injections", "Injections by kind and result.",
                                  ["kind", "result"], registry=self.registry)
        self.rollbacks = Counter("hostchaos_rollbacks", "Rollbacks by kind and result.",
                                 ["kind", "result"], registry=self.registry)
        self.rollback_seconds = Histogram("hostchaos_rollback_duration_seconds",
                                          "How long rollbacks took.", ["kind"],
                                          registry=self.registry)
        self.lateness = Histogram("hostchaos_deadline_lateness_seconds",
                                  "End time minus deadline (or lease) of faults rolled back "
                                  "because it passed.", buckets=LATENESS_BUCKETS,
                                  registry=self.registry)
        self.journal_collector = JournalCollector(journal, self.lateness)
        self._collecting = threading.Lock()
        self.registry.register(self.journal_collector)

    def exposition(self) -> bytes:
        with self._collecting:
            self.journal_collector.refresh()
            return generate_latest(self.registry)

    def write_textfile(self, path: Path) -> None:
        """Write the metrics to ``path`` atomically (a temp file renamed over it)."""
        with self._collecting:
            self.journal_collector.refresh()
            write_to_textfile(str(path), self.registry)
