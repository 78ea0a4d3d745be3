"""The journal: one JSON record per fault, replaced atomically, never torn.

Layout under the state directory (``$HOSTCHAOS_STATE_DIR``, default
``/var/lib/hostchaos``), all of it mode 0700/0600 and owned by the user
hostchaos runs as (root)::

    lock                      holder of the state lock (pid, purpose), for messages
    warden.lock, warden.log   held by the live warden (see :mod:`hostchaos.warden`), its log
    faults/<id>.json          one record per open fault
    faults/.<id>.json.copy    the same record again: the last good copy
    faults/ended/<id>.json    records of ended faults (kept a week for `list --all`)

Ended records live apart so that inject and sweep read only the open ones.

Writing a record: the whole text goes to a new temporary file (O_EXCL,
O_NOFOLLOW) with every byte written or an error raised (a short write is
retried, never renamed into place), which then takes the record's name: an
exchange of the two names (``renameat2(RENAME_EXCHANGE)``) and an unlink of
the old file when a record is there, a rename otherwise (see
:mod:`hostchaos.system.renames`: on ext4 a rename over a file costs 3x more).
A reader sees the old or the new record, never half of one. The copy is
written the same way right after, so a record damaged from outside (a disk
error, an editor, a stray ``>``) is read from its copy instead.

Durability follows the fault: a fault that dies with the kernel only needs
its record to outlive the *process* (the page cache does that); a fault that
survives a reboot has its files and directory fsynced before the change it
protects.

The state lock (flock(2) on the state directory, and on ``lock`` where it can
be opened) serialises changes to faults. It is taken with a timeout, so a
stopped or stuck command makes others fail with a clear message instead of
hanging, and it needs no write access: a full or read-only state directory
still lets a rollback take the lock.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
import time
from pathlib import Path
from typing import Any, NamedTuple

from hostchaos.errors import JournalError, TargetNotFoundError

# the record model, re-exported: the journal is where records live
from hostchaos.records import (
    ACTIVE as ACTIVE,
)
from hostchaos.records import (
    APPLYING as APPLYING,
)
from hostchaos.records import (
    ENDED_STATES as ENDED_STATES,
)
from hostchaos.records import (
    FAILED as FAILED,
)
from hostchaos.records import (
    FAULT_ID as FAULT_ID,
)
from hostchaos.records import (
    FORMAT_VERSION as FORMAT_VERSION,
)
from hostchaos.records import (
    OPEN_STATES as OPEN_STATES,
)
from hostchaos.records import (
    PENDING as PENDING,
)
from hostchaos.records import (
    ROLLBACK_FAILED as ROLLBACK_FAILED,
)
from hostchaos.records import (
    ROLLED_BACK as ROLLED_BACK,
)
from hostchaos.records import (
    ROLLING_BACK as ROLLING_BACK,
)
from hostchaos.records import (
    STATES as STATES,
)
from hostchaos.records import (
    FaultRecord as FaultRecord,
)
from hostchaos.statelock import LOCK_TIMEOUT, StateLock
from hostchaos.statelock import LockBusy as LockBusy
from hostchaos.system import procs, renames

_OPEN_FLAGS = os.O_NOFOLLOW | os.O_CLOEXEC


class RecordUnreadable(JournalError):
    """A record file exists but cannot be parsed, and its copy cannot either."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"fault record {path} is unreadable ({problem}) and has no good copy; "
                         "the host may still carry its fault: inspect the file, roll the fault "
                         "back by hand if needed, then remove the file")
        self.path = path
        self.problem = problem


class UnreadableRecord(NamedTuple):
    """A record file that could not be parsed, nor its copy (torn, truncated or foreign)."""

    path: Path
    problem: str

    @property
    def fault_id(self) -> str:
        """The fault the file was for, from its name."""
        return self.path.name.removesuffix(".json")


#: a record is plain data built by ``to_dict`` (no cycles to look for): compact JSON
_ENCODER = json.JSONEncoder(separators=(",", ":"), check_circular=False)


def write_all(fd: int, data: bytes) -> None:
    """Write every byte of ``data`` or raise OSError: a short write is continued.

    Python ignores SIGXFSZ, so a write past RLIMIT_FSIZE returns short and the
    next one fails with EFBIG: that error surfaces here instead of a torn file.
    """
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:
            raise OSError(errno.EIO, "write wrote nothing")
        view = view[written:]


