"""What the API and the in-process CLI both do with faults: the engine, audited, as views.

A *view* of a fault is the dict the CLI prints with ``--json``
(:func:`hostchaos.rendering.record_summary`) plus a few fields the CLI needs
to print text without the record itself (``output.EXTRA_KEYS``: whether the
record was read from its copy, whether its warden lives, the time left on the
deadline clock, the drift between
record and kernel). The agent answers with views and the in-process CLI makes
the same ones, so the output is the same either way by construction.

Every change (inject, extend, rollback, rollback-all) is written to the audit
log with the client's uid and pid and its result, and counted in the metrics
when there are any. Engine calls are serialised by one lock: the state lock
serialises them across processes anyway, and pyroute2 is not relied on to be
thread-safe.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hostchaos.agent.audit import AuditLog
from hostchaos.agent.logs import INFO, WARNING, log
from hostchaos.errors import HostchaosError, RollbackError, SpecError
from hostchaos.faults.from_options import duration_value, spec_from_options
from hostchaos.records import ACTIVE

if TYPE_CHECKING:
    from hostchaos.agent.metrics import AgentMetrics
    from hostchaos.engine import Engine
    from hostchaos.records import FaultRecord

@dataclass(frozen=True)
class Client:
    """Who asked: from SO_PEERCRED for an API client, the process itself in-process."""

    uid: int | None
    pid: int | None
    gid: int | None = None

    @classmethod
    def this_process(cls) -> Client:
        return cls(os.getuid(), os.getpid(), os.getgid())


def fault_view(record: FaultRecord) -> dict[str, Any]:
    """The record as the CLI prints it (``record_summary``), plus ``output.EXTRA_KEYS``."""
    from hostchaos.rendering import record_summary, seconds_left

    view = record_summary(record)
    view["salvaged"] = record.salvaged
    view["holder_alive"] = record.holder.alive() if record.holder else None
    view["seconds_left"] = seconds_left(record)
    view["drift"] = None
    return view


def drift_of(record: FaultRecord, observed: Mapping[str, Any]) -> str | None:
    """Why the kernel disagrees with the record, or None when it agrees (or cannot tell)."""
    if not record.is_open:
        return None
    if observed.get("problem"):
        return str(observed["problem"])
    if record.state == ACTIVE and observed.get("present") is False:
        return "the record says active but the kernel does not carry the fault"
    return None


class FaultService:
    """The engine's public operations for one client at a time, audited and counted."""

    def __init__(self, engine: Engine, *, metrics: AgentMetrics | None = None,
                 fault_class: Callable[[str], Any] | None = None,
                 in_process: bool = False) -> None:
        self.engine = engine
        #: run by the CLI itself: audit quietly and write no log lines (its output is the CLI's)
        self.in_process = in_process
        self.audit = AuditLog(engine.journal.state_dir, warn=not in_process)
        self.metrics = metrics
        self.fault_class = fault_class or engine.fault_class
        self._lock = threading.Lock()

    @contextmanager
    def _one_at_a_time(self, wait: float | None = None) -> Iterator[None]:
        """Hold the service lock; with ``wait``, go on without it after that many seconds
        (the state lock still serialises the engine: used when stopping, so a wedged
        request cannot keep the other faults on the host)."""
        got = self._lock.acquire(timeout=-1 if wait is None else wait)
        if not got:
            self._log(WARNING, "a request still holds the engine; going on without it",
                      waited=wait)
        try:
            yield
        finally:
            if got:
                self._lock.release()

    # -- parsing -------------------------------------------------------------------
    def _spec(self, kind: Any, options: Any) -> Any:
        if not isinstance(kind, str) or not kind:
            raise SpecError("kind must be a fault kind's name, e.g. latency")
        if options is None:
            options = {}
        return spec_from_options(kind, options, fault_class=self.fault_class)

    # -- changes ---------------------------------------------------------------------
    @contextmanager
    def _for_client(self, client: Client | None) -> Iterator[None]:
        """Work as if the client ran the engine itself: its ``$SSH_CONNECTION`` and its
        working directory (for relative paths), read from /proc (see system.caller)."""
        if self.in_process or client is None:
            yield
            return
        from hostchaos.system import caller

        with caller.on_behalf_of(client.pid):
            yield

    def plan(self, kind: Any, options: Any, duration: Any = None,
             lease: Any = None, *, client: Client | None = None) -> dict[str, Any]:
        spec = self._spec(kind, options)
        with self._one_at_a_time(), self._for_client(client):
            return self.engine.plan(spec, duration_value(duration, "--for"),
                                    duration_value(lease, "--lease"))

    def inject(self, kind: Any, options: Any, duration: Any = None, lease: Any = None, *,
               client: Client) -> dict[str, Any]:
        label = kind if isinstance(kind, str) else None
        try:
            spec = self._spec(kind, options)
            total = duration_value(duration, "--for")
            lease_s = duration_value(lease, "--lease")
            with self._one_at_a_time(), self._for_client(client):
                record = self.engine.inject(spec, total, lease_s)
        except HostchaosError as exc:
            self._count("injections", label, exc.label)
            self._audit("inject", client, exc, kind=label)
            raise
        self._count("injections", record.kind, "ok")
        self._audit("inject", client, None, record=record)
        self._log(INFO, "injected", fault_id=record.id, kind=record.kind, target=record.summary,
            client_uid=client.uid, client_pid=client.pid)
        return fault_view(record)

    def extend(self, fault_id: str, duration: Any = None, *, client: Client) -> dict[str, Any]:
        try:
            seconds = duration_value(duration, "--for")
            with self._one_at_a_time():
                record = self.engine.extend(fault_id, seconds)
        except HostchaosError as exc:
            self._audit("extend", client, exc, fault_id=fault_id)
            raise
        self._audit("extend", client, None, record=record)
        return fault_view(record)

    def rollback(self, fault_id: str, *, client: Client,
                 reason: str = "requested") -> dict[str, Any]:
        started = time.monotonic()
        try:
            with self._one_at_a_time():
                record = self.engine.rollback(fault_id, reason)
        except HostchaosError as exc:
            self._audit("rollback", client, exc, fault_id=fault_id)
            self._count("rollbacks", _kind_of_id(fault_id), exc.label)
            raise
        self._rolled_back(record, started, client)
        return fault_view(record)

    def rollback_all(self, *, client: Client, reason: str = "requested",
                     wait: float | None = None) -> dict[str, Any]:
        started = time.monotonic()
        try:
            with self._one_at_a_time(wait):
                done, errors = self.engine.rollback_all(reason)
        except HostchaosError as exc:  # the state lock is busy, the directory unusable ...
            self._audit("rollback-all", client, exc)
            raise
        for record in done:
            self._rolled_back(record, started, client)
        for _ in errors:
            self._count("rollbacks", "unknown", RollbackError.label)
        self._audit("rollback-all", client, RollbackError("; ".join(errors)) if errors else None,
                    rolled_back=[r.id for r in done])
        return {"rolled_back": [fault_view(r) for r in done], "errors": errors}

    def _rolled_back(self, record: FaultRecord, started: float, client: Client) -> None:
        self._count("rollbacks", record.kind, "ok")
        if self.metrics is not None:
            self.metrics.rollback_seconds.labels(record.kind).observe(
                time.monotonic() - started)
        self._audit("rollback", client, None, record=record)
        self._log(INFO, "rolled back", fault_id=record.id, kind=record.kind, state=record.state,
            client_uid=client.uid, client_pid=client.pid)

    # -- reading ---------------------------------------------------------------------
    def listing(self, include_ended: bool = False) -> dict[str, Any]:
        records, unreadable = self.engine.listing(include_ended=include_ended)
        return {"faults": [fault_view(r) for r in records],
                "unreadable": [{"id": bad.fault_id, "state": "unreadable",
                                "path": str(bad.path), "problem": bad.problem}
                               for bad in unreadable]}

    def get(self, fault_id: str, *, observe: bool = True) -> dict[str, Any]:
        """The fault's view; with ``observe``, its live kernel state, events and drift."""
        if not observe:
            return fault_view(self.engine.journal.load(fault_id))
        with self._one_at_a_time():
            record, observed = self.engine.status(fault_id)
        view = fault_view(record)
        view["observed"] = observed
        view["events"] = record.events
        view["drift"] = drift_of(record, observed)
        return view

    def open_count(self) -> int:
        """Open record files (none is read: the CLI asks /v1/health before each command)."""
        return len(self.engine.journal.open_names())

    # -- bookkeeping -----------------------------------------------------------------
    def _log(self, priority: int, text: str, **fields: Any) -> None:
        if not self.in_process:
            log(priority, text, **fields)

    def _count(self, which: str, kind: str | None, result: str) -> None:
        """Count in the metrics; a kind this agent does not know is "unknown" (whatever a
        client sends must not become a label of its own)."""
        if kind is not None:
            try:
                self.fault_class(kind)
            except HostchaosError:
                kind = None
        if self.metrics is not None:
            counter = self.metrics.injections if which == "injections" else self.metrics.rollbacks
            counter.labels(kind or "unknown", result).inc()

    def _audit(self, action: str, client: Client, error: HostchaosError | None, *,
               record: FaultRecord | None = None, fault_id: str | None = None,
               kind: str | None = None, **extra: Any) -> None:
        if record is not None:
            fault_id, kind = record.id, record.kind
        self.audit.write(action, uid=client.uid, pid=client.pid,
                         result="ok" if error is None else error.label,
                         fault_id=fault_id, kind=kind or _kind_of_id(fault_id),
                         message=str(error) if error is not None else None, **extra)
        if error is not None:
            self._log(WARNING, f"{action} failed", fault_id=fault_id, error=error.label,
                detail=str(error), client_uid=client.uid, client_pid=client.pid)


def _kind_of_id(fault_id: str | None) -> str | None:
    """``hc-disk-fill-1a2b3c4d`` -> ``disk-fill`` (None if it is not shaped like an id)."""
    if not fault_id or not fault_id.startswith("hc-"):
        return None
    kind, _, suffix = fault_id[3:].rpartition("-")
    return kind if kind and len(suffix) == 8 else None
