"""Kind ``cpu``: cap CPU time with CFS bandwidth control."""

from __future__ import annotations

import dataclasses
import math
import os
from typing import TYPE_CHECKING, Any

from hostchaos.errors import SpecError
from hostchaos.faults.base import require
from hostchaos.faults.cgroup_limit import CgroupLimitFault
from hostchaos.faults.cgroup_target import CgroupTargetSpec
from hostchaos.faults.options import option
from hostchaos.quantities import parse_duration, parse_percent

if TYPE_CHECKING:
    from hostchaos.system.cgroups import CgroupRef, Cgroups

#: CFS bandwidth bounds the kernel accepts (kernel/sched/core.c):
#: quota >= 1 ms, 1 ms <= period <= 1 s
MIN_QUOTA_US = 1000
MIN_PERIOD_US = 1000
MAX_PERIOD_US = 1_000_000


def period_us(text: str) -> int:
    """A CFS period such as ``100ms`` or ``0.05`` (seconds), in microseconds."""
    return round(parse_duration(text, what="--period") * 1_000_000)


@dataclasses.dataclass(frozen=True, kw_only=True)
class CpuSpec(CgroupTargetSpec):
    """Cap CPU time at ``limit`` percent of one CPU (CFS quota over ``period_us``)."""

    limit: float = option("--limit", "CPU time as a share of one CPU: 25% is 25 ms per 100 ms "
                          "period; above 100% spans several CPUs.", required=True,
                          parse=lambda t: parse_percent(t, what="--limit"), metavar="PERCENT")
    period_us: int = option("--period", "CFS period over which --limit is enforced, 1ms to 1s.",
                            default=100_000, parse=period_us, metavar="DURATION")

    def __post_init__(self) -> None:
        super().__post_init__()
        require(math.isfinite(self.limit) and self.limit > 0,
                f"--limit must be above 0%, got {self.limit:g}%")
        require(MIN_PERIOD_US <= self.period_us <= MAX_PERIOD_US,
                f"--period must be between 1ms and 1s (the kernel's range), "
                f"got {self.period_us} us")
        lowest = MIN_QUOTA_US * 100 / self.period_us
        require(self.quota_us >= MIN_QUOTA_US,
                f"--limit {self.limit:g}% is below the kernel minimum: it gives a quota of "
                f"{self.quota_us} us per {self.period_us} us period and the kernel accepts at "
                f"least {MIN_QUOTA_US} us (lowest --limit at this period: {lowest:g}%)")

    @property
    def quota_us(self) -> int:
        return round(self.limit / 100 * self.period_us)



class CpuFault(CgroupLimitFault, controller="cpu", accounting="CPUWeight=100"):
    """Cap the CPU time of a process or cgroup with a CFS quota (quota over period).

    Mechanism: CFS bandwidth control: v1 ``cpu.cfs_quota_us`` /
    ``cpu.cfs_period_us`` (through cgroupspy), v2 ``cpu.max``. ``--limit 25%``
    is 25 ms of CPU per 100 ms period; above 100% allows several CPUs. A
    limited process is throttled for the rest of each period once it has used
    its quota; `hostchaos status ID` shows how often (nr_throttled).

    Rollback: moves every thread back to the cgroup it came from (or, if that
    is gone, to its nearest ancestor that accepts it, and says so in the
    record) and removes the new cgroup (and any controller it had to enable
    on v2); for in-place targets writes back the original quota and period
    and reads them back. A target that exited meanwhile is not an error.
    Does not survive a reboot.

    Example: ``sudo hostchaos inject cpu --pid 4242 --limit 25% --for 5m``
    """

    spec_type = CpuSpec
    spec: CpuSpec

    def describe(self) -> str:
        s = self.spec
        return (f"limit the CPU of {self._where()} to {s.limit:g}% of one CPU "
                f"({s.quota_us} us per {s.period_us} us period)")

    def values(self, version: int) -> dict[str, str]:
        s = self.spec
        if version == 1:
            return {"cpu.cfs_period_us": str(s.period_us), "cpu.cfs_quota_us": str(s.quota_us)}
        return {"cpu.max": f"{s.quota_us} {s.period_us}"}

    def write_values(self, fs: Cgroups, ref: CgroupRef, values: dict[str, str]) -> None:
        """v1 checks quota and period against parent and children on every write: the
        quota is lifted (-1) first, then the period and finally the quota are set."""
        quota = values.get("cpu.cfs_quota_us")
        if quota is not None:
            fs.write(ref, "cpu.cfs_quota_us", "-1")
        for filename, value in values.items():
            if filename != "cpu.cfs_quota_us":
                fs.write(ref, filename, value)
        if quota is not None:
            fs.write(ref, "cpu.cfs_quota_us", quota)

    def check_host(self, fs: Cgroups) -> None:
        cpus = os.cpu_count() or 1
        if self.spec.limit > 100 * cpus:
            raise SpecError(f"--limit {self.spec.limit:g}% is more than this host's {cpus} "
                            f"CPU(s) can give ({100 * cpus}%)")

    def stats(self, fs: Cgroups, ref: CgroupRef, note: dict[str, Any]) -> dict[str, Any]:
        stat = fs.read_stat(ref, "cpu.stat")
        out: dict[str, Any] = {"nr_periods": stat.get("nr_periods"),
                               "nr_throttled": stat.get("nr_throttled")}
        if ref.hierarchy.version == 1:
            out["throttled_usec"] = stat.get("throttled_time", 0) // 1000
        else:
            out["throttled_usec"] = stat.get("throttled_usec")
            out["usage_usec"] = stat.get("usage_usec")
        return out
