"""The warden: one process per state directory that ends every fault on time.

It enforces each open fault's deadline and lease, rolls back a fault whose
injecting (or rolling-back) process died mid-way, retries failed rollbacks
with growing pauses, and steps the faults that work while active (a ``--rate``
disk fill, a ``kill --interval`` loop), all from one timer heap. Deadlines are
judged on CLOCK_BOOTTIME, which no clock fault, NTP step or ``date -s`` moves.

Faults due together end together: every deadline due now, or within
BATCH_WINDOW_SECONDS, is rolled back in one batch (``Engine.rollback_many``:
the state lock held once, the open faults read once), each record still saved
``rolling-back`` before its host changes, so a warden killed mid-batch leaves
the rest to the next warden or sweep, and one failing rollback is retried
alone while the others proceed.

One warden per state directory: it holds ``$STATE/warden.lock`` (flock) for
its whole life, so a held lock is a live warden. That lock is apart from the
journal's state lock, which it takes only per change, like every command.

It learns of new, renewed and closed faults from inotify on the faults
directory (re-reading only the records that changed), and rescans the whole
directory every few seconds as a safety net. It keeps the last good copy of
every open record and rolls back from that if the file becomes unreadable or
disappears. A full or read-only state directory does not stop it: the host is
put back first, the record closed when it can be.

Without the agent, ``Engine.inject`` starts it on demand (:class:`OnDemand`:
``python -m hostchaos.warden``, detached in its own session, logging to
``$STATE/warden.log``) and it exits when no fault is open. The agent runs
:class:`Warden` in a thread instead. If the warden is killed, the next
hostchaos command starts another, which adopts the open records (names itself
their holder), rolls back at once whatever is overdue and re-arms the rest with
their original deadlines; ``hostchaos sweep`` (the minute timer, the boot unit)
rolls back active faults whose warden is gone.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import heapq
import itertools
import os
import select
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from hostchaos.deadlines import next_due, why_end
from hostchaos.errors import ApplyError, ConflictError, HostchaosError
from hostchaos.records import ACTIVE, ROLLBACK_FAILED, FaultRecord, boottime
from hostchaos.system.procs import ProcessRef, boot_id

if TYPE_CHECKING:
    from hostchaos.engine import Engine
    from hostchaos.faults.base import Fault
    from hostchaos.system.inotify import Inotify

#: the full rescan of the faults directory, a safety net beside inotify
RESCAN_SECONDS = 3.0
#: how often a fault being applied or rolled back is checked for a dead actor
ACTOR_CHECK_SECONDS = 0.5
FIRST_RETRY_SECONDS = 0.5
MAX_RETRY_SECONDS = 60.0
#: faults due within this many seconds of the first due one end in the same batch
BATCH_WINDOW_SECONDS = 0.005
#: at most this many faults per hold of the state lock, and at most this long holding it
#: (other commands get the lock between batches)
MAX_BATCH = 200
MAX_BATCH_SECONDS = 0.5
#: an on-demand warden with no open fault lingers this long before exiting
IDLE_EXIT_SECONDS = 2.0
#: how long a starting warden, and a command starting one, wait for the other side
START_TIMEOUT = 60.0

#: what the agent sends a warden process (``python -m hostchaos.warden``) to take its faults
#: over: it finishes what it is doing, lets go of the lock and exits
HAND_OVER_SIGNAL = signal.SIGUSR1

LOCK_NAME = "warden.lock"
LOG_NAME = "warden.log"

_OPEN_FLAGS = os.O_NOFOLLOW | os.O_CLOEXEC


# -- the warden lock ----------------------------------------------------------------------

class WardenLock:
    """``$STATE/warden.lock``: held (flock) by the live warden of a state directory."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / LOCK_NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, wait: float = 1.0) -> bool:
        """Take the lock (retrying ``wait`` seconds: a probe may hold it a moment); True if held."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | _OPEN_FLAGS, 0o600)
            writable = True
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise ConflictError(f"{self.path} is a symlink; refusing to use it as the "
                                    "warden lock (remove it)") from exc
            try:  # a read-only or full state directory: an existing lock file still locks
                fd = os.open(self.path, os.O_RDONLY | _OPEN_FLAGS)
                writable = False
            except OSError:
                return False
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline or holder(self.path.parent) is not None:
                    os.close(fd)
                    return False
                time.sleep(0.02)
        if writable:
            me = ProcessRef.current()
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{me.pid} {me.start_ticks}\n".encode(), 0)
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def is_held(state_dir: Path) -> bool:
    """Does a warden hold ``state_dir``'s warden lock? (:func:`holder` without asking who.)"""
    try:
        fd = os.open(state_dir / LOCK_NAME, os.O_RDONLY | _OPEN_FLAGS)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # releases the shared lock, if it was taken
    return False


