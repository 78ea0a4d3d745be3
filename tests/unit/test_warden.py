"""The warden in-process (as the agent hosts it), against the fake fault kind.

It must end every fault on time from one timer heap, notice new, renewed and
closed faults through inotify, hold its lock alone, exit only when no fault is
open, adopt the faults of a dead warden, and keep going when the journal
cannot be written or read.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hostchaos.config import Config
from hostchaos.engine import Engine
from hostchaos.errors import ConflictError
from hostchaos.journal import Journal
from hostchaos.records import boottime
from hostchaos.system.procs import ProcessRef
from hostchaos.warden import Warden, WardenLock, holder
from tests.support.fakes import FakeSpec, factory, fault_class


class HostedHere:
    """The warden runs in this process (as in the agent): it is the holder."""

    def prestart(self, kind: str | None = None) -> None:
        pass

    def ensure(self) -> ProcessRef:
        return ProcessRef.current()


class FullJournal(Journal):
    """A journal whose disk can be made full: every write then fails with ENOSPC."""

    full = False

    @staticmethod
    def _replace(path: Path, data: bytes, durable: bool) -> None:
        if FullJournal.full:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        Journal._replace(path, data, durable)


def make_engine(state_dir: Path, journal: Journal | None = None) -> Engine:
    return Engine(Config(state_dir=state_dir), journal=journal, fault_factory=factory,
                  fault_class=fault_class, warden=HostedHere())


@pytest.fixture
def running(state_dir: Path) -> Iterator[tuple[Engine, Warden]]:
    engine = make_engine(state_dir)
    engine.journal.prepare()
    warden = Warden(make_engine(state_dir), rescan_seconds=30)  # inotify must do the work
    stop = threading.Event()
    thread = threading.Thread(target=warden.run, args=(stop,), daemon=True)
    thread.start()
    wait(lambda: warden.lock.held, 5)
    try:
        yield engine, warden
    finally:
        stop.set()
        thread.join(10)
        assert not thread.is_alive()


def wait(predicate: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def items(host: Path) -> dict[str, bool]:
    """The fake host, read while the warden may be writing it (not atomically): retried."""
    for _ in range(100):
        try:
            return json.loads(host.read_text()) if host.exists() else {}
        except json.JSONDecodeError:
            time.sleep(0.005)
    raise AssertionError(f"{host} stays unreadable")


def test_every_fault_ends_at_its_deadline(running: tuple[Engine, Warden],
                                          tmp_path: Path) -> None:
    engine, warden = running
    host = tmp_path / "host.json"
    made = [engine.inject(FakeSpec(host_file=str(host), target=f"t{i}"), duration=0.3 + i * 0.2)
            for i in range(5)]
    wait(lambda: all(not engine.journal.load(r.id).is_open for r in made), 10)
    assert items(host) == {}
    for record in made:
        ended = engine.journal.load(record.id)
        assert ended.end_reason == "deadline reached"
        late = ended.ended_at - ended.expires_at  # type: ignore[operator]
        assert -0.01 <= late < 0.5, (record.id, late)
    wait(lambda: warden.open_ids == [], 2)


def test_a_renewed_lease_moves_the_timer_and_a_lapsed_one_ends_it(
        running: tuple[Engine, Warden], tmp_path: Path) -> None:
    engine, _ = running
    host = tmp_path / "host.json"
    record = engine.inject(FakeSpec(host_file=str(host)), duration=30, lease=1.0)
    for _ in range(8):  # renewed for 1.6 s: still there
        time.sleep(0.2)
        engine.extend(record.id)
    assert engine.journal.load(record.id).is_open
    wait(lambda: not engine.journal.load(record.id).is_open, 5)
    assert engine.journal.load(record.id).end_reason == "lease expired without renewal"
    assert items(host) == {}


def test_a_fault_rolled_back_by_hand_is_forgotten(running: tuple[Engine, Warden],
                                                  tmp_path: Path) -> None:
    engine, warden = running
    record = engine.inject(FakeSpec(host_file=str(tmp_path / "host.json")), duration=30)
    wait(lambda: warden.open_ids == [record.id], 5)
    engine.rollback(record.id)
    wait(lambda: warden.open_ids == [], 5)


def test_one_warden_per_state_directory(running: tuple[Engine, Warden],
                                        state_dir: Path) -> None:
    _, warden = running
    assert holder(state_dir) == ProcessRef.current()
    second = Warden(make_engine(state_dir))
    with pytest.raises(ConflictError, match="another warden holds"):
        second.run(threading.Event())
    assert warden.lock.held


def test_an_idle_warden_exits_and_lets_go_of_its_lock(state_dir: Path) -> None:
    engine = make_engine(state_dir)
    engine.journal.prepare()
    warden = Warden(engine, exit_when_idle=True, idle_seconds=0.2)
    started = time.monotonic()
    warden.run()
    assert time.monotonic() - started < 5
    assert holder(state_dir) is None
    assert WardenLock(state_dir).acquire()


def test_an_idle_warden_leaves_a_removed_state_directory_removed(state_dir: Path) -> None:
    engine = make_engine(state_dir)
    engine.journal.prepare()
    warden = Warden(engine, exit_when_idle=True, idle_seconds=0.3)
    thread = threading.Thread(target=warden.run, daemon=True)
    thread.start()
    wait(lambda: warden.lock.held, 5)
    shutil.rmtree(state_dir)  # an operator or a test's cleanup, while the warden idles
    thread.join(10)
    assert not thread.is_alive()
    assert not state_dir.exists()


def test_an_idle_warden_stays_while_a_fault_is_open(state_dir: Path, tmp_path: Path) -> None:
    engine = make_engine(state_dir)
    record = engine.inject(FakeSpec(host_file=str(tmp_path / "host.json")), duration=0.8)
    warden = Warden(engine, exit_when_idle=True, idle_seconds=0.1)
    warden.run()  # returns only once the fault has ended
    assert engine.journal.load(record.id).end_reason == "deadline reached"
    assert holder(state_dir) is None


def test_a_new_warden_adopts_and_rolls_back_the_overdue_at_once(state_dir: Path,
                                                                 tmp_path: Path) -> None:
    """What a killed warden left: one fault overdue, one not; the new warden takes both."""
    engine = make_engine(state_dir)
    host = tmp_path / "host.json"
    overdue = engine.inject(FakeSpec(host_file=str(host), target="a"), duration=30)
    later = engine.inject(FakeSpec(host_file=str(host), target="b"), duration=1.5)
    journal = engine.journal
    for record, holder_ref in ((overdue, ProcessRef(1, 1)), (later, ProcessRef(1, 1))):
        stored = journal.load(record.id)
        stored.holder = holder_ref  # a warden that is gone
        if record is overdue:
            stored.expires_boottime = boottime() - 5
        journal.save(stored)
    warden = Warden(make_engine(state_dir), exit_when_idle=True, idle_seconds=0.1)
    thread = threading.Thread(target=warden.run, daemon=True)
    started = time.monotonic()
    thread.start()
    wait(lambda: not journal.load(overdue.id).is_open, 2)
    assert time.monotonic() - started < 1
    wait(lambda: journal.load(later.id).holder == ProcessRef.current(), 2)  # adopted
    assert journal.load(later.id).is_open  # re-armed with its original deadline...
    thread.join(10)
    ended = journal.load(later.id)  # ...and ended at it
    assert ended.end_reason == "deadline reached"
    assert ended.ended_at - ended.expires_at < 0.5  # type: ignore[operator]
    assert items(host) == {}


def test_a_full_state_disk_does_not_stop_the_rollback(state_dir: Path, tmp_path: Path) -> None:
    journal = FullJournal(state_dir)
    engine = make_engine(state_dir, journal=journal)
    host = tmp_path / "host.json"
    record = engine.inject(FakeSpec(host_file=str(host)), duration=0.5)
    warden = Warden(make_engine(state_dir, journal=journal), exit_when_idle=True,
                    idle_seconds=0.1)
    thread = threading.Thread(target=warden.run, daemon=True)
    FullJournal.full = True
    try:
        thread.start()
        wait(lambda: items(host) == {}, 5)  # the host first...
        assert Journal(state_dir).load(record.id).is_open  # ...the record could not say so
    finally:
        FullJournal.full = False
    thread.join(30)  # it keeps retrying and closes the record once it can
    assert not thread.is_alive()
    assert Journal(state_dir).load(record.id).state == "rolled-back"


def test_a_destroyed_record_is_rolled_back_from_the_last_good_copy(
        running: tuple[Engine, Warden], tmp_path: Path) -> None:
    engine, warden = running
    host = tmp_path / "host.json"
    record = engine.inject(FakeSpec(host_file=str(host)), duration=0.8)
    wait(lambda: warden.open_ids == [record.id], 5)
    path = engine.journal.path_of(record.id)
    for damaged in (path, engine.journal.copy_of(path)):
        damaged.write_bytes(b'{"id": "hc-fake-')  # torn from outside
    wait(lambda: items(host) == {}, 5)
    # the host is clean a moment before the record says so: wait for the record too
    wait(lambda: not engine.journal.load(record.id).is_open, 5)
    assert engine.journal.load(record.id).end_reason == "deadline reached"


def test_a_kill_loop_steps_in_the_warden(running: tuple[Engine, Warden], tmp_path: Path) -> None:
    """Fault.work runs in the warden's heap; what it notes reaches the record."""
    engine, _ = running
    host = tmp_path / "host.json"
    record = engine.inject(FakeSpec(host_file=str(host), work_every=0.1), duration=1.0)
    wait(lambda: not engine.journal.load(record.id).is_open, 5)
    worked = [n for n in engine.journal.load(record.id).undo if n["step"] == "worked"]
    assert 4 <= len(worked) <= 11, len(worked)


def test_is_held_says_whether_a_warden_lock_is_taken_without_taking_it(state_dir: Path) -> None:
    """The cheap probe before starting a warden: no file, a file nobody holds, a held lock;
    probing never keeps the lock from the warden that takes it next."""
    from hostchaos.warden import is_held

    Journal(state_dir).prepare()
    assert not is_held(state_dir)  # no lock file yet
    lock = WardenLock(state_dir)
    assert lock.acquire()
    try:
        assert is_held(state_dir) and holder(state_dir) == ProcessRef.current()
    finally:
        lock.release()
    assert not is_held(state_dir)  # the file is there, nobody holds it
    again = WardenLock(state_dir)
    assert again.acquire(wait=0.0)  # the probe let go of its shared lock
    again.release()
