"""The state lock: one change to faults at a time, across every hostchaos process.

flock(2) on the state directory itself, and on its ``lock`` file where that can
be opened (older versions lock only the file; taking both, always in this
order, keeps them out of each other's way). It is taken with a timeout, so a
stopped or stuck command makes others fail with a message naming it instead
of hanging, and it needs no write access: a full or read-only state directory
still lets a rollback take it. The holder writes its PID, start time and
purpose into ``lock`` for those messages.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from hostchaos.errors import ConflictError, JournalError
from hostchaos.system.procs import ProcessRef

#: how long a command waits for the state lock before saying who holds it
LOCK_TIMEOUT = 30.0

_OPEN_FLAGS = os.O_NOFOLLOW | os.O_CLOEXEC


class LockBusy(ConflictError, label="busy"):
    """Another hostchaos command held the state lock for longer than the timeout."""


#: the lock file's holder line is padded to this many bytes (newline included)
HOLDER_WIDTH = 256


class StateLock:
    """The lock of one state directory; ``prepare`` creates the directory when it is missing."""

    def __init__(self, state_dir: Path, prepare: Callable[[], None]) -> None:
        self.state_dir = state_dir
        self.prepare = prepare

    # -- the lock ------------------------------------------------------------
    @contextlib.contextmanager
    def locked(self, *, purpose: str = "", timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
        """Hold the state lock, waiting at most ``timeout`` seconds for it."""
        try:
            dir_fd = os.open(self.state_dir, os.O_RDONLY | os.O_DIRECTORY | _OPEN_FLAGS)
        except FileNotFoundError:
            self.prepare()
            dir_fd = os.open(self.state_dir, os.O_RDONLY | os.O_DIRECTORY | _OPEN_FLAGS)
        except OSError as exc:
            raise JournalError(f"cannot open state directory {self.state_dir}: "
                               f"{exc.strerror}") from exc
        fds = [dir_fd]
        try:
            lock_fd, writable = self._open_lock_file()
            if lock_fd is not None:
                fds.append(lock_fd)
            deadline = time.monotonic() + timeout
            for fd in fds:  # always in this order: no two hostchaos processes deadlock
                self._flock(fd, deadline)
            if lock_fd is not None and writable:
                self._write_holder(lock_fd, purpose)
            yield
        finally:
            for fd in reversed(fds):
                os.close(fd)

    def _open_lock_file(self) -> tuple[int | None, bool]:
        path = self.state_dir / "lock"
        try:
            return os.open(path, os.O_RDWR | os.O_CREAT | _OPEN_FLAGS, 0o600), True
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise JournalError(f"{path} is a symlink; refusing to use it as the lock") \
                    from exc
        try:  # a read-only or full state directory: an existing lock file still locks
            return os.open(path, os.O_RDONLY | _OPEN_FLAGS), False
        except OSError:
            return None, False  # the directory lock alone serialises then

    def _flock(self, fd: int, deadline: float) -> None:
        pause = 0.005
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LockBusy(f"the state lock of {self.state_dir} is held by "
                                   f"{self.lock_holder()}; try again when it is done") from None
                time.sleep(pause)
                pause = min(pause * 2, 0.1)

    @staticmethod
    def _write_holder(fd: int, purpose: str) -> None:
        """Write who holds the lock: one line, padded with spaces to a fixed width.

        Overwriting in place needs no truncate, which on a busy ext4 costs a
        journal transaction of its own (~15 ms each seen on a loaded build
        machine); only a longer line, or a file left longer, is truncated.
        """
        me = ProcessRef.current()
        text = f"{me.pid} {me.start_ticks} {purpose}".encode()
        with contextlib.suppress(OSError):
            if len(text) < HOLDER_WIDTH and os.fstat(fd).st_size <= HOLDER_WIDTH:
                os.pwrite(fd, text.ljust(HOLDER_WIDTH - 1) + b"\n", 0)
                return
            os.ftruncate(fd, 0)
            os.pwrite(fd, text + b"\n", 0)

    def lock_holder(self) -> str:
        """Who holds the lock, as far as the lock file says (for messages)."""
        try:
            fd = os.open(self.state_dir / "lock", os.O_RDONLY | _OPEN_FLAGS)
            try:
                text = os.read(fd, 4096).decode(errors="replace").strip()
            finally:
                os.close(fd)
            pid, ticks, purpose = [*text.split(" ", 2), "", ""][:3]
            if ProcessRef(int(pid), int(ticks)).alive():
                return f"pid {pid} ({purpose or 'hostchaos'})"
        except (OSError, ValueError):
            pass
        return "another hostchaos process"