def holder(state_dir: Path) -> ProcessRef | None:
    """The live warden of ``state_dir`` (whoever holds its lock), or None if there is none."""
    path = state_dir / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY | _OPEN_FLAGS)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            pass  # held: a warden lives
        else:
            return None
        for _ in range(50):  # it writes its name right after taking the lock
            text = os.pread(fd, 100, 0).decode(errors="replace").split()
            if len(text) == 2 and all(part.isdigit() for part in text):
                ref = ProcessRef(int(text[0]), int(text[1]))
                if ref.alive():
                    return ref
            time.sleep(0.01)
        return ProcessRef(0, 0)  # held by a process that did not say who it is
    finally:
        os.close(fd)


# -- the warden ---------------------------------------------------------------------------

END, WORK = "end", "work"


@dataclass
class _Guarded:
    """What the warden knows of one open fault."""

    record: FaultRecord
    stamp: tuple[int, int, int] | None  # the record file's (inode, mtime_ns, size) when read
    generation: int = 0
    not_before: float = 0.0  # after a failed rollback: when to try again (boottime)
    retry: float = FIRST_RETRY_SECONDS
    worker: Fault | None = None
    work_generation: int = 0
    working: bool = False
    warned: bool = False


class Warden:
    """Ends every open fault of one state directory on time; one per directory.

    ``run(stop)`` is its loop: it takes the warden lock (ConflictError if
    another warden holds it), adopts the open records, rolls back whatever is
    overdue at once, then sleeps until the next deadline, lease, work step or
    journal change. It returns when ``stop`` is set, or, with
    ``exit_when_idle``, once no fault is open (decided under the state lock,
    so no fault is written meanwhile). ``wake()`` makes it look at the journal
    now (the agent calls it after each change; inotify does it otherwise).

    Example (in a service)::

        warden = Warden(Engine(Config.load()))
        threading.Thread(target=warden.run, args=(stop,), daemon=True).start()
    """

    def __init__(self, engine: Engine, *, exit_when_idle: bool = False,
                 lock: WardenLock | None = None, rescan_seconds: float = RESCAN_SECONDS,
                 idle_seconds: float = IDLE_EXIT_SECONDS) -> None:
        self.engine = engine
        self.journal = engine.journal
        self.exit_when_idle = exit_when_idle
        self.lock = lock or WardenLock(engine.journal.state_dir)
        self.rescan_seconds = rescan_seconds
        self.idle_seconds = idle_seconds
        self.me = ProcessRef.current()
        self.boot = boot_id()
        self._guarded: dict[str, _Guarded] = {}
        self._heap: list[tuple[float, int, str, str, int]] = []
        self._seq = itertools.count()
        self._wake_read, self._wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._unadopted: set[str] = set()
        self._warm: set[str] = set()
        self._inotify: Inotify | None = None

    # -- public --------------------------------------------------------------------------
    def wake(self) -> None:
        """Look at the journal now (safe from any thread)."""
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wake_write, b"!")

    def run(self, stop: threading.Event | None = None) -> None:
        """The loop; see the class docstring."""
        if not self.lock.held and not self.lock.acquire():
            raise ConflictError(f"another warden holds {self.lock.path} (pid "
                                f"{(holder(self.journal.state_dir) or ProcessRef(0, 0)).pid})")
        try:
            self._loop(stop)
        finally:
            if self._inotify is not None:
                self._inotify.close()
                self._inotify = None
            self.lock.release()

    @property
    def open_ids(self) -> list[str]:
        """The faults it guards now."""
        return sorted(self._guarded)

    # -- the loop ---------------------------------------------------------------------------
    def _loop(self, stop: threading.Event | None) -> None:
        self._watch()
        self._rescan()
        next_rescan = boottime() + self.rescan_seconds
        idle_since: float | None = None
        while stop is None or not stop.is_set():
            try:
                now = boottime()
                if now >= next_rescan:
                    self._watch()
                    self._rescan()
                    next_rescan = now + self.rescan_seconds
                self._run_due()
                if self._unadopted:
                    self._adopt()
                if self.exit_when_idle:
                    if self._guarded:
                        idle_since = None
                    elif idle_since is None:
                        idle_since = now
                    elif now - idle_since >= self.idle_seconds and self._exit_if_idle():
                        return
                until = next_rescan
                if self._heap:
                    until = min(until, self._heap[0][0])
                if idle_since is not None:
                    until = min(until, idle_since + self.idle_seconds)
                if stop is not None:
                    until = min(until, boottime() + 0.5)
                self._sleep(until - boottime())
            except Exception as exc:  # a bug must not leave every other fault unguarded
                log(f"internal error, going on: {type(exc).__name__}: {exc}")
                time.sleep(0.1)

    def _sleep(self, seconds: float) -> None:
        fds = [self._wake_read] + ([self._inotify.fd] if self._inotify else [])
        try:
            ready, _, _ = select.select(fds, [], [], max(seconds, 0.0))
        except InterruptedError:
            return
        if self._wake_read in ready:
            with contextlib.suppress(BlockingIOError):
                while os.read(self._wake_read, 4096):
                    pass
            self._rescan()
        if self._inotify is not None and self._inotify.fd in ready:
            names = self._inotify.read()
            if self._inotify.overflowed:
                self._inotify.close()
                self._inotify = None
                self._watch()
                self._rescan()
                return
            changed = [n for n in names if n.endswith(".json") and not n.startswith(".")]
            for name in changed:
                self._refresh(name.removesuffix(".json"))
            if changed:
                self._read_peers_ahead()

    def _read_peers_ahead(self) -> None:
        """Bring the engine's open records up to date now, while nothing is due.

        A rollback judges its fault against every open one; read only at the
        first deadline, a thousand records just extended took that deadline
        ~250 ms late (measured). Reading here, without the state lock, is
        safe: a record is replaced by a rename, and the rename's event makes
        the next read (under the lock) look at that name again.
        """
        with contextlib.suppress(Exception):
            self.engine.peers()

    def _watch(self) -> None:
        if self._inotify is not None:
            return
        from hostchaos.system.inotify import Inotify

        try:
            self._inotify = Inotify(self.journal.faults_dir)
        except OSError:
            self._inotify = None  # the rescan still sees every change, a little later

    # -- reading the journal ----------------------------------------------------------------
    def _rescan(self) -> None:
        """Re-read every record whose file changed since it was read; notice vanished ones."""
        try:
            names = os.listdir(self.journal.faults_dir)
        except OSError:
            names = []
        ids = {n.removesuffix(".json") for n in names
               if n.endswith(".json") and not n.startswith(".")}
        for fault_id in sorted(ids | set(self._guarded)):
            guarded = self._guarded.get(fault_id)
            if guarded is not None and guarded.stamp is not None \
                    and guarded.stamp == self._stamp(fault_id):
                continue
            self._refresh(fault_id)
        if self._guarded:
            self._read_peers_ahead()

    def _stamp(self, fault_id: str) -> tuple[int, int, int] | None:
        try:
            info = os.stat(self.journal.path_of(fault_id), follow_symlinks=False)
        except OSError:
            return None
        return (info.st_ino, info.st_mtime_ns, info.st_size)

    def _refresh(self, fault_id: str) -> None:
        from hostchaos.journal import RecordUnreadable

        guarded = self._guarded.get(fault_id)
        stamp = self._stamp(fault_id)
        try:
            record = self.journal.find(fault_id)
        except RecordUnreadable as exc:
            if guarded is not None and not guarded.warned:
                log(f"record of {fault_id} became unreadable ({exc.problem}); enforcing its "
                    "last good copy")
                guarded.warned = True
            return  # without a good copy there is nothing to act on: sweep reports it
        if record is None:
            if guarded is not None:  # deleted while open: the fault may still be on the host
                guarded.stamp = None
            return
        if not record.is_open or record.boot_id != self.boot:
            # closed, or from another boot (its boottime values mean nothing now): sweep,
            # which the boot unit runs, closes or rolls back those
            self._guarded.pop(fault_id, None)
            self._unadopted.discard(fault_id)
            return
        if guarded is None:
            self.warm_up(record.kind)
            guarded = self._guarded[fault_id] = _Guarded(record, stamp)
            left = next_due(record) - boottime()
            log(f"guarding {fault_id} ({record.state}, {max(left, 0):.1f} s left)")
            guarded.worker = self._worker(record)
        else:
            guarded.record, guarded.stamp = record, stamp
        if guarded.worker is not None and record.state == ACTIVE and not guarded.working:
            guarded.working = True  # its first step now; each step says when the next is due
            self._push(boottime(), fault_id, WORK, guarded.work_generation)
        if record.holder != self.me:
            self._unadopted.add(fault_id)
        self._schedule(fault_id)

    def warm_up(self, kind: str) -> None:
        """Import what rolling back ``kind`` needs now, not at its first deadline."""
        if kind in self._warm:
            return
        self._warm.add(kind)
        with contextlib.suppress(Exception):
            self.engine.fault_class(kind).warm_up()

    def _schedule(self, fault_id: str) -> None:
        guarded = self._guarded[fault_id]
        record = guarded.record
        guarded.generation += 1
        due = next_due(record)
        if record.state == ROLLBACK_FAILED:
            due = boottime()
        elif record.state != ACTIVE:  # applying or rolling back: watch its actor
            due = min(due, boottime() + ACTOR_CHECK_SECONDS)
        self._push(max(due, guarded.not_before), fault_id, END, guarded.generation)

    def _push(self, due: float, fault_id: str, what: str, generation: int) -> None:
        heapq.heappush(self._heap, (due, next(self._seq), fault_id, what, generation))

    def _adopt(self) -> None:
        """Name this warden the holder of records another (now dead) warden held."""
        ids, self._unadopted = sorted(self._unadopted), set()
        try:
            self.engine.adopt(ids, self.me)
        except Exception as exc:  # e.g. a read-only state dir: still enforced from here
            log(f"could not name myself the holder of {len(ids)} fault(s): {exc}")

    # -- acting -----------------------------------------------------------------------------
    def _run_due(self) -> None:
        """Step the due work, and end every fault due now (or within BATCH_WINDOW_SECONDS)
        in batches: one hold of the state lock and one read of the peers per batch."""
        now = boottime()
        horizon = now + BATCH_WINDOW_SECONDS
        later: list[tuple[float, int, str, str, int]] = []
        ending: dict[str, _Guarded] = {}
        while self._heap and self._heap[0][0] <= horizon:
            entry = heapq.heappop(self._heap)
            _due, _seq, fault_id, what, generation = entry
            guarded = self._guarded.get(fault_id)
            if guarded is None:
                continue
            if what == END and generation == guarded.generation:
                ending[fault_id] = guarded
            elif what == WORK and generation == guarded.work_generation:
                if entry[0] > now:
                    later.append(entry)  # work is never done early
                else:
                    self._work(fault_id, guarded)
        for entry in later:
            heapq.heappush(self._heap, entry)
        if ending:
            self._judge(ending, horizon)

    def _judge(self, ending: dict[str, _Guarded], horizon: float) -> None:
        """Roll back those of ``ending`` that must end by ``horizon``; re-arm the rest."""
        batch: list[tuple[str, str, FaultRecord | None]] = []
        for fault_id, guarded in ending.items():
            reason = why_end(guarded.record, horizon, judge_holder=False)
            if reason is None:
                self._schedule(fault_id)
            else:
                batch.append((fault_id, reason, guarded.record))
        count, failed, started = len(batch), 0, time.monotonic()
        while batch:
            try:
                results = self.engine.rollback_many(batch[:MAX_BATCH],
                                                    max_seconds=MAX_BATCH_SECONDS)
            except Exception as exc:  # the state lock is busy, the journal unusable ...
                results = [(fault_id, exc) for fault_id, _, _ in batch[:MAX_BATCH]]
            if not results:  # cannot happen (one item is always tried); never spin
                results = [(batch[0][0], RuntimeError("nothing was rolled back"))]
            batch = batch[len(results):]
            for fault_id, outcome in results:
                failed += isinstance(outcome, Exception)
                self._ended(fault_id, outcome)
        if count > 1:
            log(f"one batch of {count} due faults: {count - failed} rolled back, {failed} "
                f"failed, {(time.monotonic() - started) * 1000:.1f} ms")

    def _ended(self, fault_id: str, outcome: FaultRecord | Exception) -> None:
        """Take in the outcome of one rollback: forget the fault, or retry it later."""
        guarded = self._guarded.get(fault_id)
        if guarded is None:
            return
        if isinstance(outcome, Exception):  # HostchaosError, or a bug in one kind: retried
            log(f"rollback of {fault_id} failed, retrying in {guarded.retry:g} s: {outcome}")
            guarded.not_before = boottime() + guarded.retry
            guarded.retry = min(guarded.retry * 2, MAX_RETRY_SECONDS)
            self._schedule(fault_id)
            return
        if outcome.is_open:  # e.g. rolled back by another process meanwhile: read again
            self._refresh(fault_id)
            return
        self._guarded.pop(fault_id, None)
        self._unadopted.discard(fault_id)

    def _worker(self, record: FaultRecord) -> Fault | None:
        """The fault, if it has work to do while active (see ``Fault.work``)."""
        from hostchaos.faults.base import Fault

        try:
            fault = self.engine.fault_factory(record.kind, record.spec)
        except HostchaosError:
            return None
        fault.state_dir = self.journal.state_dir
        return fault if type(fault).work is not Fault.work else None

    def _work(self, fault_id: str, guarded: _Guarded) -> None:
        """One step of the fault's work; its notes go to the record under the lock."""
        from hostchaos.journal import UndoLog

        record, worker = guarded.record, guarded.worker
        if worker is None or record.state != ACTIVE:
            return
        before = len(record.undo)
        try:
            delay = worker.work(UndoLog(record, None))
        except Exception as exc:  # the work is extra: the deadline is what must never stop
            log(f"work of {fault_id} stopped: {type(exc).__name__}: {exc}")
            guarded.worker = None
            return
        if len(record.undo) > before:
            try:
                self.engine.add_notes(fault_id, record.undo[before:])
            except Exception as exc:  # e.g. a full state disk: the work itself was done
                log(f"could not record the work of {fault_id}: {exc}")
        if delay is None:
            guarded.worker = None
        else:
            self._push(boottime() + delay, fault_id, WORK, guarded.work_generation)

    def _exit_if_idle(self) -> bool:
        """Under the state lock: no open record? Then let go of the warden lock (True).

        A state directory removed while the warden idled holds no record to
        guard: it lets go without taking the state lock, whose preparation
        would make the directory again.
        """
        if not self.journal.faults_dir.is_dir():
            self.lock.release()
            return True
        try:
            with self.journal.locked(purpose="warden exit", timeout=0.5):
                records, _ = self.journal.scan()
                mine = [r for r in records if r.is_open and r.boot_id == self.boot]
                if mine:
                    for record in mine:
                        self._refresh(record.id)
                    return False
                self.lock.release()  # before the state lock: inject then starts a new one
                return True
        except HostchaosError:
            return False


