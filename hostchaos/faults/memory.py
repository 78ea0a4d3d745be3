"""Kind ``memory``: cap memory with the cgroup memory controller."""

from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING, Any, ClassVar

from hostchaos.errors import PreconditionError
from hostchaos.faults.base import require
from hostchaos.faults.cgroup_limit import CgroupLimitFault
from hostchaos.faults.cgroup_target import CgroupTargetSpec
from hostchaos.faults.options import option
from hostchaos.quantities import MAX_BYTES, format_size, parse_size

if TYPE_CHECKING:
    from hostchaos.system.cgroups import CgroupRef, Cgroups

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


@dataclasses.dataclass(frozen=True, kw_only=True)
class MemorySpec(CgroupTargetSpec):
    """Cap memory at ``max_bytes`` (OOM kill beyond) and/or throttle above ``high_bytes`` (v2)."""

    max_bytes: int | None = option("--max", "Hard cap (256M, 1G ...): beyond it the kernel "
                                   "reclaims, then OOM-kills.", default=None,
                                   parse=lambda t: parse_size(t, what="--max"), metavar="SIZE")
    high_bytes: int | None = option("--high", "cgroup v2 only: above this the kernel throttles "
                                    "allocation, without a kill.", default=None,
                                    parse=lambda t: parse_size(t, what="--high"),
                                    metavar="SIZE")

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.max_bytes is not None or self.high_bytes is not None,
                "give --max SIZE and/or --high SIZE")
        for name, value in (("--max", self.max_bytes), ("--high", self.high_bytes)):
            if value is None:
                continue
            require(value >= PAGE_SIZE,
                    f"{name} {format_size(value)} is below the kernel minimum: memory limits are "
                    f"counted in whole pages, so anything under one page ({PAGE_SIZE} bytes) "
                    "would be a limit of 0")
            require(value <= MAX_BYTES, f"{name} {value} is too large")
        if self.max_bytes is not None and self.high_bytes is not None:
            require(self.high_bytes < self.max_bytes,
                    f"--high {format_size(self.high_bytes)} must be below --max "
                    f"{format_size(self.max_bytes)} (above it, --max acts first)")



class MemoryFault(CgroupLimitFault, controller="memory", accounting="MemoryAccounting=yes"):
    """Cap the memory of a process or cgroup; beyond --max the kernel OOM-kills.

    Mechanism: v1 ``memory.limit_in_bytes`` (through cgroupspy); v2
    ``memory.max`` and, with ``--high`` (v2 only), ``memory.high``, above which
    the kernel reclaims and throttles the allocating tasks instead of killing.
    Sizes use binary units (K, M, G = 1024, 1024^2, 1024^3 bytes). Memory a
    ``--pid`` target already holds stays charged to its old cgroup: the limit
    governs what it allocates from now on. With swap on the host, pages beyond
    the limit may be swapped out rather than killed. `hostchaos status ID`
    shows usage, peak and OOM kills.

    Rollback: as for cpu, the process goes back and the new cgroup is removed,
    or the original values of an in-place target are written back and read
    back. Does not survive a reboot.

    Example: ``sudo hostchaos inject memory --container web --max 256M --high 200M --for 10m``
    """

    spec_type = MemorySpec
    spec: MemorySpec
    needs_with: ClassVar[dict[str, tuple[str, ...]]] = {"--high": ("cgroup-v2-unified",)}

    def describe(self) -> str:
        s = self.spec
        parts = []
        if s.max_bytes is not None:
            parts.append(f"cap the memory of {self._where()} at {format_size(s.max_bytes)}")
        if s.high_bytes is not None:
            parts.append(("and " if parts else f"for {self._where()}, ")
                         + f"throttle allocation above {format_size(s.high_bytes)}")
        return " ".join(parts)

    def values(self, version: int) -> dict[str, str]:
        s = self.spec
        if version == 1:
            assert s.max_bytes is not None
            return {"memory.limit_in_bytes": str(s.max_bytes)}
        out = {}
        if s.high_bytes is not None:  # the throttle is in place before the hard cap
            out["memory.high"] = str(s.high_bytes)
        if s.max_bytes is not None:
            out["memory.max"] = str(s.max_bytes)
        return out

    def check_host(self, fs: Cgroups) -> None:
        if fs.version == 1 and self.spec.high_bytes is not None:
            raise PreconditionError(
                "memory --high needs cgroup v2 (memory.high); this host uses cgroup v1, "
                "where only --max (memory.limit_in_bytes) exists")

    def before_limit(self, fs: Cgroups, ref: CgroupRef) -> dict[str, Any]:
        return {"oom_kill_before": oom_kills(fs, ref)}

    def stats(self, fs: Cgroups, ref: CgroupRef, note: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if ref.hierarchy.version == 1:
            out["usage_bytes"] = int(fs.read(ref, "memory.usage_in_bytes"))
            out["peak_bytes"] = int(fs.read(ref, "memory.max_usage_in_bytes"))
            out["failcnt"] = int(fs.read(ref, "memory.failcnt"))
            oom = fs.read_stat(ref, "memory.oom_control")
            out["oom_kill"] = oom.get("oom_kill", 0)
            out["under_oom"] = oom.get("under_oom", 0)
        else:
            out["usage_bytes"] = int(fs.read(ref, "memory.current"))
            if fs.has_file(ref, "memory.peak"):
                out["peak_bytes"] = int(fs.read(ref, "memory.peak"))
            events = fs.read_stat(ref, "memory.events")
            out["oom_kill"] = events.get("oom_kill", 0)
            out["oom"] = events.get("oom", 0)
            out["high_events"] = events.get("high", 0)
            out["max_events"] = events.get("max", 0)
        if "oom_kill_before" in note:
            out["oom_kill_during_fault"] = out["oom_kill"] - int(note["oom_kill_before"])
        return out

    def summarise(self, entries: list[dict[str, Any]]) -> dict[str, Any]:
        return {"oom_kill": sum(e.get("stats", {}).get("oom_kill_during_fault",
                                                       e.get("stats", {}).get("oom_kill", 0))
                                for e in entries)}


def oom_kills(fs: Cgroups, ref: CgroupRef) -> int:
    """OOM kills in the cgroup so far."""
    if ref.hierarchy.version == 1:
        return int(fs.read_stat(ref, "memory.oom_control").get("oom_kill", 0))
    return int(fs.read_stat(ref, "memory.events").get("oom_kill", 0))
