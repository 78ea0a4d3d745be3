"""The per-fault guardian: a detached process that enforces a fault's deadline and lease.

``spawn(fault_id, kind)`` double-forks and execs ``python -m hostchaos.guardian``
in a new session, so neither ``kill -9`` of the CLI nor the end of its terminal
reaches it. It is started *before* the fault's record exists, so its imports
are done by the time the fault is applied; it waits for the record and leaves
if the process that spawned it dies without writing one (nothing was changed
then). It polls the record (one small file read) and rolls the fault back
through the engine when its deadline passes, its lease runs out, or the process
that was applying it died mid-way. It exits once the record is closed.

Its log is ``$HOSTCHAOS_STATE_DIR/guardian.log``.
"""

from __future__ import annotations

import os
import sys
import time

from hostchaos.system.procs import ProcessRef

POLL_SECONDS = 0.2
RETRY_SECONDS = 5.0
MAX_RETRIES = 12


def spawn(fault_id: str, kind: str) -> ProcessRef:
    """Start the guardian of ``fault_id`` fully detached; return its identity."""
    spawner = ProcessRef.current()
    argv = [sys.executable, "-m", "hostchaos.guardian", fault_id, kind,
            str(spawner.pid), str(spawner.start_ticks)]
    read_end, write_end = os.pipe()
    first = os.fork()
    if first == 0:
        try:
            os.close(read_end)
            os.setsid()
            second = os.fork()
            if second == 0:
                _become_guardian(argv)
            os.write(write_end, str(second).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    os.waitpid(first, 0)
    with os.fdopen(read_end, "rb") as pipe:
        pid = int(pipe.read().decode() or "0")
    return ProcessRef.of(pid)


def _become_guardian(argv: list[str]) -> None:
    try:
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)
        os.dup2(devnull, 1)
        try:
            os.dup2(os.open(_log_path(), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), 2)
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
    from hostchaos.engine import Engine, why_end
    from hostchaos.errors import HostchaosError
    from hostchaos.journal import ROLLBACK_FAILED

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    faults.fault_class(kind).warm_up()
    engine = Engine(Config.load())
    failures = 0
    seen = False
    while True:
        record = engine.journal.find(fault_id)
        if record is None:
            if seen or not spawner.alive():
                return 0  # closed and pruned, or never created: nothing to guard
            time.sleep(0.05)
            continue
        if not seen:
            seen = True
            until = time.strftime("%H:%M:%S", time.localtime(record.expires_at))
            _log(f"guarding {fault_id} until {until}")
        if not record.is_open:
            return 0
        reason = why_end(record, time.time(), judge_guardian=False)
        if reason is None:
            time.sleep(POLL_SECONDS)
            continue
        if record.state == ROLLBACK_FAILED and failures:
            time.sleep(RETRY_SECONDS)
        _log(f"rolling back {fault_id}: {reason}")
        try:
            engine.rollback(fault_id, reason)
        except HostchaosError as exc:
            _log(f"rollback of {fault_id} failed: {exc}")
            failures += 1
            if failures >= MAX_RETRIES:
                return 1  # `hostchaos sweep` (or the boot unit) retries from here


def main(argv: list[str]) -> int:
    fault_id, kind, pid, ticks = argv
    return watch(fault_id, kind, ProcessRef(int(pid), int(ticks)))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