# -- on demand: the detached process ----------------------------------------------------------

class OnDemand:
    """Starts ``python -m hostchaos.warden`` for a state directory when none holds its lock.

    ``prestart(kind)`` (before the state lock) starts one early, which takes
    the lock and imports what rolling back ``kind`` needs before it answers;
    ``ensure()`` (under the state lock) returns the live warden, waiting for the
    one it started to answer: the fault is created only once its warden is
    ready, so a slow start never eats into its deadline or lease. ApplyError if
    none can start.
    """

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self._starting: _Starting | None = None

    def prestart(self, kind: str | None = None) -> None:
        if self._starting is None and not is_held(self.state_dir):
            with contextlib.suppress(ApplyError):
                self._starting = spawn(self.state_dir, warm=kind)

    def ensure(self) -> ProcessRef:
        found = holder(self.state_dir)
        if found is None:
            starting, self._starting = self._starting, None
            if starting is None or not starting.alive():
                starting = spawn(self.state_dir)
            starting.wait_ready(START_TIMEOUT)
            found = holder(self.state_dir)
        elif self._starting is not None:  # another warden got there first
            self._starting.close()
            self._starting = None
        if found is None or found.pid == 0:
            raise ApplyError(f"cannot start the warden that enforces the fault's deadline (see "
                             f"{self.state_dir / LOG_NAME}); nothing was injected")
        return found


