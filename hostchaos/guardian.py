"""The per-fault guardian: a detached process that enforces a fault's deadline and lease.

``spawn(fault_id, kind)`` double-forks and execs ``python -m hostchaos.guardian``
in a new session, so neither ``kill -9`` of the CLI nor the end of its terminal
reaches it. It is started *before* the fault's record exists, so its imports
are done by the time the fault is applied; it waits for the record and leaves
if the process that spawned it dies without writing one (nothing was changed
then). It polls the record (one small file read) and rolls the fault back
through the engine when its deadline passes, its lease runs out, or the process
that was applying it died mid-way. It exits once the record is closed.

It never gives up while the fault may be on the host: it keeps the last good
copy of the record it read and rolls back from that if the file becomes
unreadable or disappears, and a failed rollback (the kernel, the lock, a full
state directory) is retried with growing pauses, up to a minute apart.

Its log is ``$HOSTCHAOS_STATE_DIR/guardian.log``.
"""

from __future__ import annotations

import os
import sys
import time
from typing import TYPE_CHECKING

from hostchaos.errors import ApplyError
from hostchaos.system.procs import ProcessRef

if TYPE_CHECKING:
    from hostchaos.engine import Engine
    from hostchaos.faults.base import Fault
    from hostchaos.records import FaultRecord

POLL_SECONDS = 0.2
FIRST_RETRY_SECONDS = 0.5
MAX_RETRY_SECONDS = 60.0


def spawn(fault_id: str, kind: str) -> ProcessRef:
    """Start the guardian of ``fault_id`` fully detached; return its identity.

    ApplyError if the kernel will not let it start (fork refused): nothing has
    been changed then, and no fault may go on without its guardian.
    """
    spawner = ProcessRef.current()
    argv = [sys.executable, "-m", "hostchaos.guardian", fault_id, kind,
            str(spawner.pid), str(spawner.start_ticks)]
    read_end, write_end = os.pipe()
    try:
        first = os.fork()
    except OSError as exc:
        os.close(read_end)
        os.close(write_end)
        raise ApplyError(f"cannot start the guardian process that enforces the fault's "
                         f"deadline (fork: {exc.strerror}); nothing was injected") from exc
    if first == 0:
        code = 0
        try:
            os.close(read_end)
            os.setsid()
            second = os.fork()
            if second == 0:
                _become_guardian(argv)
            os.write(write_end, str(second).encode())
        except OSError:
            code = 1
        finally:
            os._exit(code)
    os.close(write_end)
    os.waitpid(first, 0)
    with os.fdopen(read_end, "rb") as pipe:
        pid = int(pipe.read().decode() or "0")
    try:
        if pid <= 0:
            raise ProcessLookupError(pid)
        return ProcessRef.of(pid)
    except ProcessLookupError:
        raise ApplyError("cannot start the guardian process that enforces the fault's "
                         "deadline (it did not start or died at once; see guardian.log in "
                         "the state directory); nothing was injected") from None


def _become_guardian(argv: list[str]) -> None:
    try:
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)
        os.dup2(devnull, 1)
        try:
            log = os.open(_log_path(), os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW,
                          0o600)
            os.dup2(log, 2)
        except OSError:
            os.dup2(devnull, 2)
        os.closerange(3, 4096)
        os.chdir("/")
        os.execv(argv[0], argv)
    finally:
        os._exit(127)


def _log_path() -> str:
    from hostchaos.config import DEFAULT_STATE_DIR

    return os.path.join(os.environ.get("HOSTCHAOS_STATE_DIR", str(DEFAULT_STATE_DIR)),
                        "guardian.log")


def _log(message: str) -> None:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
    print(f"{stamp} guardian[{os.getpid()}] {message}", file=sys.stderr, flush=True)


