"""The per-fault guardian: a detached process that enforces a fault's deadline and lease.

``spawn(fault_id)`` double-forks and execs ``python -m hostchaos.guardian ID``
in a new session, so neither ``kill -9`` of the CLI nor the end of its terminal
reaches it. The guardian polls the fault's journal record (cheap: one small
file read) and rolls the fault back through the engine when its deadline
passes, its lease runs out, or the process that was applying it died mid-way.
It exits as soon as the record is no longer open.
"""

from __future__ import annotations

import os
import sys
import time

from hostchaos.system.procs import ProcessRef

POLL_SECONDS = 0.2
RETRY_SECONDS = 5.0
MAX_RETRIES = 12


def spawn(fault_id: str) -> ProcessRef:
    """Start the guardian of ``fault_id`` fully detached; return its identity."""
    read_end, write_end = os.pipe()
    first = os.fork()
    if first == 0:
        try:
            os.close(read_end)
            os.setsid()
            second = os.fork()
            if second == 0:
                _become_guardian(fault_id)
            os.write(write_end, str(second).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    os.waitpid(first, 0)
    with os.fdopen(read_end, "rb") as pipe:
        pid = int(pipe.read().decode() or "0")
    return ProcessRef.of(pid)


def _become_guardian(fault_id: str) -> None:
    try:
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        os.closerange(3, 4096)
        os.chdir("/")
        os.execv(sys.executable, [sys.executable, "-m", "hostchaos.guardian", fault_id])
    finally:
        os._exit(127)


def watch(fault_id: str) -> int:
    """The guardian's loop. Returns when the fault is no longer open."""
    import signal

    from hostchaos.config import Config
    from hostchaos.engine import Engine, why_end
    from hostchaos.errors import HostchaosError
    from hostchaos.journal import ROLLBACK_FAILED

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    engine = Engine(Config.load())
    failures = 0
    while True:
        record = engine.journal.find(fault_id)
        if record is None or not record.is_open:
            return 0
        reason = why_end(record, time.time(), judge_guardian=False)
        if reason is None:
            time.sleep(POLL_SECONDS)
            continue
        if record.state == ROLLBACK_FAILED and failures:
            time.sleep(RETRY_SECONDS)
        try:
            engine.rollback(fault_id, reason)
        except HostchaosError:
            failures += 1
            if failures >= MAX_RETRIES:
                return 1  # `hostchaos sweep` (or the boot unit) retries from here


if __name__ == "__main__":
    sys.exit(watch(sys.argv[1]))