@dataclass
class _Starting:
    """A warden being started: its pid and the pipe it answers on once it holds the lock."""

    pid: int
    ready_fd: int

    def alive(self) -> bool:
        from hostchaos.system.procs import state_letter

        return state_letter(self.pid) not in (None, "Z", "X")

    def wait_ready(self, timeout: float) -> bool:
        """Whether it answered that it holds the lock (and is warm) within ``timeout``."""
        try:
            ready, _, _ = select.select([self.ready_fd], [], [], timeout)
            return bool(ready) and os.read(self.ready_fd, 16) == b"ready"
        finally:
            self.close()

    def close(self) -> None:
        if self.ready_fd >= 0:
            os.close(self.ready_fd)
            self.ready_fd = -1


def warden_argv(state_dir: Path) -> list[str]:
    """How a warden for ``state_dir`` is started."""
    return [sys.executable, "-m", "hostchaos.warden", "--state-dir", str(state_dir)]


def spawn(state_dir: Path, warm: str | None = None) -> _Starting:
    """Start a warden for ``state_dir``, detached (double fork, new session, exec).

    ``warm``: a kind whose rollback it makes ready before it answers. ApplyError
    if the kernel will not let it start (fork refused).
    """
    argv = [*warden_argv(state_dir), "--ready-fd", "3", *(["--warm", warm] if warm else [])]
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    try:
        pid = start_detached(argv, write_end, state_dir, "the warden that enforces the "
                             "fault's deadline")
    except ApplyError:
        os.close(read_end)
        raise
    finally:
        os.close(write_end)
    return _Starting(pid, read_end)


