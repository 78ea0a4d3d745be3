"""The agent's warden: a thread of the agent, with a sentinel process for when the agent dies.

One interpreter with pyroute2 instead of two: the warden
(:class:`hostchaos.warden.Warden`) runs in a thread of the agent, with an
engine of its own, and holds the state directory's warden lock for the
agent's life. The dead-man's switch still does not depend on the agent staying
up: at start the agent leaves a sentinel (:mod:`hostchaos.sentinel`, a bare
interpreter of about 9 MB) waiting on a pipe only the agent writes to. When
the agent dies, kill -9 included, the sentinel becomes a warden process at
once, which adopts every open fault and ends each at its original deadline.
At a clean stop with nothing left open, the agent tells the sentinel so and it
just exits.

A warden process that already holds the lock when the agent starts (the CLI's
on-demand one, or one a sentinel started for the agent before) keeps guarding
until it hands over: the agent sends it ``HAND_OVER_SIGNAL``, it lets go of the
lock between two steps, and the agent's thread takes the lock and adopts the
faults (all from their records: nothing is lost in between). Until then, new
faults name that warden as their holder.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from hostchaos.agent.logs import INFO, WARNING, log
from hostchaos.errors import ApplyError, HostchaosError
from hostchaos.system.procs import ProcessRef

if TYPE_CHECKING:
    from hostchaos.config import Config
    from hostchaos.warden import Warden

#: how long an inject waits for the agent's warden to hold the lock (a hand-over is < 1 s)
READY_TIMEOUT = 30.0
#: how often a warden process that holds the lock is asked again to hand over
ASK_EVERY = 1.0


class HostedWarden:
    """The agent's warden thread and sentinel; also the engine's WardenStarter in the agent.

    ``start()`` leaves the sentinel and starts the thread; ``ensure()`` (the
    engine, under the state lock, before it creates a fault) names the warden
    that will guard it; ``stop(nothing_open)`` ends the thread and, when
    nothing is open, dismisses the sentinel.
    """

    def __init__(self, config: Config) -> None:
        from hostchaos.engine import Engine
        from hostchaos.warden import Warden

        self.state_dir: Path = config.state_dir
        self.warden: Warden = Warden(Engine(config))
        self._stop = threading.Event()
        self._holding = threading.Event()
        self._thread: threading.Thread | None = None
        self._sentinel_fd: int | None = None
        self.sentinel_pid: int | None = None

    # -- the engine's WardenStarter --------------------------------------------------------
    def prestart(self, kind: str | None = None) -> None:
        """Nothing to start: the thread runs (and warms each kind as it first sees it)."""

    def ensure(self) -> ProcessRef:
        from hostchaos.warden import holder

        if self._holding.is_set():
            return ProcessRef.current()
        found = holder(self.state_dir)  # a warden process not yet handed over
        if found is not None and found.pid != 0:
            return found
        if self._holding.wait(READY_TIMEOUT):
            return ProcessRef.current()
        raise ApplyError("the agent's warden does not hold its lock (see the agent's log); "
                         "nothing was injected")

    # -- life ---------------------------------------------------------------------------------
    def start(self) -> None:
        from hostchaos.warden import spawn_sentinel

        try:
            self.sentinel_pid, self._sentinel_fd = spawn_sentinel(self.state_dir)
        except HostchaosError as exc:  # serve anyway: the sweep timer is the next defence
            log(WARNING, "cannot start the sentinel; if the agent dies, its faults wait for "
                "the next hostchaos command or sweep", error=exc)
        self._thread = threading.Thread(target=self._run, name="warden", daemon=True)
        self._thread.start()

    def stop(self, *, nothing_open: bool, timeout: float = 30.0) -> None:
        self._stop.set()
        self.warden.wake()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._sentinel_fd is not None:
            from hostchaos.sentinel import DONE

            if nothing_open:
                with contextlib.suppress(OSError):
                    os.write(self._sentinel_fd, DONE)
            os.close(self._sentinel_fd)  # with faults open, the sentinel's warden takes them
            self._sentinel_fd = None

    # -- the thread ---------------------------------------------------------------------------
    def _run(self) -> None:
        if not self._take_lock():
            return
        self._holding.set()
        log(INFO, "the warden guards the open faults (a thread of the agent)",
            sentinel_pid=self.sentinel_pid)
        try:
            self.warden.run(self._stop)
        except Exception as exc:  # the sentinel and the sweep timer still stand
            log(WARNING, "the warden thread stopped", error=exc)
        finally:
            self._holding.clear()

    def _take_lock(self) -> bool:
        """The warden lock, asking a warden process that holds it to hand over."""
        from hostchaos.warden import HAND_OVER_SIGNAL, holder

        asked: tuple[int, int] | None = None
        asked_at = 0.0
        while not self._stop.is_set():
            if self.warden.lock.acquire(wait=0.2):
                return True
            found = holder(self.state_dir)
            if found is None or found.pid in (0, os.getpid()):
                continue
            now = time.monotonic()
            if (found.pid, found.start_ticks) != asked or now - asked_at >= ASK_EVERY:
                if _signal_warden_process(found, HAND_OVER_SIGNAL):
                    log(INFO, "asked the warden process to hand its faults over",
                        pid=found.pid)
                asked, asked_at = (found.pid, found.start_ticks), now
            self._stop.wait(0.05)
        return False


def _signal_warden_process(ref: ProcessRef, signum: int) -> bool:
    """Signal ``ref`` if it is still ``python -m hostchaos.warden`` (never whoever else holds
    the lock), through a pidfd so a recycled pid cannot be hit."""
    import signal

    try:
        pidfd = os.pidfd_open(ref.pid)
    except OSError:
        return False
    try:
        try:
            with open(f"/proc/{ref.pid}/cmdline", "rb") as handle:
                argv = handle.read().split(b"\0")
        except OSError:
            return False
        if not _runs_warden_module(argv) or not ref.alive():
            return False
        try:
            signal.pidfd_send_signal(pidfd, signum)
        except OSError:
            return False
        return True
    finally:
        os.close(pidfd)


def _runs_warden_module(argv: list[bytes]) -> bool:
    """``... python -m hostchaos.warden ...`` (not the sentinel, which only names it later)."""
    return any(argv[i] == b"-m" and argv[i + 1] == b"hostchaos.warden"
               for i in range(min(len(argv) - 1, 3)))