class Journal:
    """The state directory: fault records plus the lock that serialises changes."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.faults_dir = state_dir / "faults"
        self.ended_dir = self.faults_dir / "ended"
        # the same as strings: a record is saved four times a fault, and pathlib's
        # joins cost more than the rest of the path work together
        self._faults, self._ended = str(self.faults_dir), str(self.ended_dir)
        self._proved: tuple[int, int] | None = None  # (st_dev, st_ino) written to by prepare

    # -- setup -------------------------------------------------------------
    def prepare(self) -> None:
        """Create the directories (0700), check nobody else can write them, prove a write works.

        Raises JournalError naming the directory and the fix: the state
        directory must be a real directory (not a symlink) owned by the user
        hostchaos runs as and writable by nobody else, or any local user could
        plant files that hostchaos would then act on.
        """
        try:
            if not self.state_dir.parent.exists():
                os.makedirs(self.state_dir.parent, mode=0o755, exist_ok=True)
            info = [self._private_dir(d) for d in (self.state_dir, self.faults_dir,
                                                    self.ended_dir)][1]
            if os.statvfs(self.faults_dir).f_flag & os.ST_RDONLY:
                raise OSError(errno.EROFS, os.strerror(errno.EROFS))
            # a write is proved once per directory: creating a file costs more than the
            # rest of prepare together on some disks, and the first note proves it again
            if self._proved != (info.st_dev, info.st_ino):
                probe = self.faults_dir / f".probe.{os.getpid()}.{os.urandom(4).hex()}"
                fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _OPEN_FLAGS, 0o600)
                os.close(fd)
                probe.unlink()
                self._proved = (info.st_dev, info.st_ino)
        except OSError as exc:
            raise JournalError(
                f"state directory {self.state_dir} is not writable ({exc.strerror}); "
                "refusing to inject without a journal (set HOSTCHAOS_STATE_DIR to fix)"
            ) from exc

    @staticmethod
    def _private_dir(directory: Path) -> os.stat_result:
        with contextlib.suppress(FileExistsError):
            os.mkdir(directory, 0o700)
        info = os.lstat(directory)
        if stat.S_ISLNK(info.st_mode):
            raise JournalError(f"state directory {directory} is a symlink; hostchaos keeps its "
                               "journal only in a real directory it owns")
        if not stat.S_ISDIR(info.st_mode):
            raise JournalError(f"state directory {directory} is not a directory")
        if info.st_uid != os.geteuid():
            raise JournalError(f"state directory {directory} is owned by uid {info.st_uid}, not "
                               f"by uid {os.geteuid()} that hostchaos runs as; fix: chown "
                               f"{os.geteuid()} {directory}")
        if info.st_mode & 0o022:
            raise JournalError(f"state directory {directory} is writable by other users (mode "
                               f"{stat.S_IMODE(info.st_mode):04o}); fix: chmod 700 {directory}")
        return info

    # -- the lock ------------------------------------------------------------
    def locked(self, *, purpose: str = "", timeout: float = LOCK_TIMEOUT
               ) -> contextlib.AbstractContextManager[None]:
        """Hold the state lock (see :mod:`hostchaos.statelock`)."""
        return StateLock(self.state_dir, self.prepare).locked(purpose=purpose, timeout=timeout)

    def lock_holder(self) -> str:
        return StateLock(self.state_dir, self.prepare).lock_holder()

    # -- records -----------------------------------------------------------
    def path_of(self, fault_id: str, *, ended: bool = False) -> Path:
        return (self.ended_dir if ended else self.faults_dir) / f"{fault_id}.json"

    def copy_of(self, path: Path) -> Path:
        return path.parent / f".{path.name}.copy"

    def save(self, record: FaultRecord, *, durable: bool | None = None,
             with_copy: bool = True) -> None:
        """Replace the record (and its copy) atomically; fsync when the fault outlives a reboot.

        A record that ends moves to ``ended/``: written there first, then the open
        copy is unlinked, so a crash in between leaves both and readers prefer the
        ended one. ``with_copy=False`` leaves the last good copy as it was (used
        when an apply ends and when a rollback starts: the copy's notes are the
        same, and a fault read from it is rolled back, again or early, which is
        idempotent and errs towards the host as it was).
        """
        if durable is None:
            durable = record.survives_reboot
        ended = not record.is_open
        name = f"{record.id}.json"
        current, copy = f"{self._faults}/{name}", f"{self._faults}/.{name}.copy"
        final = f"{self._ended}/{name}" if ended else current
        data = _ENCODER.encode(record.to_dict()).encode()
        try:
            self._replace(final, data, durable)
            if ended:
                for stale in (current, copy):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(stale)
            elif with_copy or not os.path.exists(copy):
                self._replace(copy, data, durable)
        except OSError as exc:
            raise JournalError(f"cannot write fault record {final}: {exc.strerror}") from exc

    @staticmethod
    def _replace(path: str | Path, data: bytes, durable: bool) -> None:
        directory, name = os.path.split(os.fspath(path))
        tmp = f"{directory}/.{name}.tmp.{os.getpid()}.{os.urandom(4).hex()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _OPEN_FLAGS, 0o600)
        try:
            write_all(fd, data)
            if durable:
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        os.close(fd)
        try:
            # a planted symlink is replaced, not followed
            renames.replace(tmp, f"{directory}/{name}")
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        if durable:
            dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)

    def load(self, fault_id: str) -> FaultRecord:
        """The record of ``fault_id``; TargetNotFoundError if none, RecordUnreadable if damaged."""
        if not FAULT_ID.fullmatch(fault_id):
            raise TargetNotFoundError(f"fault {fault_id[:80]!r} not found")
        record = self.find(fault_id)
        if record is None:
            raise TargetNotFoundError(
                f"fault {fault_id} not found in {self.faults_dir} (see `hostchaos list --all`)")
        return record

    def find(self, fault_id: str) -> FaultRecord | None:
        """The record of ``fault_id``, or None if there is none; RecordUnreadable if damaged.

        A damaged open record is read from its copy (the result says
        ``salvaged``); only when both are damaged is it unreadable.
        """
        if not FAULT_ID.fullmatch(fault_id):
            return None
        ended = self.path_of(fault_id, ended=True)
        # ended first; ended again last, in case the record moved while we looked
        for path in (ended, self.path_of(fault_id), ended):
            try:
                return self._read_or_copy(path)
            except FileNotFoundError:
                continue
        return None

    def _read_or_copy(self, path: Path) -> FaultRecord:
        try:
            return self._read(path)
        except FileNotFoundError:
            raise
        except (OSError, ValueError, KeyError, TypeError) as exc:
            problem = f"{type(exc).__name__}: {exc}"
        try:
            record = self._read(self.copy_of(path))
        except (OSError, ValueError, KeyError, TypeError):
            raise RecordUnreadable(path, problem) from None
        if record.id != path.name.removesuffix(".json"):
            raise RecordUnreadable(path, problem + "; its copy names another fault")
        record.salvaged = True
        return record

    @staticmethod
    def _read(path: Path) -> FaultRecord:
        fd = os.open(path, os.O_RDONLY | _OPEN_FLAGS)
        try:
            chunks = []
            while chunk := os.read(fd, 1 << 20):
                chunks.append(chunk)
        finally:
            os.close(fd)
        data = json.loads(b"".join(chunks))
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        return FaultRecord.from_dict(data)

    def scan(self, *, include_ended: bool = False
             ) -> tuple[list[FaultRecord], list[UnreadableRecord]]:
        """Open records (and ended ones if asked), oldest first, plus unreadable ones."""
        good: list[FaultRecord] = []
        bad: list[UnreadableRecord] = []
        paths = [self.faults_dir / name for name in self.open_names()]
        if include_ended:
            paths += [self.ended_dir / name for name in self.record_names(ended=True)]
        for path in paths:
            try:
                good.append(self._read_or_copy(path))
            except FileNotFoundError:
                continue
            except RecordUnreadable as exc:
                bad.append(UnreadableRecord(path, exc.problem))
        good.sort(key=lambda r: r.created_at)
        return good, bad

    def record_names(self, *, ended: bool = False) -> list[str]:
        """File names of the open (or ended) records, sorted; no file is read."""
        directory = self.ended_dir if ended else self.faults_dir
        try:
            names = os.listdir(directory)
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as exc:
            raise JournalError(f"cannot list {directory}: {exc.strerror}") from exc
        return sorted(n for n in names if n.endswith(".json") and not n.startswith("."))

    def open_names(self) -> list[str]:
        """File names of the open records, sorted; no file is read.

        A name also in ``ended/`` (a crash mid-move: the ended copy wins) is
        left out. Each open name is looked up there, rather than ``ended/``
        listed: it holds a week of history, the open directory a few faults.
        """
        ended = str(self.ended_dir)
        return [name for name in self.record_names()
                if not os.path.lexists(f"{ended}/{name}")]

    def has_open_records(self) -> bool:
        """Whether any open record file exists (one directory listing)."""
        return bool(self.open_names())

    def read_path(self, path: Path) -> FaultRecord:
        """The record in ``path`` (or its copy); FileNotFoundError, RecordUnreadable."""
        return self._read_or_copy(path)

    def ended_written_before(self, when: float) -> list[Path]:
        """Ended record files last modified before ``when`` (wall clock); no file is read."""
        found = []
        try:
            entries = os.scandir(self.ended_dir)
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as exc:
            raise JournalError(f"cannot list {self.ended_dir}: {exc.strerror}") from exc
        with entries:
            for entry in entries:
                name = entry.name
                if not name.endswith(".json") or name.startswith("."):
                    continue
                try:
                    if entry.stat(follow_symlinks=False).st_mtime < when:
                        found.append(name)
                except OSError:
                    continue
        return [self.ended_dir / name for name in sorted(found)]

    def stale_temp_files(self) -> list[Path]:
        """Temporary files left by a writer that died before its rename."""
        stale = []
        for directory in (self.faults_dir, self.ended_dir):
            try:
                names = os.listdir(directory)
            except OSError:
                continue
            for name in names:
                if not name.startswith(".") or (".tmp." not in name and ".probe." not in name):
                    continue
                tail = name.split(".tmp.", 1)[-1] if ".tmp." in name \
                    else name.split(".probe.", 1)[-1]
                pid = tail.split(".", 1)[0]
                # a zombie writer is dead too: its killer's parent may not have reaped it yet
                if not pid.isdigit() or not procs.exists(int(pid)):
                    stale.append(directory / name)
        return sorted(stale)

    def remove(self, fault_id: str) -> None:
        name = f"{fault_id}.json"
        for directory in (str(self.ended_dir), str(self.faults_dir)):
            for each in (f"{directory}/{name}", f"{directory}/.{name}.copy"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(each)


class UndoLog:
    """What a fault's ``apply`` writes down *before* each change it makes.

    ``note(step, **data)`` appends to the record and persists it before
    returning, so a crash right after the change still leaves the way back on
    disk; when the record cannot be written, ``note`` raises and the change is
    never made. ``rollback`` reads the notes with :meth:`steps`.
    """

    def __init__(self, record: FaultRecord, journal: Journal | None) -> None:
        self.record = record
        self.journal = journal

    def note(self, step: str, **data: Any) -> None:
        self.note_many([(step, data)])

    def note_many(self, notes: list[tuple[str, dict[str, Any]]]) -> None:
        """Several notes persisted by one write, before the changes they protect.

        For a batch of changes sent at once (one netlink datagram): the notes
        must let rollback undo whatever part of the batch the host applied.
        """
        before = len(self.record.undo)
        self.record.undo.extend({"step": step, **data} for step, data in notes)
        if self.journal is not None:
            try:
                self.journal.save(self.record)
            except BaseException:
                del self.record.undo[before:]  # not on disk, so not done: rollback must not act
                raise
        for count in range(before + 1, len(self.record.undo) + 1):
            _test_pause_point(count)

    def steps(self, step: str) -> list[dict[str, Any]]:
        return [entry for entry in self.record.undo if entry["step"] == step]

    def remark(self, text: str) -> None:
        """A line for the operator about this fault (see :meth:`FaultRecord.remark`)."""
        self.record.remark(text)


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
    _park(marker)


def crash_hook_in_rollback(stage: str) -> None:
    """Test-only crash hook: park a rollback at ``stage`` ("before": its record says
    rolling-back, the host is untouched; "after": the host is put back, the record is not
    closed yet) with ``HOSTCHAOS_TEST_PAUSE_IN_ROLLBACK=STAGE`` and
    ``HOSTCHAOS_TEST_PAUSE_FILE``, so a test can ``kill -9`` the process there."""
    marker = os.environ.get("HOSTCHAOS_TEST_PAUSE_FILE")
    if marker and os.environ.get("HOSTCHAOS_TEST_PAUSE_IN_ROLLBACK") == stage:
        _park(marker)


def _park(marker: str) -> None:
    Path(marker).write_text(str(os.getpid()))
    while True:
        time.sleep(3600)