def spawn_sentinel(state_dir: Path) -> tuple[int, int]:
    """Start the agent's sentinel (:mod:`hostchaos.sentinel`); (its pid, the pipe's write end).

    The caller keeps the write end open for its whole life and never lets a
    child inherit it: the sentinel starts a warden once the last writer is gone.
    """
    script = str(Path(__file__).with_name("sentinel.py"))
    argv = [sys.executable, "-I", "-S", script, *warden_argv(state_dir)]
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    try:
        pid = start_detached(argv, read_end, state_dir, "the agent's sentinel")
    except ApplyError:
        os.close(write_end)
        raise
    finally:
        os.close(read_end)
    return pid, write_end


def start_detached(argv: list[str], fd3: int, state_dir: Path, what: str) -> int:
    """Run ``argv`` detached (double fork, new session, exec) with ``fd3`` as descriptor 3,
    stdin and stdout on /dev/null and stderr appended to ``$STATE/warden.log``; its pid.

    ApplyError naming ``what`` if the kernel will not let it start (fork refused).
    """
    pid_read, pid_write = os.pipe2(os.O_CLOEXEC)
    try:
        first = os.fork()
    except OSError as exc:
        for fd in (pid_read, pid_write):
            os.close(fd)
        raise ApplyError(f"cannot start {what} (fork: {exc.strerror}); nothing was "
                         "injected") from exc
    if first == 0:
        code = 0
        try:
            os.setsid()
            second = os.fork()
            if second == 0:
                _become(argv, fd3, state_dir)
            os.write(pid_write, str(second).encode())
        except OSError:
            code = 1
        finally:
            os._exit(code)
    os.close(pid_write)
    os.waitpid(first, 0)
    with os.fdopen(pid_read, "rb") as pipe:
        pid = int(pipe.read().decode() or "0")
    if pid <= 0:
        raise ApplyError(f"cannot start {what} (fork failed); nothing was injected")
    return pid


