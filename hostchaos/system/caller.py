"""The process a fault is injected for: this one, or the agent's API client.

The in-process CLI injects for itself. The agent injects for the client on
the other end of its socket, so what the CLI would take from its own process
(``$SSH_CONNECTION``, the working directory a relative path means, the
processes never to signal: itself, its ancestors, its SSH session) is taken
from the client's (``/proc/<pid>/environ``, ``/proc/<pid>/cwd``; the pid is
the kernel's SO_PEERCRED, and the client is blocked waiting for the answer, so
it is still that process). :func:`on_behalf_of` sets the client for one
request, in the thread that serves it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass

from hostchaos.errors import SpecError


@dataclass(frozen=True)
class Caller:
    """A client process (``pid`` None: one the kernel did not name, e.g. over TCP)."""

    pid: int | None


_CALLER: ContextVar[Caller | None] = ContextVar("hostchaos_caller", default=None)


@contextlib.contextmanager
def on_behalf_of(pid: int | None) -> Iterator[None]:
    """Within this block (this thread/context), work for process ``pid``."""
    token = _CALLER.set(Caller(pid))
    try:
        yield
    finally:
        _CALLER.reset(token)


def environment_of(pid: int, name: str) -> str | None:
    """One variable of a process's environment (/proc/PID/environ; root reads any)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as handle:
            data = handle.read()
    except OSError:
        return None
    prefix = name.encode() + b"="
    for entry in data.split(b"\0"):
        if entry.startswith(prefix):
            return entry[len(prefix):].decode(errors="replace")
    return None


def pids() -> list[int]:
    """This process, then the client it works for (if the kernel named one)."""
    caller = _CALLER.get()
    own = [os.getpid()]
    if caller is not None and caller.pid is not None and caller.pid != own[0]:
        own.append(caller.pid)
    return own


def getenv(name: str) -> str | None:
    """``name`` from the caller's environment (this process's when working for itself)."""
    caller = _CALLER.get()
    if caller is None:
        return os.environ.get(name)
    return environment_of(caller.pid, name) if caller.pid else None


def abspath(path: str, what: str = "path") -> str:
    """``path`` made absolute against the caller's working directory."""
    if os.path.isabs(path):
        return os.path.normpath(path)
    caller = _CALLER.get()
    if caller is None:
        return os.path.abspath(path)
    try:
        if caller.pid is None:
            raise OSError("no pid")
        cwd = os.readlink(f"/proc/{caller.pid}/cwd")
    except OSError:
        raise SpecError(f"{what} {path!r} is relative and the client's working directory is "
                        "unknown; give an absolute path") from None
    return os.path.normpath(os.path.join(cwd, path))
