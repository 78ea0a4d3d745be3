"""Whose cgroup a resource kind limits, and the checks every cgroup target passes.

A cgroup kind (cpu, memory, pids) limits its target in one of two ways:

- ``--pid PID``: the process (with all its threads) is moved into a new cgroup
  ``hostchaos-<fault id>`` that carries the limit, and moved back on rollback.
  On cgroup v1 the new cgroup is a child of the process's current cgroup in
  the controller's hierarchy, so every limit above it still applies. On v2 it
  is created next to the process's current cgroup (the "no internal
  processes" rule forbids a child of a cgroup that holds processes to get
  controllers), or under the root when the parent cannot delegate the
  controller; any controller hostchaos had to enable in a
  ``cgroup.subtree_control`` is noted and disabled again on rollback, unless
  other cgroups have appeared there since.
- ``--unit`` / ``--container`` / ``--cgroup``: the target's own cgroup is
  limited in place; the original values are noted first and written back (and
  read back) on rollback.

Two faults of one kind never hold the same target: peers are compared by what
their targets resolved to (a cgroup's hierarchy and inode, a process's pid and
start time), never by how the command line spelled them.
"""

from __future__ import annotations

import dataclasses
import re
from typing import TYPE_CHECKING, Any

from hostchaos.errors import ConflictError, PreconditionError, SpecError, TargetNotFoundError
from hostchaos.faults.base import Spec, require
from hostchaos.faults.options import option

if TYPE_CHECKING:
    from hostchaos.system.cgroups import CgroupRef, Cgroups, Hierarchy

_CGROUP_PATH = re.compile(r"[^\0\n]{1,4096}")

