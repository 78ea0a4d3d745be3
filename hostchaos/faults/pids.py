"""Kind ``pids``: cap the number of tasks with the cgroup pids controller."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from hostchaos.faults.base import require
from hostchaos.faults.cgroup_limit import CgroupLimitFault
from hostchaos.faults.cgroup_target import CgroupTargetSpec
from hostchaos.faults.options import option

if TYPE_CHECKING:
    from hostchaos.system.cgroups import CgroupRef, Cgroups

#: pids.max accepts 0 .. PID_MAX_LIMIT
PID_MAX_LIMIT = 4 * 1024 * 1024


@dataclasses.dataclass(frozen=True, kw_only=True)
class PidsSpec(CgroupTargetSpec):
    """Cap the number of tasks (processes and threads) at ``max``."""

    max: int = option("--max", "Most tasks (processes + threads, the target's own included) "
                      "at once.", required=True, metavar="N")

    def __post_init__(self) -> None:
        super().__post_init__()
        require(isinstance(self.max, int) and 0 <= self.max <= PID_MAX_LIMIT,
                f"--max must be between 0 and {PID_MAX_LIMIT} (the kernel's range), "
                f"got {self.max}")



class PidsFault(CgroupLimitFault, controller="pids", accounting="TasksAccounting=yes"):
    """Cap the number of tasks (processes + threads) a process or cgroup may have.

    Mechanism: ``pids.max`` of the pids controller (v1: plain file I/O, as
    cgroupspy has no pids controller; v2 the same file). Once the cgroup holds
    N tasks, fork(2), clone(2) and thread creation fail with EAGAIN; tasks
    already running are not touched. The target process itself counts: with
    ``--max 5`` it can have 4 more tasks.

    Rollback: as for cpu. Does not survive a reboot.

    Example: ``sudo hostchaos inject pids --pid 4242 --max 5 --for 2m``
    """

    spec_type = PidsSpec
    spec: PidsSpec

    def describe(self) -> str:
        return f"cap the tasks of {self._where()} at {self.spec.max}"

    def values(self, version: int) -> dict[str, str]:
        return {"pids.max": str(self.spec.max)}

    def stats(self, fs: Cgroups, ref: CgroupRef, note: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {"current": int(fs.read(ref, "pids.current"))}
        if fs.has_file(ref, "pids.events"):
            out["fork_failures"] = fs.read_stat(ref, "pids.events").get("max", 0)
        return out
