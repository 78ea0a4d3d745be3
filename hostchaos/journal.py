"""The journal: one JSON record per fault, replaced atomically.

Layout under the state directory (``$HOSTCHAOS_STATE_DIR``, default
``/var/lib/hostchaos``)::

    lock                      flock(2) held while a fault changes state
    faults/<id>.json          one record per open fault
    faults/ended/<id>.json    records of ended faults (kept a week for `list --all`)
    faults/quarantine/        unreadable records moved aside by sweep

Ended records live apart so that inject and sweep read only the open ones.

A record is written to a temporary file and renamed over the old one, so a
reader sees the old or the new record, never half of one. Durability follows
the fault: a fault that dies with the kernel only needs its record to outlive
the *process* (the page cache does that); a fault that survives a reboot has its
file and directory fsynced before the change it protects.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hostchaos.errors import JournalError, TargetNotFoundError
from hostchaos.system.procs import ProcessRef

FORMAT_VERSION = 1

PENDING = "pending"
APPLYING = "applying"
ACTIVE = "active"
ROLLING_BACK = "rolling-back"
ROLLED_BACK = "rolled-back"
ROLLBACK_FAILED = "rollback-failed"
FAILED = "failed"  # apply failed and its partial work was rolled back

OPEN_STATES = (PENDING, APPLYING, ACTIVE, ROLLING_BACK, ROLLBACK_FAILED)
ENDED_STATES = (ROLLED_BACK, FAILED)


@dataclass
class FaultRecord:
    """Everything needed to judge and roll back one fault, as stored on disk."""

    id: str
    kind: str
    spec: dict[str, Any]
    boot_id: str
    created_at: float
    expires_at: float
    survives_reboot: bool
    state: str = PENDING
    lease_seconds: float | None = None
    lease_expires_at: float | None = None
    undo: list[dict[str, Any]] = field(default_factory=list)
    guardian: ProcessRef | None = None
    applier: ProcessRef | None = None
    error: str | None = None
    ended_at: float | None = None
    end_reason: str | None = None
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def is_open(self) -> bool:
        return self.state in OPEN_STATES

    def transition(self, state: str, reason: str | None = None) -> None:
        self.state = state
        event: dict[str, Any] = {"at": round(time.time(), 3), "state": state}
        if reason:
            event["reason"] = reason
        self.events.append(event)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT_VERSION,
            "id": self.id,
            "kind": self.kind,
            "state": self.state,
            "spec": self.spec,
            "boot_id": self.boot_id,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "lease_seconds": self.lease_seconds,
            "lease_expires_at": self.lease_expires_at,
            "survives_reboot": self.survives_reboot,
            "undo": self.undo,
            "guardian": self.guardian.to_dict() if self.guardian else None,
            "applier": self.applier.to_dict() if self.applier else None,
            "error": self.error,
            "ended_at": self.ended_at,
            "end_reason": self.end_reason,
            "events": self.events,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FaultRecord:
        return cls(
            id=str(data["id"]),
            kind=str(data["kind"]),
            spec=dict(data["spec"]),
            boot_id=str(data["boot_id"]),
            created_at=float(data["created_at"]),
            expires_at=float(data["expires_at"]),
            survives_reboot=bool(data["survives_reboot"]),
            state=str(data["state"]),
            lease_seconds=_opt_float(data.get("lease_seconds")),
            lease_expires_at=_opt_float(data.get("lease_expires_at")),
            undo=list(data.get("undo") or []),
            guardian=ProcessRef.from_dict(data.get("guardian")),
            applier=ProcessRef.from_dict(data.get("applier")),
            error=data.get("error"),
            ended_at=_opt_float(data.get("ended_at")),
            end_reason=data.get("end_reason"),
            events=list(data.get("events") or []),
        )


def _opt_float(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]


@dataclass(frozen=True)
class UnreadableRecord:
    """A record file that could not be parsed (torn, truncated or foreign)."""

    path: Path
    problem: str


class Journal:
    """The state directory: fault records plus the lock that serialises changes."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.faults_dir = state_dir / "faults"
        self.ended_dir = self.faults_dir / "ended"

    # -- setup -------------------------------------------------------------
    def ensure_writable(self) -> None:
        """Create the directories and prove a record can be written, or raise JournalError."""
        try:
            self.ended_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            probe = self.faults_dir / f".probe.{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise JournalError(
                f"state directory {self.state_dir} is not writable ({exc.strerror}); "
                "refusing to inject without a journal (set HOSTCHAOS_STATE_DIR to fix)"
            ) from exc

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the journal lock: one state change at a time across all processes."""
        self.ensure_writable()
        try:
            fd = os.open(self.state_dir / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise JournalError(f"cannot open lock in {self.state_dir}: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    # -- records -----------------------------------------------------------
    def path_of(self, fault_id: str, *, ended: bool = False) -> Path:
        return (self.ended_dir if ended else self.faults_dir) / f"{fault_id}.json"

    def save(self, record: FaultRecord, *, durable: bool | None = None) -> None:
        """Atomically replace the record; fsync when the fault outlives a reboot.

        A record that ends moves to ``ended/``: written there first, then the open
        copy is unlinked, so a crash in between leaves both and readers prefer the
        ended one.
        """
        if durable is None:
            durable = record.survives_reboot
        ended = not record.is_open
        final = self.path_of(record.id, ended=ended)
        tmp = self.faults_dir / f".{record.id}.json.tmp.{os.getpid()}"
        data = json.dumps(record.to_dict(), separators=(",", ":"), sort_keys=True).encode()
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, data)
                if durable:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, final)
            if durable:
                dfd = os.open(final.parent, os.O_RDONLY | os.O_DIRECTORY)
                try:
                    os.fsync(dfd)
                finally:
                    os.close(dfd)
            if ended:
                with contextlib.suppress(FileNotFoundError):
                    self.path_of(record.id).unlink()
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise JournalError(f"cannot write fault record {final}: {exc.strerror}") from exc

    def load(self, fault_id: str) -> FaultRecord:
        if "/" in fault_id or not fault_id or fault_id.startswith("."):
            raise TargetNotFoundError(f"fault {fault_id!r} not found")
        ended = self.path_of(fault_id, ended=True)
        # ended first; ended again last, in case the record moved while we looked
        for path in (ended, self.path_of(fault_id), ended):
            try:
                return self._read(path)
            except FileNotFoundError:
                continue
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise JournalError(f"fault record {path} is unreadable: {exc}") from exc
        raise TargetNotFoundError(
            f"fault {fault_id} not found in {self.faults_dir} (see `hostchaos list --all`)")

    def find(self, fault_id: str) -> FaultRecord | None:
        try:
            return self.load(fault_id)
        except (TargetNotFoundError, JournalError):
            return None

    @staticmethod
    def _read(path: Path) -> FaultRecord:
        data = json.loads(path.read_bytes())
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        return FaultRecord.from_dict(data)

    def scan(self, *, include_ended: bool = False
             ) -> tuple[list[FaultRecord], list[UnreadableRecord]]:
        """Open records (and ended ones if asked), oldest first, plus unreadable ones."""
        good: list[FaultRecord] = []
        bad: list[UnreadableRecord] = []
        paths = sorted(self.faults_dir.glob("*.json")) if self.faults_dir.is_dir() else []
        ended = sorted(self.ended_dir.glob("*.json")) if self.ended_dir.is_dir() else []
        ended_names = {p.name for p in ended}
        paths = [p for p in paths if p.name not in ended_names]  # a crash mid-move
        for path in paths + (ended if include_ended else []):
            try:
                good.append(self._read(path))
            except FileNotFoundError:
                continue
            except (OSError, ValueError, KeyError, TypeError) as exc:
                bad.append(UnreadableRecord(path, f"{type(exc).__name__}: {exc}"))
        good.sort(key=lambda r: r.created_at)
        return good, bad

    def quarantine(self, bad: UnreadableRecord) -> Path:
        """Move an unreadable record aside so it is reported once, never parsed again."""
        target_dir = self.faults_dir / "quarantine"
        target_dir.mkdir(exist_ok=True, mode=0o700)
        target = target_dir / f"{bad.path.name}.{int(time.time())}"
        os.rename(bad.path, target)
        return target

    def stale_temp_files(self) -> list[Path]:
        """Temporary files left by a writer that died before its rename."""
        stale = []
        for path in self.faults_dir.glob(".*.json.tmp.*"):
            pid = path.name.rsplit(".", 1)[-1]
            if not pid.isdigit() or not Path(f"/proc/{pid}").exists():
                stale.append(path)
        return stale

    def remove(self, fault_id: str) -> None:
        for ended in (True, False):
            with contextlib.suppress(FileNotFoundError):
                self.path_of(fault_id, ended=ended).unlink()


class UndoLog:
    """What a fault's ``apply`` writes down *before* each change it makes.

    ``note(step, **data)`` appends to the record and persists it before
    returning, so a crash right after the change still leaves the way back on
    disk. ``rollback`` reads the notes with :meth:`get` and :meth:`steps`.
    """

    def __init__(self, record: FaultRecord, journal: Journal | None) -> None:
        self.record = record
        self.journal = journal

    def note(self, step: str, **data: Any) -> None:
        self.record.undo.append({"step": step, **data})
        if self.journal is not None:
            self.journal.save(self.record)
        _test_pause_point(len(self.record.undo))

    def update(self, step: str, **data: Any) -> None:
        """Change the data of the latest note of ``step`` (e.g. to mark it done)."""
        for entry in reversed(self.record.undo):
            if entry["step"] == step:
                entry.update(data)
                break
        else:
            self.record.undo.append({"step": step, **data})
        if self.journal is not None:
            self.journal.save(self.record)

    def get(self, step: str) -> dict[str, Any] | None:
        for entry in reversed(self.record.undo):
            if entry["step"] == step:
                found: dict[str, Any] = entry
                return found
        return None

    def steps(self, step: str) -> list[dict[str, Any]]:
        return [entry for entry in self.record.undo if entry["step"] == step]


def _test_pause_point(count: int) -> None:
    """Test-only crash hook: park the process after the N-th undo note.

    With ``HOSTCHAOS_TEST_PAUSE_AFTER_NOTE=N`` and ``HOSTCHAOS_TEST_PAUSE_FILE``
    set, the process writes the file after persisting note N and then sleeps, so
    a test can ``kill -9`` it exactly between a note and the change it protects.
    """
    wanted = os.environ.get("HOSTCHAOS_TEST_PAUSE_AFTER_NOTE")
    marker = os.environ.get("HOSTCHAOS_TEST_PAUSE_FILE")
    if not wanted or not marker or int(wanted) != count:
        return
    Path(marker).write_text(str(os.getpid()))
    while True:
        time.sleep(3600)