def watch(fault_id: str, kind: str, spawner: ProcessRef) -> int:
    """The guardian's loop. Returns when the fault is no longer open."""
    import signal

    from hostchaos import faults
    from hostchaos.config import Config
    from hostchaos.deadlines import next_due, why_end
    from hostchaos.engine import Engine
    from hostchaos.errors import HostchaosError
    from hostchaos.journal import RecordUnreadable
    from hostchaos.records import ACTIVE, boottime

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        faults.fault_class(kind).warm_up()
    except HostchaosError:
        pass
    engine = Engine(Config.load())
    worker: Fault | None = None
    next_work = 0.0
    last_good: FaultRecord | None = None
    retry = FIRST_RETRY_SECONDS
    warned = False
    while True:
        try:
            record = engine.journal.find(fault_id)
        except RecordUnreadable as exc:
            if not warned:
                _log(f"record of {fault_id} became unreadable ({exc.problem}); "
                     + ("enforcing its last good copy" if last_good else
                        "waiting for it to become readable (sweep reports it)"))
                warned = True
            if last_good is None:  # it exists, so a fault may: never leave it unguarded
                time.sleep(POLL_SECONDS)
                continue
            record = last_good
        if record is None:
            if last_good is None:
                if not spawner.alive():
                    return 0  # never created: nothing to guard
                time.sleep(0.05)
                continue
            if not last_good.is_open:
                return 0  # closed, then pruned
            record = last_good  # deleted while open: the fault may still be on the host
        elif not record.salvaged:
            if last_good is None:
                until = time.strftime("%H:%M:%S", time.localtime(record.expires_at))
                _log(f"guarding {fault_id} until {until}")
                worker = _worker(engine, record)
            last_good = record
        if not record.is_open:
            return 0
        now = boottime()
        reason = why_end(record, now, judge_holder=False)
        if reason is None:
            if record.state == ACTIVE and worker is not None and now >= next_work:
                worker, next_work = _work(engine, worker, record, now)
            due = min(next_due(record), next_work if worker is not None else next_due(record))
            time.sleep(min(POLL_SECONDS, max(due - boottime(), 0.01)))
            continue
        _log(f"rolling back {fault_id}: {reason}")
        try:
            last_good = engine.rollback(fault_id, reason, last_good=record)
            retry = FIRST_RETRY_SECONDS
        except HostchaosError as exc:
            _log(f"rollback of {fault_id} failed, retrying in {retry:g} s: {exc}")
            time.sleep(retry)
            retry = min(retry * 2, MAX_RETRY_SECONDS)


def _worker(engine: Engine, record: FaultRecord) -> Fault | None:
    """The fault, if it has work to do while active (see ``Fault.work``)."""
    from hostchaos.errors import HostchaosError
    from hostchaos.faults.base import Fault

    try:
        fault = engine.fault_factory(record.kind, record.spec)
    except HostchaosError:
        return None
    fault.state_dir = engine.journal.state_dir
    return fault if type(fault).work is not Fault.work else None


def _work(engine: Engine, worker: Fault, record: FaultRecord,
          now: float) -> tuple[Fault | None, float]:
    """One step of the fault's work: (the worker, or None when done; when to step again).

    What the step noted is added to the record under the lock.
    """
    from hostchaos.journal import UndoLog

    before = len(record.undo)
    try:
        delay = worker.work(UndoLog(record, None))
    except Exception as exc:  # the work is extra: the deadline is what must never stop
        _log(f"work of {record.id} stopped: {type(exc).__name__}: {exc}")
        return None, 0.0
    if len(record.undo) > before:
        try:
            engine.add_notes(record.id, record.undo[before:])
        except Exception as exc:  # e.g. a full state disk: the work itself was done
            _log(f"could not record the work of {record.id}: {exc}")
    return (None, 0.0) if delay is None else (worker, now + delay)


def main(argv: list[str]) -> int:
    fault_id, kind, pid, ticks = argv
    return watch(fault_id, kind, ProcessRef(int(pid), int(ticks)))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
