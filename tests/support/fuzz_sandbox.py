"""The sandbox a fuzz test may hit: a netns pair, a tmpfs, a victim process; and its checks.

:class:`FuzzSandbox` starts the victim (a sleeping Python process with a
unique name), notes what the pair's traffic control, the tmpfs and the
victim look like, and :meth:`FuzzSandbox.assert_as_before` checks that a
rolled-back fault left them so. A victim that a `kill` fault (which is not
reversible) killed or stopped is replaced by a new one.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from types import TracebackType

from hostchaos.sandbox import NetnsPair
from tests.support.fuzz_targets import Sandbox
from tests.support.victims import _PRELUDE, Victim, cgroups_of, nofile_of


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rpartition(")")[2].split()[0]
    except OSError:
        return "gone"


class FuzzSandbox:
    """Everything a fuzz test's faults may touch, with a picture of it before any fault."""

    def __init__(self, pair: NetnsPair, fill_dir: Path) -> None:
        self.pair, self.fill_dir = pair, fill_dir
        self.victim_name = f"hcfzv{os.getpid() % 100000}"
        self.victim: Victim | None = None
        self.counts: Counter[str] = Counter()
        self.requests = 0
        self.last_id = "hc-latency-00000000"
        self.state_dir = Path("/nonexistent")
        self.socket_path = Path("/nonexistent")
        self.tc_before = (pair.tc_config("a"), pair.tc_config("b"))
        self.targets = Sandbox(netns=(pair.a, pair.b), ifaces=(pair.iface_a, pair.iface_b),
                               victim_pid=-1, victim_name=self.victim_name, fill_dir=fill_dir)

    def __enter__(self) -> FuzzSandbox:
        self._start_victim()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.victim is not None:
            self.victim.kill()

    def _start_victim(self) -> None:
        if self.victim is not None:
            self.victim.kill()
            self.counts["victim replaced"] += 1
        code = _PRELUDE + f"name({self.victim_name!r})\nreply('ready')\ntime.sleep(86400)\n"
        self.victim = Victim(code)
        self.targets.victim_pid = self.victim.pid
        self.victim_cgroups = cgroups_of(self.victim.pid)
        self.victim_nofile = nofile_of(self.victim.pid)

    def refresh(self) -> None:
        """A live, running victim (a kill fault may have ended or stopped the last one)."""
        assert self.victim is not None
        if self.victim.proc.poll() is not None or _state(self.victim.pid) in ("T", "t", "Z",
                                                                              "gone"):
            self._start_victim()

    def assert_as_before(self) -> None:
        """The pair's qdiscs, the tmpfs and the victim's cgroups and limits are as they were."""
        assert (self.pair.tc_config("a"), self.pair.tc_config("b")) == self.tc_before
        assert sorted(p.name for p in self.fill_dir.iterdir()) == []
        assert self.victim is not None
        if self.victim.proc.poll() is None and _state(self.victim.pid) not in ("T", "t", "Z"):
            assert cgroups_of(self.victim.pid) == self.victim_cgroups
            assert nofile_of(self.victim.pid) == self.victim_nofile
