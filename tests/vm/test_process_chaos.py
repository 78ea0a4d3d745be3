"""VM tier (cgroup v2): freeze and thaw through cgroup.freeze; stop and kill as on the host."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hostchaos.config import Config
from hostchaos.engine import Engine
from hostchaos.faults.freeze import FreezeSpec
from hostchaos.faults.kill import KillSpec
from hostchaos.faults.stop import StopSpec
from hostchaos.system import procs
from tests.support.victims import sleepers
from tests.support.waiting import wait_for

CGROUP_ROOT = Path("/sys/fs/cgroup")


@pytest.fixture
def busy_cgroup() -> Iterator[tuple[str, int]]:
    if not (CGROUP_ROOT / "cgroup.controllers").exists():
        pytest.fail("the VM tier expects cgroup v2")
    path = CGROUP_ROOT / f"hc-test-freeze-{os.getpid()}"
    path.mkdir()
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        (path / "cgroup.procs").write_text(str(busy.pid))
        yield "/" + path.name, busy.pid
    finally:
        (path / "cgroup.freeze").write_text("0")
        busy.kill()
        busy.wait()
        wait_for(lambda: not (path / "cgroup.procs").read_text().strip(), 5)
        path.rmdir()


def cpu_over(pid: int, seconds: float) -> int:
    start = procs.cpu_ticks(pid) or 0
    time.sleep(seconds)
    return (procs.cpu_ticks(pid) or 0) - start


def frozen(cgroup: str) -> bool:
    events = (CGROUP_ROOT / cgroup.lstrip("/") / "cgroup.events").read_text()
    return "frozen 1" in events.splitlines()


def test_freeze_and_thaw_through_cgroup_freeze(busy_cgroup: tuple[str, int],
                                               state_dir: Path) -> None:
    cgroup, pid = busy_cgroup
    engine = Engine(Config(state_dir=state_dir))
    assert cpu_over(pid, 0.5) > 10
    record = engine.inject(FreezeSpec(cgroup=cgroup), 60)
    assert frozen(cgroup) and cpu_over(pid, 1.0) == 0
    status = engine.status(record.id)[1]
    assert status["frozen"] is True
    engine.rollback(record.id)
    assert not frozen(cgroup) and cpu_over(pid, 0.5) > 10


@pytest.fixture
def victims() -> Iterator[list[int]]:
    with sleepers(3) as pids:
        yield pids


def test_stop_and_continue(victims: list[int], state_dir: Path) -> None:
    engine = Engine(Config(state_dir=state_dir))
    wait_for(lambda: all(procs.state_letter(p) == "S" for p in victims), 10)
    record = engine.inject(StopSpec(pids=tuple(victims)), 60)
    wait_for(lambda: all(procs.state_letter(p) == "T" for p in victims), 5)
    engine.rollback(record.id)
    wait_for(lambda: all(procs.state_letter(p) == "S" for p in victims), 5)


def test_kill_records_what_it_killed(victims: list[int], state_dir: Path) -> None:
    engine = Engine(Config(state_dir=state_dir))
    wait_for(lambda: all(procs.state_letter(p) == "S" for p in victims), 10)  # TCG is slow
    record = engine.inject(KillSpec(pids=(victims[0],), signal="TERM"), 60)
    wait_for(lambda: procs.state_letter(victims[0]) in (None, "Z"), 5)
    states = [procs.state_letter(p) for p in victims[1:]]
    assert states == ["S", "S"], states  # only the chosen one was signalled
    (kill,) = [n for n in engine.journal.load(record.id).undo if n["step"] == "kill"]
    assert kill["pid"] == victims[0] and kill["signal"] == signal.SIGTERM
    engine.rollback(record.id)
    ended = engine.journal.load(record.id)  # a kill is not undone: the record keeps it
    assert ended.state == "rolled-back" and [n for n in ended.undo if n["step"] == "kill"]
    assert procs.state_letter(victims[0]) in (None, "Z")