TARGETS_HELP = """\b
Targets (exactly one):
  --pid PID         the process and all its threads move into a new cgroup
                    hostchaos-<fault id> carrying the limit, and move back to
                    their original cgroups on rollback
  --unit NAME       the systemd unit's own cgroup, limited in place
  --container NAME  the container's own cgroup (podman, docker, nerdctl or
                    crictl find it), limited in place
  --cgroup PATH     a cgroup by path (e.g. /machine.slice/x.scope, or a full
                    /sys/fs/cgroup/... path), limited in place
In-place targets get their original values written back (and read back) on
rollback. PID 1, kernel threads and hostchaos's own processes are refused
(exit 5)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class CgroupTargetSpec(Spec):
    """Whose cgroup is limited: a process (moved), or a unit, container or cgroup (in place)."""

    pid: int | None = option("--pid", "A process: moved (all threads) into its own limited "
                             "cgroup.", default=None, metavar="PID")
    unit: str | None = option("--unit", "A systemd unit (e.g. nginx.service): its cgroup, in "
                              "place.", default=None, metavar="NAME")
    container: str | None = option("--container", "A running container: its cgroup, in place.",
                                   default=None, metavar="NAME|ID")
    cgroup: str | None = option("--cgroup", "A cgroup path, in place.", default=None,
                                metavar="PATH")

    def __post_init__(self) -> None:

        given = [n for n in ("pid", "unit", "container", "cgroup") if getattr(self, n) is not None]
        require(len(given) == 1,
                "give exactly one target: --pid, --unit, --container or --cgroup"
                + (f" (got {', '.join('--' + g for g in given)})" if given else ""))
        if self.pid is not None:
            require(isinstance(self.pid, int) and self.pid > 0,
                    f"--pid must be a positive process id, got {self.pid}")
        check_unit_and_container(self.unit, self.container)
        if self.cgroup is not None:
            require(bool(_CGROUP_PATH.fullmatch(self.cgroup))
                    and ".." not in self.cgroup.split("/"),
                    f"cgroup path {self.cgroup!r} is not valid (no '..', no newlines)")

    @property
    def moves_process(self) -> bool:
        return self.pid is not None

    def target_label(self) -> str:
        name, value = next((n, getattr(self, n)) for n in ("pid", "unit", "container", "cgroup")
                           if getattr(self, n) is not None)
        return f"{name} {value}"





def check_unit_and_container(unit: str | None, container: str | None) -> None:
    """SpecError for a systemd unit or container name no runtime would accept."""
    from hostchaos.system import containers, units

    if unit is not None:
        require(units.valid_name(unit), f"unit name {unit!r} is not valid")
    if container is not None:
        require(containers.valid_name(container),
                f"container name or id {container!r} is not valid")


def need_root(what: str) -> None:
    from hostchaos.system import capabilities

    root = capabilities.is_root()
    if not root.ok:
        raise PreconditionError(f"{what} faults need root ({root.detail}): {root.fix}")


def check_process(pid: int) -> None:
    """A target process must exist, be a process (not a thread) and not be protected."""
    from hostchaos.system import procs

    if not procs.exists(pid):
        raise TargetNotFoundError(f"process {pid} not found")
    tgid = procs.thread_group(pid)
    if tgid is not None and tgid != pid:
        raise SpecError(f"{pid} is a thread of process {tgid}; give the process id (--pid {tgid})")
    why = procs.protection(pid)
    if why:
        raise ConflictError(why)


def owner_fault(path: str) -> str | None:
    from hostchaos.system.cgroups import PREFIX

    for part in path.split("/"):
        if part.startswith(PREFIX):
            return part[len(PREFIX):]
    return None


def same_cgroup(note: dict[str, Any], ref: CgroupRef, inode: int | None) -> bool:
    """Does the ``limit`` note of another fault name the cgroup ``ref`` (inode ``inode``)?

    Same hierarchy and same inode; a note from an older version, without an
    inode, is judged on its path, normalised as ``ref``'s is.
    """
    from hostchaos.system.cgroups import clean_path

    theirs = note.get("cgroup") or {}
    if theirs.get("mount") != str(ref.hierarchy.mount):
        return False
    if note.get("inode") is not None and inode is not None:
        return bool(int(note["inode"]) == inode)
    return clean_path(str(theirs.get("path", ""))) == ref.path


def still_the_one(fs: Cgroups, ref: CgroupRef, note: dict[str, Any]) -> bool:
    """Is the cgroup at ``ref`` the one the note was written for (not a later namesake)?"""
    if note.get("inode") is None:
        return True  # a note from before inodes were kept: its path is all we know
    try:
        return fs.inode(ref) == int(note["inode"])
    except TargetNotFoundError:
        return False


def moved_elsewhere(fs: Cgroups, wanted: CgroupRef, went: CgroupRef, tasks: list[int],
                     pid: int) -> str:
    """The remark for tasks that could not go back to their original cgroup."""
    unit = "task" if wanted.hierarchy.version == 1 else "process"
    if pid in tasks:
        others = len(tasks) - 1
        who = f"process {pid}" + (f" and {others} more {unit}{'s' * (others > 1)}"
                                  if others else "")
    else:
        who = f"{unit}{'s' * (len(tasks) > 1)} {', '.join(map(str, sorted(tasks)))}"
    why = "was gone" if not fs.exists(wanted) else "no longer accepts processes"
    return (f"the original cgroup {wanted.label()} {why}, so {who} went to {went.label()} "
            "instead (the nearest ancestor that accepts it)")


@dataclasses.dataclass
class Target:
    """A resolved cgroup target: where the limit goes and how."""

    hierarchy: Hierarchy
    move: bool
    ref: CgroupRef                       # in place: the target; move: the process's cgroup now
    parent: CgroupRef | None = None      # move: where hostchaos-<id> is created
    enable: list[CgroupRef] = dataclasses.field(default_factory=list)
    adopt: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    start_ticks: int = 0
    inode: int | None = None             # in place: the target's inode, read under the lock


def move_stray_threads(fs: Cgroups, own: CgroupRef, pid: int) -> None:
    """v1: threads started while the process moved are moved one by one."""
    from hostchaos.system import procs

    for _ in range(5):
        inside = set(fs.tasks(own))
        stray = [t for t in procs.threads(pid) if t not in inside]
        if not stray:
            return
        for tid in stray:
            try:
                fs.move_thread(tid, own)
            except TargetNotFoundError:
                continue


def cgroup_named(fs: Cgroups, hierarchy: Hierarchy, *, container: str | None = None,
                 unit: str | None = None, cgroup: str | None = None) -> CgroupRef:
    """The cgroup a --container, --unit or --cgroup names in ``hierarchy`` (it must exist)."""
    if container is not None:
        from hostchaos.system import containers

        pid, _ = containers.container_pid(container)
        ref = fs.cgroup_of(pid, hierarchy)
    elif unit is not None:
        from hostchaos.system import units

        ref = fs.ref(hierarchy, units.unit_cgroup(unit))
    else:
        assert cgroup is not None
        ref = fs.ref(hierarchy, cgroup)
    if not fs.exists(ref):
        raise TargetNotFoundError(f"{container or unit or cgroup}: cgroup {ref.dir} not found")
    return ref
