"""The warden ends the faults due together in one batch, and a batch breaks safely.

A batch holds the state lock once and reads the open faults once; each fault
in it is still saved ``rolling-back`` before its host changes. So one failing
rollback leaves the others to proceed (and stays visible, retried), and a
``kill -9`` of the warden mid-batch leaves every record closed, rolling-back
with a dead actor, or active with a dead holder: the next warden, or sweep,
ends the rest. The warden here is a real process (forked) or a thread, the
fault kind is the fake one whose "host" is a JSON file.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hostchaos import warden as warden_module
from hostchaos.config import Config
from hostchaos.engine import Engine
from hostchaos.journal import Journal
from hostchaos.records import ACTIVE, ROLLBACK_FAILED, ROLLING_BACK, boottime
from hostchaos.system.procs import ProcessRef
from hostchaos.warden import Warden
from tests.support.fakes import (
    REFUSE_ROLLBACK,
    FakeFault,
    FakeHost,
    FakeSpec,
    factory,
    fault_class,
)

GONE = ProcessRef(1, 1)  # a holder that is not this warden (PID 1 with another start time)


class CountingJournal(Journal):
    """A journal that counts how often the state lock was taken, and for what."""

    purposes: list[str]

    def locked(self, *, purpose: str = "", timeout: float = 30.0
               ) -> contextlib.AbstractContextManager[None]:
        self.purposes.append(purpose)
        return super().locked(purpose=purpose, timeout=timeout)


class Hosted:
    def prestart(self, kind: str | None = None) -> None:
        pass

    def ensure(self) -> ProcessRef:
        return ProcessRef.current()


def make_engine(state_dir: Path, journal: Journal | None = None,
                fault_factory: Any = factory) -> Engine:
    return Engine(Config(state_dir=state_dir), journal=journal, fault_factory=fault_factory,
                  fault_class=fault_class, warden=Hosted())


def overdue(engine: Engine, spec: FakeSpec, seconds_ago: float) -> str:
    """A fault whose warden is gone and whose deadline passed ``seconds_ago``."""
    record = engine.inject(spec, duration=600)
    stored = engine.journal.load(record.id)
    stored.holder = GONE
    stored.expires_boottime = boottime() - seconds_ago
    engine.journal.save(stored)
    return record.id


@contextlib.contextmanager
def warden_thread(engine: Engine) -> Iterator[Warden]:
    warden = Warden(engine, rescan_seconds=30)
    stop = threading.Event()
    thread = threading.Thread(target=warden.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield warden
    finally:
        stop.set()
        thread.join(10)
        assert not thread.is_alive()


def wait(predicate: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_faults_due_together_end_in_one_batch(state_dir: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    # a loaded machine may make 40 rollbacks take longer than a batch may hold the lock
    monkeypatch.setattr(warden_module, "MAX_BATCH_SECONDS", 60.0)
    engine = make_engine(state_dir)
    host = tmp_path / "host.json"
    ids = [overdue(engine, FakeSpec(host_file=str(host), target=f"t{i}"), 5 + i * 0.0001)
           for i in range(40)]
    journal = CountingJournal(state_dir)
    journal.purposes = []
    with warden_thread(make_engine(state_dir, journal)):
        wait(lambda: all(not engine.journal.load(i).is_open for i in ids), 20)
    assert FakeHost(host).read() == {}
    assert {engine.journal.load(i).end_reason for i in ids} == {"deadline reached"}
    batches = [p for p in journal.purposes if p.startswith("rollback of")]
    assert batches == ["rollback of 40 due faults"], journal.purposes  # one hold for all 40
    assert not [p for p in journal.purposes if p.startswith("rollback hc-")]


def test_one_failing_rollback_in_a_batch_does_not_stop_the_others(state_dir: Path,
                                                                   tmp_path: Path) -> None:
    engine = make_engine(state_dir)
    host, stubborn_host = tmp_path / "host.json", tmp_path / "stubborn.json"
    ids = [overdue(engine, FakeSpec(host_file=str(host), target=f"t{i}"), 5) for i in range(4)]
    stubborn = overdue(engine, FakeSpec(host_file=str(stubborn_host), target="s",
                                        fail_rollback=True), 5)
    ids += [overdue(engine, FakeSpec(host_file=str(host), target=f"u{i}"), 5)
            for i in range(4)]
    with warden_thread(make_engine(state_dir)):
        wait(lambda: all(not engine.journal.load(i).is_open for i in ids), 20)
        assert FakeHost(host).read() == {}
        wait(lambda: engine.journal.load(stubborn).state == ROLLBACK_FAILED, 10)
        open_ids = [r.id for r in engine.listing()[0]]
        assert open_ids == [stubborn]  # kept, visible, and its host still carries it
        assert FakeHost(stubborn_host).read().get("s-0") is True
        data = FakeHost(stubborn_host).read()  # the operator fixes the cause ...
        del data[REFUSE_ROLLBACK]
        FakeHost(stubborn_host).write(data)
        wait(lambda: not engine.journal.load(stubborn).is_open, 20)  # ... the warden retries
    assert FakeHost(stubborn_host).read() == {}


class StallingFault(FakeFault):
    """The fake fault, whose rollback of target ``stall`` parks the process (to be killed)."""

    def rollback(self, undo: Any) -> None:
        marker = Path(self.spec.host_file).with_suffix(".stalled")
        if self.spec.target == "stall":
            marker.write_text(str(os.getpid()))
            while True:
                time.sleep(3600)
        super().rollback(undo)


def stalling_factory(kind: str, spec: dict[str, Any]) -> Any:
    if kind == "fake":
        return StallingFault(FakeSpec.from_dict(spec))
    return factory(kind, spec)


@pytest.mark.parametrize("next_command", ["sweep", "a new warden"])
def test_kill_9_of_the_warden_mid_batch_leaves_the_rest_to_the_next_command(
        state_dir: Path, tmp_path: Path, next_command: str) -> None:
    engine = make_engine(state_dir)
    host = tmp_path / "host.json"
    # all overdue, in this order: three before the stall, five after it
    before = [overdue(engine, FakeSpec(host_file=str(host), target=f"a{i}"), 5.003 - i * 0.0001)
              for i in range(3)]
    stall = overdue(engine, FakeSpec(host_file=str(host), target="stall"), 5.002)
    after = [overdue(engine, FakeSpec(host_file=str(host), target=f"b{i}"), 5.001 - i * 0.0001)
             for i in range(5)]
    marker = host.with_suffix(".stalled")
    pid = os.fork()
    if pid == 0:  # the warden, a process of its own
        code = 0
        try:
            Warden(make_engine(state_dir, fault_factory=stalling_factory)).run()
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    try:
        wait(marker.exists, 20)
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    journal = engine.journal
    assert [journal.load(i).is_open for i in before] == [False] * 3
    stalled = journal.load(stall)
    assert stalled.state == ROLLING_BACK and stalled.actor is not None
    assert not stalled.actor.alive()
    assert {journal.load(i).state for i in after} == {ACTIVE}  # untouched
    assert set(FakeHost(host).read()) == {f"{t}-{s}" for t in ["stall"] + [f"b{i}"
                                                                           for i in range(5)]
                                          for s in range(3)}
    if next_command == "sweep":
        report = make_engine(state_dir).sweep()
        assert {item["id"] for item in report.rolled_back} == {stall, *after}
        assert not report.failed
    else:
        with warden_thread(make_engine(state_dir)):
            wait(lambda: all(not journal.load(i).is_open for i in [stall, *after]), 20)
    assert FakeHost(host).read() == {}
    assert engine.listing()[0] == []


def test_a_batch_that_held_the_lock_long_enough_stops_between_faults(state_dir: Path,
                                                                      tmp_path: Path) -> None:
    engine = make_engine(state_dir)
    host = tmp_path / "host.json"
    ids = [overdue(engine, FakeSpec(host_file=str(host), target=f"t{i}"), 5) for i in range(3)]
    results = engine.rollback_many([(i, "deadline reached", None) for i in ids], max_seconds=0)
    assert [fault_id for fault_id, _ in results] == ids[:1]  # one is always tried
    assert [engine.journal.load(i).is_open for i in ids] == [False, True, True]
    assert sorted(FakeHost(host).read()) == [f"t{i}-{s}" for i in (1, 2) for s in range(3)]
