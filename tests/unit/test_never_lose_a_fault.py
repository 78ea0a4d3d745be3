"""Issue 8, engine and journal: a fault is never left on the host with nobody to remove it.

Each test breaks the journal or the engine the way the world does (a write
past RLIMIT_FSIZE, a full state directory, a record from another version, a
held lock, a dead process mid-rollback, a planted symlink) and checks that the
fake host (a JSON file the fake kind applies to) ends clean, or that the
failure is reported instead of hidden.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hostchaos.config import Config
from hostchaos.engine import Engine
from hostchaos.errors import JournalError, RollbackError
from hostchaos.journal import (
    ACTIVE,
    ROLLING_BACK,
    FaultRecord,
    Journal,
    LockBusy,
    RecordUnreadable,
)
from hostchaos.records import boottime
from hostchaos.system.procs import ProcessRef, boot_id
from tests.support.cli import hostchaos
from tests.support.fakes import FakeSpec, factory, fault_class

REPO = Path(__file__).resolve().parents[2]


class FlakyJournal(Journal):
    """A journal whose disk can be made full: every write then fails with ENOSPC."""

    full = False

    @staticmethod
    def _replace(path: Path, data: bytes, durable: bool) -> None:
        if FlakyJournal.full:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        Journal._replace(path, data, durable)


@pytest.fixture
def idle() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        proc.kill()
        proc.wait()


class _Idle:
    """A stand-in warden: one idle process (kept in the test's list), enforcing nothing."""

    def __init__(self, idle: list[subprocess.Popen[bytes]]) -> None:
        self.idle = idle

    def prestart(self, kind: str | None = None) -> None:
        pass

    def ensure(self) -> ProcessRef:
        if not self.idle or self.idle[-1].poll() is not None:
            self.idle.append(subprocess.Popen(["sleep", "600"]))
        return ProcessRef.of(self.idle[-1].pid)


def make_engine(state_dir: Path, idle: list[subprocess.Popen[bytes]],
                journal: Journal | None = None, **config: float) -> Engine:
    return Engine(Config(state_dir=state_dir, **config), journal=journal, fault_factory=factory,
                  fault_class=fault_class, warden=_Idle(idle))


def items(host: Path) -> dict[str, bool]:
    return json.loads(host.read_text()) if host.exists() else {}


# -- point 2: writes are complete or fail; a damaged record is read from its copy ----------


WRITE_PAST_LIMIT = r"""
import resource, sys
from pathlib import Path
from hostchaos.errors import JournalError
from hostchaos.journal import Journal
from tests.unit.test_never_lose_a_fault import record_for

journal = Journal(Path(sys.argv[1]))
record = record_for(sys.argv[2])
journal.save(record)                       # fits
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[3]), int(sys.argv[3])))
record.undo.append({"step": "item", "key": "x" * 4000})
try:
    journal.save(record)                   # crosses the limit part way through
except JournalError as exc:
    print("refused:", exc)
"""


def record_for(host: str, fault_id: str = "hc-fake-0000f5ze", **kw: object) -> FaultRecord:
    now = time.time()
    base: dict[str, object] = dict(
        id=fault_id, kind="fake", spec={"host_file": host}, boot_id=boot_id(),
        created_at=now, expires_at=now + 60, survives_reboot=False,
        undo=[{"step": "item", "key": "t1-0", "host_file": host}])
    base.update(kw)
    record = FaultRecord(**base)  # type: ignore[arg-type]
    record.transition(ACTIVE)
    return record


def test_a_write_past_rlimit_fsize_fails_whole_and_the_record_stays_good(
        state_dir: Path, tmp_path: Path) -> None:
    Journal(state_dir).prepare()
    host = str(tmp_path / "host.json")
    out = subprocess.run([sys.executable, "-c", WRITE_PAST_LIMIT, str(state_dir), host, "1500"],
                         cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert "refused: cannot write fault record" in out.stdout
    assert "File too large" in out.stdout
    stored = Journal(state_dir).load("hc-fake-0000f5ze")
    assert not stored.salvaged and stored.undo[-1]["key"] == "t1-0"  # the last good version
    assert Journal(state_dir).stale_temp_files() == []  # the torn temp file was removed


def test_a_damaged_record_is_read_from_its_copy_and_swept(state_dir: Path, tmp_path: Path,
                                                          idle: list[subprocess.Popen[bytes]]
                                                          ) -> None:
    host = tmp_path / "host.json"
    engine = make_engine(state_dir, idle)
    record = engine.inject(FakeSpec(host_file=str(host)), duration=600)
    path = engine.journal.path_of(record.id)
    path.write_bytes(path.read_bytes()[:200])  # torn in place from outside
    listed, unreadable = engine.listing()
    assert unreadable == [] and [r.salvaged for r in listed] == [True]
    report = engine.sweep()
    assert report.rolled_back == [{"id": record.id,
                                   "reason": "its record was damaged (read from its copy)"}]
    assert items(host) == {}
    assert engine.journal.load(record.id).state == "rolled-back"


def test_a_record_and_its_copy_both_damaged_is_shown_and_fails_the_sweep(
        state_dir: Path, tmp_path: Path, idle: list[subprocess.Popen[bytes]]) -> None:
    host = tmp_path / "host.json"
    engine = make_engine(state_dir, idle)
    record = engine.inject(FakeSpec(host_file=str(host)))
    for path in (engine.journal.path_of(record.id),
                 engine.journal.copy_of(engine.journal.path_of(record.id))):
        path.write_bytes(b'{"id": "hc-fa')
    with pytest.raises(RecordUnreadable):
        engine.journal.find(record.id)
    report = engine.sweep()
    assert [f["id"] for f in report.failed] == [record.id] and report.rolled_back == []
    result = hostchaos("sweep", state_dir=state_dir)
    assert result.returncode == 7 and "unreadable" in result.stderr + result.stdout
    listing = hostchaos("list", state_dir=state_dir)
    assert listing.returncode == 0 and "UNREADABLE" in listing.stdout
    data = json.loads(hostchaos("list", "--json", state_dir=state_dir).stdout)
    assert [(d["id"], d["state"]) for d in data] == [(record.id, "unreadable")]
    assert items(host)  # nothing could be rolled back: the fault is reported, not hidden


# -- point 3: a journal that cannot be written never stops a rollback ------------------------


def test_a_full_state_directory_still_gets_the_host_rolled_back(
        state_dir: Path, tmp_path: Path, idle: list[subprocess.Popen[bytes]]) -> None:
    host = tmp_path / "host.json"
    journal = FlakyJournal(state_dir)
    engine = make_engine(state_dir, idle, journal=journal)
    record = engine.inject(FakeSpec(host_file=str(host)))
    FlakyJournal.full = True
    try:
        with pytest.raises(JournalError, match="rolled back on the host"):
            engine.rollback(record.id)
        assert items(host) == {}  # the host first
        assert journal.load(record.id).is_open  # the record could not say so yet
    finally:
        FlakyJournal.full = False
    assert engine.rollback(record.id).state == "rolled-back"  # once the disk has room again
    assert journal.load(record.id).state == "rolled-back" and items(host) == {}


def test_a_full_state_directory_during_apply_leaves_nothing(
        state_dir: Path, tmp_path: Path, idle: list[subprocess.Popen[bytes]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The disk fills between two notes: the change that note protected is never made."""
    host = tmp_path / "host.json"
    journal = FlakyJournal(state_dir)
    engine = make_engine(state_dir, idle, journal=journal)
    saves = {"n": 0}
    real = FlakyJournal._replace

    def fill_after_three(path: Path, data: bytes, durable: bool) -> None:
        saves["n"] += 1
        if saves["n"] > 6:  # record + copy, then two notes
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(path, data, durable)

    monkeypatch.setattr(FlakyJournal, "_replace", staticmethod(fill_after_three))
    with pytest.raises(JournalError):
        engine.inject(FakeSpec(host_file=str(host), steps=5))
    assert items(host) == {}


# -- point 4: one record this version cannot parse blocks nothing -------------------------


def test_a_record_with_an_unknown_option_is_rolled_back_from_its_notes(
        state_dir: Path, tmp_path: Path, idle: list[subprocess.Popen[bytes]]) -> None:
    host, other_host = tmp_path / "host.json", tmp_path / "other.json"
    engine = make_engine(state_dir, idle)
    old = engine.inject(FakeSpec(host_file=str(host)), duration=5)
    stored = engine.journal.load(old.id)
    stored.spec["renamed_in_a_later_version"] = 3  # a spec this version no longer accepts
    engine.journal.save(stored)
    other = engine.inject(FakeSpec(host_file=str(other_host), target="t2"))  # inject still works
    assert {r.id for r in engine.listing()[0]} == {old.id, other.id}
    assert "problem" in engine.status(old.id)[1]  # status says why, does not crash
    engine.boottime = lambda: boottime() + 10  # the first one's deadline has passed
    report = engine.sweep()
    assert report.rolled_back == [{"id": old.id, "reason": "deadline reached"}]
    assert items(host) == {} and items(other_host)
    done, errors = engine.rollback_all()
    assert [r.id for r in done] == [other.id] and errors == [] and items(other_host) == {}


def test_a_record_of_an_unknown_kind_is_reported_and_the_rest_proceed(
        state_dir: Path, tmp_path: Path, idle: list[subprocess.Popen[bytes]]) -> None:
    host = tmp_path / "host.json"
    engine = make_engine(state_dir, idle)
    alien = record_for(str(host), "hc-teleport-00000001", kind="teleport")
    engine.journal.prepare()
    engine.journal.save(alien)
    ours = engine.inject(FakeSpec(host_file=str(host)))
    done, errors = engine.rollback_all()
    assert [r.id for r in done] == [ours.id]
    assert len(errors) == 1 and "unknown fault kind 'teleport'" in errors[0]
    assert engine.journal.load(alien.id).state == "rollback-failed"  # kept, retried by sweep


# -- point 5: the lock needs no write access (the timeout: test_never_lose_a_fault_cli.py) ---


def test_the_lock_needs_no_write_access(state_dir: Path) -> None:
    """flock works on a read-only descriptor: a read-only state directory can still be locked."""
    journal = Journal(state_dir)
    journal.prepare()
    fd = os.open(state_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(LockBusy):
            with journal.locked(timeout=0.1):
                pass
    finally:
        os.close(fd)


# -- point 6: a rollback whose actor died is not "still active" ----------------------------


def test_a_stale_rolling_back_record_whose_actor_died_is_rolled_back(
        state_dir: Path, tmp_path: Path, idle: list[subprocess.Popen[bytes]]) -> None:
    host = tmp_path / "host.json"
    host.write_text(json.dumps({"t1-0": True}))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    record = record_for(str(host), holder=ProcessRef.current(),
                        actor=ProcessRef(dead.pid, 1))
    record.transition(ROLLING_BACK, "requested")
    engine = make_engine(state_dir, idle)
    engine.journal.prepare()
    engine.journal.save(record)
    report = engine.sweep()
    assert report.rolled_back == [{"id": record.id, "reason": "the process rolling it back died"}]
    assert items(host) == {}


# -- point 10: the state directory is private, nothing in it is followed ------------------


def test_a_state_directory_others_can_write_is_refused(state_dir: Path) -> None:
    state_dir.chmod(0o777)
    with pytest.raises(JournalError, match=r"writable by other users .* chmod 700"):
        Journal(state_dir).prepare()


def test_directories_are_created_private(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "new" / "state")
    journal.prepare()
    for directory in (journal.state_dir, journal.faults_dir, journal.ended_dir):
        assert directory.stat().st_mode & 0o777 == 0o700


def test_a_symlinked_faults_directory_is_refused(state_dir: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (state_dir / "faults").symlink_to(elsewhere)
    with pytest.raises(JournalError, match="is a symlink"):
        Journal(state_dir).prepare()
    assert list(elsewhere.iterdir()) == []


def test_planted_symlinks_are_never_followed(state_dir: Path, tmp_path: Path) -> None:
    journal = Journal(state_dir)
    journal.prepare()
    victim = tmp_path / "precious"
    victim.write_text("keep me")
    record = record_for(str(tmp_path / "host.json"))
    # a record path planted as a symlink: reading it does not follow, saving replaces the link
    journal.path_of(record.id).symlink_to(victim)
    journal.copy_of(journal.path_of(record.id)).symlink_to(victim)
    with pytest.raises(RecordUnreadable):
        journal.load(record.id)
    journal.save(record)
    assert victim.read_text() == "keep me"
    assert not journal.path_of(record.id).is_symlink() and journal.load(record.id).id == record.id
    # a planted lock symlink
    (state_dir / "lock").symlink_to(victim)
    with pytest.raises(JournalError, match="symlink"):
        with journal.locked(timeout=1):
            pass
    assert victim.read_text() == "keep me"


def test_a_rollback_failure_is_reported_with_how_to_retry(
        state_dir: Path, tmp_path: Path, idle: list[subprocess.Popen[bytes]]) -> None:
    host = tmp_path / "host.json"
    engine = make_engine(state_dir, idle)
    record = engine.inject(FakeSpec(host_file=str(host), fail_rollback=True))
    with pytest.raises(RollbackError, match=f"hostchaos rollback {record.id}"):
        engine.rollback(record.id)
    assert engine.journal.load(record.id).state == "rollback-failed"


KILLED_BETWEEN_EXCHANGE_AND_UNLINK = """
import os, sys, time
from pathlib import Path
from hostchaos.journal import Journal
from hostchaos.system import renames
from tests.unit.test_never_lose_a_fault import record_for

journal = Journal(Path(sys.argv[1]))
record = record_for(sys.argv[2])
journal.save(record)                        # the record and its copy exist
record.undo.append({"step": "item", "key": "t1-1", "host_file": sys.argv[2]})

def parked(path):                           # right after the exchange, before the unlink
    print("exchanged", flush=True)
    time.sleep(3600)

renames.os.unlink = parked
journal.save(record, with_copy=False)
"""


def test_kill_9_between_the_exchange_and_the_unlink_leaves_the_new_record(
        state_dir: Path, tmp_path: Path, idle: list[subprocess.Popen[bytes]]) -> None:
    """The new record is in place; the old one, left under the temporary name of a writer
    that is gone, is a stale temporary file that sweep removes."""
    Journal(state_dir).prepare()
    host = str(tmp_path / "host.json")
    child = subprocess.Popen([sys.executable, "-c", KILLED_BETWEEN_EXCHANGE_AND_UNLINK,
                              str(state_dir), host], cwd=REPO, stdout=subprocess.PIPE,
                             text=True)
    try:
        assert child.stdout is not None and child.stdout.readline() == "exchanged\n"
    finally:
        child.kill()
        child.wait()
    journal = Journal(state_dir)
    stored = journal.load("hc-fake-0000f5ze")
    assert not stored.salvaged and stored.undo[-1]["key"] == "t1-1"  # the new version
    (left,) = journal.stale_temp_files()
    assert json.loads(left.read_text())["undo"][-1]["key"] == "t1-0"  # the old one
    report = make_engine(state_dir, idle).sweep()
    assert report.failed == []
    assert journal.stale_temp_files() == [] and not left.exists()
