"""Journal crash cases: torn files, a missing rename, another boot, an unwritable directory."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from pathlib import Path

import pytest

from hostchaos.errors import JournalError, TargetNotFoundError
from hostchaos.journal import ACTIVE, FaultRecord, Journal, UndoLog
from hostchaos.system import procs
from hostchaos.system.procs import ProcessRef, boot_id


def make_record(fault_id: str = "hc-fake-00000001", **kw: object) -> FaultRecord:
    base: dict[str, object] = dict(id=fault_id, kind="fake", spec={"host_file": "/nonexistent"},
                                   boot_id=boot_id(), created_at=1000.0, expires_at=2000.0,
                                   survives_reboot=False)
    base.update(kw)
    return FaultRecord(**base)  # type: ignore[arg-type]


def test_save_load_round_trip(state_dir: Path) -> None:
    journal = Journal(state_dir)
    journal.prepare()
    record = make_record(holder=ProcessRef.current(), lease_seconds=5.0, lease_expires_at=1005.0)
    record.transition(ACTIVE, "test")
    journal.save(record)
    loaded = journal.load(record.id)
    assert loaded.to_dict() == record.to_dict()
    assert (state_dir / "faults" / f"{record.id}.json").stat().st_mode & 0o777 == 0o600


def test_note_is_on_disk_before_note_returns(state_dir: Path) -> None:
    journal = Journal(state_dir)
    journal.prepare()
    record = make_record()
    journal.save(record)
    UndoLog(record, journal).note("root", original={"kind": "noqueue"})
    on_disk = json.loads(journal.path_of(record.id).read_text())
    assert on_disk["undo"] == [{"step": "root", "original": {"kind": "noqueue"}}]


def test_torn_tmp_file_and_missing_rename_leave_last_good_record(state_dir: Path) -> None:
    journal = Journal(state_dir)
    journal.prepare()
    record = make_record()
    journal.save(record)
    # A writer that died after writing half its temp file and before the rename.
    tmp = state_dir / "faults" / f".{record.id}.json.tmp.999999999"
    tmp.write_text('{"id": "hc-fake-00000001", "sta')
    assert journal.load(record.id).state == record.state
    records, bad = journal.scan()
    assert [r.id for r in records] == [record.id] and bad == []
    assert journal.stale_temp_files() == [tmp]


def test_temp_file_of_a_killed_writer_not_yet_reaped_is_stale(state_dir: Path) -> None:
    """A SIGKILLed writer stays a zombie until its parent reaps it: it writes no more."""
    journal = Journal(state_dir)
    journal.prepare()
    child = os.fork()
    if child == 0:
        time.sleep(60)
        os._exit(0)
    try:
        tmp = state_dir / "faults" / f".hc-fake-00000001.json.copy.tmp.{child}.0badf00d"
        tmp.write_text('{"id": "hc-fake-00000001", "sta')
        assert journal.stale_temp_files() == []  # a live writer's file is its own
        os.kill(child, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while procs.state_letter(child) != "Z" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert procs.state_letter(child) == "Z"
        assert journal.stale_temp_files() == [tmp]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)


def test_torn_record_is_reported_not_fatal(state_dir: Path) -> None:
    journal = Journal(state_dir)
    journal.prepare()
    journal.save(make_record("hc-fake-00000001"))
    (state_dir / "faults" / "hc-fake-00000002.json").write_text('{"id": "hc-fa')
    records, bad = journal.scan()
    assert [r.id for r in records] == ["hc-fake-00000001"]
    assert len(bad) == 1 and bad[0].path.name == "hc-fake-00000002.json"
    assert bad[0].fault_id == "hc-fake-00000002"


def test_unknown_fault_id(state_dir: Path) -> None:
    with pytest.raises(TargetNotFoundError):
        Journal(state_dir).load("hc-latency-deadbeef")
    with pytest.raises(TargetNotFoundError):
        Journal(state_dir).load("../../etc/passwd")


def test_unwritable_state_dir(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    journal = Journal(blocker / "state")  # a directory cannot live under a file, even for root
    with pytest.raises(JournalError, match="not writable"):
        journal.prepare()
    with pytest.raises(JournalError):
        with journal.locked():
            pass


def test_durable_save_fsyncs_only_reboot_surviving_faults(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = Journal(state_dir)
    journal.prepare()
    calls: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(fd), real_fsync(fd)))
    journal.save(make_record("hc-fake-00000001"))
    assert calls == []
    journal.save(make_record("hc-fake-00000002", survives_reboot=True))
    assert len(calls) == 4  # the record and its directory, then its copy and the directory


def test_ended_records_move_aside_and_a_crash_mid_move_is_harmless(state_dir: Path) -> None:
    journal = Journal(state_dir)
    journal.prepare()
    record = make_record()
    journal.save(record)
    open_copy = journal.path_of(record.id)
    stale = open_copy.read_bytes()
    record.transition("rolled-back", "test")
    journal.save(record)
    assert not open_copy.exists() and journal.path_of(record.id, ended=True).exists()
    assert journal.scan()[0] == []  # inject and sweep read open records only
    assert [r.id for r in journal.scan(include_ended=True)[0]] == [record.id]
    # a writer killed between writing ended/ and unlinking the open copy
    open_copy.write_bytes(stale)
    assert journal.load(record.id).state == "rolled-back"
    assert journal.scan()[0] == []