def _become(argv: list[str], fd3: int, state_dir: Path) -> None:
    try:
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)
        os.dup2(devnull, 1)
        try:
            logfd = os.open(state_dir / LOG_NAME,
                            os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
            os.dup2(logfd, 2)
        except OSError:
            os.dup2(devnull, 2)
        os.dup2(fd3, 3)  # the only descriptor it keeps beyond 0-2
        os.set_inheritable(3, True)
        os.closerange(4, 65536)
        os.chdir("/")
        os.execv(argv[0], argv)
    finally:
        os._exit(127)


def log(message: str) -> None:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
    print(f"{stamp} warden[{os.getpid()}] {message}", file=sys.stderr, flush=True)


def main(argv: list[str]) -> int:
    """``python -m hostchaos.warden --state-dir DIR [--ready-fd N]``: the on-demand warden."""
    import argparse
    import dataclasses

    from hostchaos.config import Config
    from hostchaos.engine import Engine

    parser = argparse.ArgumentParser(prog="python -m hostchaos.warden")
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--ready-fd", type=int, default=None)
    parser.add_argument("--warm", default=None, help="a kind to make ready before answering")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    lock = WardenLock(Path(args.state_dir))
    if not lock.acquire(wait=2.0):
        return 0  # another warden holds it: that one guards the faults
    config = dataclasses.replace(Config.load(), state_dir=Path(args.state_dir))
    engine = Engine(config)
    warden = Warden(engine, exit_when_idle=True, lock=lock)
    if args.warm:
        warden.warm_up(args.warm)
    if args.ready_fd is not None:
        with contextlib.suppress(OSError):
            os.write(args.ready_fd, b"ready")
            os.close(args.ready_fd)
    stop = threading.Event()

    def hand_over(signum: int, frame: object) -> None:
        stop.set()  # an agent takes the faults over: it waits for this lock
        warden.wake()

    signal.signal(HAND_OVER_SIGNAL, hand_over)
    log(f"warden of {config.state_dir} started")
    warden.run(stop)
    log("handing the open faults to the agent" if stop.is_set() else
        "no fault is open: exiting")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
