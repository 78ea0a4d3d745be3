"""Process identity read straight from /proc: cheap enough for every CLI call.

A PID alone is not an identity (PIDs are reused), so hostchaos always pairs it
with the process's start time in clock ticks since boot (field 22 of
``/proc/PID/stat``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass


def start_ticks(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            raw = handle.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # comm (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = raw[raw.rindex(b")") + 2 :].split()
    return int(fields[19])


def state_letter(pid: int) -> str | None:
    """The one-letter state of ``pid`` (R, S, T, Z ...) or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            raw = handle.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return raw[raw.rindex(b")") + 2 :].split()[0].decode()


@dataclass(frozen=True)
class ProcessRef:
    """A process named by PID *and* start time, so a reused PID never matches."""

    pid: int
    start_ticks: int

    @classmethod
    def current(cls) -> ProcessRef:
        return cls.of(os.getpid())

    @classmethod
    def of(cls, pid: int) -> ProcessRef:
        ticks = start_ticks(pid)
        if ticks is None:
            raise ProcessLookupError(pid)
        return cls(pid, ticks)

    def alive(self) -> bool:
        if start_ticks(self.pid) != self.start_ticks:
            return False
        return state_letter(self.pid) not in (None, "Z", "X")

    def terminate(self) -> None:
        """SIGTERM the process if it is still this one (never a reused PID)."""
        import signal

        if self.alive():
            try:
                os.kill(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def to_dict(self) -> dict[str, int]:
        return {"pid": self.pid, "start_ticks": self.start_ticks}

    @classmethod
    def from_dict(cls, data: object) -> ProcessRef | None:
        if not isinstance(data, dict):
            return None
        return cls(int(data["pid"]), int(data["start_ticks"]))


def boot_id() -> str:
    """The kernel's id for this boot; records from another boot are judged differently."""
    with open("/proc/sys/kernel/random/boot_id") as handle:
        return handle.read().strip()
