"""Resource faults: cgroup limits (``cpu``, ``memory``, ``pids``) and RLIMIT_NOFILE (``nofile``).

A cgroup fault limits its target in one of two ways:

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
import math
import os
import re
import time
from typing import TYPE_CHECKING, Any, ClassVar

from hostchaos.errors import (
    ConflictError,
    PreconditionError,
    RollbackError,
    SpecError,
    TargetNotFoundError,
)
from hostchaos.faults.base import Fault, Peer, Spec, require
from hostchaos.journal import UndoLog

if TYPE_CHECKING:
    from hostchaos.system.cgroups import CgroupRef, Cgroups, Hierarchy

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
#: CFS bandwidth bounds the kernel accepts (kernel/sched/core.c):
#: quota >= 1 ms, 1 ms <= period <= 1 s
MIN_QUOTA_US = 1000
MIN_PERIOD_US = 1000
MAX_PERIOD_US = 1_000_000
#: pids.max accepts 0 .. PID_MAX_LIMIT
PID_MAX_LIMIT = 4 * 1024 * 1024
MAX_BYTES = 2**62

_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?b?)", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40, "p": 2**50}
_PERCENT = re.compile(r"(\d+(?:\.\d+)?)\s*%?")
_CGROUP_PATH = re.compile(r"[^\0\n]{1,4096}")
_ACCOUNTING = {"cpu": "CPUAccounting", "memory": "MemoryAccounting", "pids": "TasksAccounting"}


# -- parsing helpers (pure) ---------------------------------------------------------


def parse_size(text: str, *, what: str = "size") -> int:
    """Bytes for ``256M``, ``1G``, ``1.5GiB``, ``512K`` or ``4096`` (binary units, any case)."""
    match = _SIZE.fullmatch(text.strip())
    if not match:
        raise SpecError(f"{what} {text!r} is not a size (use e.g. 256M, 1G, 512K or bytes)")
    number, unit, _ = match.groups()
    value = float(number) * _SIZE_UNITS[unit.lower()]
    if not math.isfinite(value) or value > MAX_BYTES:
        raise SpecError(f"{what} {text!r} is too large")
    return int(value)


def format_size(n: int) -> str:
    for suffix, scale in (("T", 2**40), ("G", 2**30), ("M", 2**20), ("K", 2**10)):
        if n >= scale and n % scale == 0:
            return f"{n // scale}{suffix}"
    for suffix, scale in (("G", 2**30), ("M", 2**20), ("K", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f}{suffix}"
    return f"{n}B"


def parse_percent(text: str, *, what: str = "--limit") -> float:
    """``25%`` or ``25`` -> 25.0 (percent of one CPU)."""
    match = _PERCENT.fullmatch(text.strip())
    if not match:
        raise SpecError(f"{what} {text!r} is not a percentage (use e.g. 25% or 150%)")
    return float(match.group(1))


# -- specs ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class CgroupTargetSpec(Spec):
    """Whose cgroup is limited: a process (moved), or a unit, container or cgroup (in place)."""

    pid: int | None = None
    unit: str | None = None
    container: str | None = None
    cgroup: str | None = None

    def __post_init__(self) -> None:
        from hostchaos.system import containers, units

        given = [n for n in ("pid", "unit", "container", "cgroup") if getattr(self, n) is not None]
        require(len(given) == 1,
                "give exactly one target: --pid, --unit, --container or --cgroup"
                + (f" (got {', '.join('--' + g for g in given)})" if given else ""))
        if self.pid is not None:
            require(isinstance(self.pid, int) and self.pid > 0,
                    f"--pid must be a positive process id, got {self.pid}")
        if self.unit is not None:
            require(units.valid_name(self.unit), f"unit name {self.unit!r} is not valid")
        if self.container is not None:
            require(containers.valid_name(self.container),
                    f"container name or id {self.container!r} is not valid")
        if self.cgroup is not None:
            require(bool(_CGROUP_PATH.fullmatch(self.cgroup))
                    and ".." not in self.cgroup.split("/"),
                    f"cgroup path {self.cgroup!r} is not valid (no '..', no newlines)")

    @property
    def moves_process(self) -> bool:
        return self.pid is not None

    def target_label(self) -> str:
        if self.pid is not None:
            return f"pid {self.pid}"
        if self.unit is not None:
            return f"unit {self.unit}"
        if self.container is not None:
            return f"container {self.container}"
        return f"cgroup {self.cgroup}"


@dataclasses.dataclass(frozen=True, kw_only=True)
class CpuSpec(CgroupTargetSpec):
    """Cap CPU time at ``limit`` percent of one CPU (CFS quota over ``period_us``)."""

    kind: ClassVar[str] = "cpu"
    limit: float
    period_us: int = 100_000

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


@dataclasses.dataclass(frozen=True, kw_only=True)
class MemorySpec(CgroupTargetSpec):
    """Cap memory at ``max_bytes`` (OOM kill beyond) and/or throttle above ``high_bytes`` (v2)."""

    kind: ClassVar[str] = "memory"
    max_bytes: int | None = None
    high_bytes: int | None = None

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


@dataclasses.dataclass(frozen=True, kw_only=True)
class PidsSpec(CgroupTargetSpec):
    """Cap the number of tasks (processes and threads) at ``max``."""

    kind: ClassVar[str] = "pids"
    max: int

    def __post_init__(self) -> None:
        super().__post_init__()
        require(isinstance(self.max, int) and 0 <= self.max <= PID_MAX_LIMIT,
                f"--max must be between 0 and {PID_MAX_LIMIT} (the kernel's range), "
                f"got {self.max}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class NofileSpec(Spec):
    """Set RLIMIT_NOFILE (soft, and optionally hard) of running processes."""

    kind: ClassVar[str] = "nofile"
    soft: int
    hard: int | None = None
    pids: tuple[int, ...] = ()
    name: str | None = None
    unit: str | None = None
    container: str | None = None

    def __post_init__(self) -> None:
        from hostchaos.system import containers, units

        object.__setattr__(self, "pids", tuple(self.pids))
        given = [n for n in ("pids", "name", "unit", "container") if getattr(self, n)]
        require(len(given) == 1,
                "give exactly one target: --pid (repeatable), --name, --unit or --container")
        for pid in self.pids:
            require(isinstance(pid, int) and pid > 0,
                    f"--pid must be a positive process id, got {pid}")
        require(len(set(self.pids)) == len(self.pids), "--pid lists a process twice")
        if self.name is not None:
            require(0 < len(self.name) <= 255 and "/" not in self.name and "\0" not in self.name,
                    f"process name {self.name!r} is not valid")
        if self.unit is not None:
            require(units.valid_name(self.unit), f"unit name {self.unit!r} is not valid")
        if self.container is not None:
            require(containers.valid_name(self.container),
                    f"container name or id {self.container!r} is not valid")
        require(isinstance(self.soft, int) and self.soft >= 0,
                f"--soft must be 0 or more, got {self.soft}")
        if self.hard is not None:
            require(isinstance(self.hard, int) and self.hard >= self.soft,
                    f"--hard {self.hard} must be at least --soft {self.soft} (the kernel refuses "
                    "a soft limit above the hard one)")

    def target_label(self) -> str:
        if self.pids:
            return ("pid " if len(self.pids) == 1 else "pids ") + ",".join(map(str, self.pids))
        if self.name is not None:
            return f"processes named {self.name}"
        if self.unit is not None:
            return f"unit {self.unit}"
        return f"container {self.container}"


# -- shared checks ------------------------------------------------------------------------


def _need_root(what: str) -> None:
    from hostchaos.system import capabilities

    root = capabilities.is_root()
    if not root.ok:
        raise PreconditionError(f"{what} faults need root ({root.detail}): {root.fix}")


def _check_process(pid: int) -> None:
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


def _owner_fault(path: str) -> str | None:
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


def _still_the_one(fs: Cgroups, ref: CgroupRef, note: dict[str, Any]) -> bool:
    """Is the cgroup at ``ref`` the one the note was written for (not a later namesake)?"""
    if note.get("inode") is None:
        return True  # a note from before inodes were kept: its path is all we know
    try:
        return fs.inode(ref) == int(note["inode"])
    except TargetNotFoundError:
        return False


def _moved_elsewhere(fs: Cgroups, wanted: CgroupRef, went: CgroupRef, tasks: list[int],
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
class _Target:
    """A resolved cgroup target: where the limit goes and how."""

    hierarchy: Hierarchy
    move: bool
    ref: CgroupRef                       # in place: the target; move: the process's cgroup now
    parent: CgroupRef | None = None      # move: where hostchaos-<id> is created
    enable: list[CgroupRef] = dataclasses.field(default_factory=list)
    adopt: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    start_ticks: int = 0
    inode: int | None = None             # in place: the target's inode, read under the lock


class CgroupLimitFault(Fault):
    """Common mechanism of the cgroup kinds (see the kinds' docstrings)."""

    spec: CgroupTargetSpec
    controller: ClassVar[str]

    def __init__(self, spec: Spec) -> None:
        super().__init__(spec)
        self._target: _Target | None = None

    # -- what each kind writes ---------------------------------------------------------
    def values(self, version: int) -> dict[str, str]:
        """File -> value to write, in the order :func:`write_limits` expects."""
        raise NotImplementedError

    def check_host(self, fs: Cgroups) -> None:
        """Kind-specific checks of the host (raise on a problem)."""

    @classmethod
    def warm_up(cls) -> None:
        from hostchaos.system import cgroups

        cgroups.warm_up()

    @staticmethod
    def _fs() -> Cgroups:
        from hostchaos.system.cgroups import Cgroups

        return Cgroups()

    # -- resolution ------------------------------------------------------------------------
    def resolve(self) -> None:
        """Find the cgroup (asking container runtimes or systemd): outside the state lock."""
        _need_root(self.spec.kind)
        fs = self._fs()
        hierarchy = fs.require(self.controller)
        self.check_host(fs)
        self._target = self._resolve(fs, hierarchy)

    def preflight(self) -> None:
        if self._target is None:
            self.resolve()
        target = self._target
        assert target is not None
        if not target.move:
            target.inode = self._fs().inode(target.ref)
        self._refuse_peers(target)

    def _resolve(self, fs: Cgroups, hierarchy: Hierarchy) -> _Target:
        s = self.spec
        if s.pid is not None:
            return self._resolve_process(fs, hierarchy, s.pid)
        if s.container is not None:
            from hostchaos.system import containers

            pid, runtime = containers.container_pid(s.container)
            try:
                ref = fs.cgroup_of(pid, hierarchy)
            except TargetNotFoundError as exc:
                raise TargetNotFoundError(
                    f"container {s.container} ({runtime}, pid {pid}) exited") from exc
        elif s.unit is not None:
            from hostchaos.system import units

            ref = fs.ref(hierarchy, units.unit_cgroup(s.unit))
            if not fs.exists(ref):
                raise PreconditionError(
                    f"unit {s.unit} has no cgroup of its own in the {hierarchy.name} hierarchy "
                    f"({ref.dir} does not exist); turn on {_ACCOUNTING[self.controller]}=yes "
                    "for it")
        else:
            assert s.cgroup is not None
            ref = fs.ref(hierarchy, s.cgroup)
            if not fs.exists(ref):
                raise TargetNotFoundError(
                    f"cgroup {s.cgroup} not found in the {hierarchy.name} hierarchy ({ref.dir})")
        self._check_in_place(fs, ref)
        return _Target(hierarchy, False, ref)

    def _check_in_place(self, fs: Cgroups, ref: CgroupRef) -> None:
        from hostchaos.system import procs

        label = ref.label()
        if ref.is_root:
            raise ConflictError(f"cgroup {label} is the root cgroup: it holds the whole host "
                                "(and PID 1); hostchaos does not limit it")
        owner = _owner_fault(ref.path)
        if owner:
            raise ConflictError(f"cgroup {label} belongs to hostchaos fault {owner}")
        members = fs.subtree_procs(ref)
        if 1 in members:
            raise ConflictError(f"cgroup {label} holds PID 1 (init), which is protected")
        for pid in members:
            if procs.is_hostchaos(pid):
                raise ConflictError(f"cgroup {label} holds hostchaos's own process {pid}; "
                                    "hostchaos never limits itself")
        for filename in self.values(ref.hierarchy.version):
            if not fs.has_file(ref, filename):
                raise PreconditionError(
                    f"cgroup {label} has no {filename}: the {self.controller} controller is not "
                    "enabled for it (add it to its parent's cgroup.subtree_control, or for a "
                    f"systemd unit set {_ACCOUNTING[self.controller]}=yes)")

    def _resolve_process(self, fs: Cgroups, hierarchy: Hierarchy, pid: int) -> _Target:
        from hostchaos.system import procs

        _check_process(pid)
        ticks = procs.start_ticks(pid)
        try:
            origin = fs.cgroup_of(pid, hierarchy)
        except TargetNotFoundError as exc:
            raise TargetNotFoundError(f"process {pid} not found") from exc
        owner = _owner_fault(origin.path)
        if owner:
            raise ConflictError(
                f"process {pid} already sits in the cgroup of hostchaos fault {owner} "
                f"({origin.label()}); roll that back first (hostchaos rollback {owner})")
        target = _Target(hierarchy, True, origin, start_ticks=ticks or 0)
        if hierarchy.version == 1:
            target.parent = origin
            return target
        self._place_v2(fs, target)
        return target

    def _place_v2(self, fs: Cgroups, target: _Target) -> None:
        """Choose where hostchaos-<id> goes on v2, and what must be enabled on the way."""
        origin = target.ref
        candidates = [origin.parent() or origin]
        root = origin.ancestors()[0]
        if candidates[0] != root:
            candidates.append(root)
        for parent in candidates:
            if fs.cgroup_type(parent) not in ("domain", ""):
                continue  # threaded subtree: no domain children with controllers
            need = [a for a in parent.ancestors() if self.controller not in fs.enabled(a)]
            if all(a.is_root or not fs.procs(a) for a in need):
                target.parent = parent
                target.enable = need
                target.adopt = [n for a in parent.ancestors() if a not in need
                                for n in self._peer_enables(a)]
                return
        raise PreconditionError(  # unreachable in practice: the root can always delegate
            f"no cgroup can delegate the {self.controller} controller to a new child")

    def _peer_enables(self, ref: CgroupRef) -> list[dict[str, Any]]:
        """Enable notes of other open faults for ``ref`` and this controller."""
        return [n for n in self.peer_notes() if n.get("step") == "enable"
                and n.get("controller") == self.controller
                and n["cgroup"]["mount"] == str(ref.hierarchy.mount)
                and n["cgroup"]["path"] == ref.path][:1]

    def _refuse_peers(self, target: _Target) -> None:
        """Refuse a target that an open fault of this kind already limits.

        Judged on what both resolved to, never on how they were spelled: an
        in-place target is the same cgroup as a peer's ``limit`` note when
        their hierarchy and inode match (older notes without an inode: their
        normalised path), whatever named it (``--unit``, ``--container``, any
        spelling of ``--cgroup``); a process is the same when pid and start
        time match.
        """
        for note in self.peer_notes():
            if note.get("kind") != self.spec.kind:
                continue
            if note.get("step") == "limit" and not target.move \
                    and same_cgroup(note, target.ref, target.inode):
                raise ConflictError(f"cgroup {target.ref.label()} ({self.spec.target_label()}) "
                                    f"already carries {self.spec.kind} fault "
                                    f"{note.get('fault')} (roll it back first: hostchaos "
                                    f"rollback {note.get('fault')})")
            if note.get("step") == "cgroup" and target.move \
                    and note.get("pid") == self.spec.pid \
                    and note.get("start_ticks") == target.start_ticks:
                raise ConflictError(f"process {self.spec.pid} already carries "
                                    f"{self.spec.kind} fault {note.get('fault')} (roll it back "
                                    f"first: hostchaos rollback {note.get('fault')})")

    # -- apply -------------------------------------------------------------------------------
    def apply(self, undo: UndoLog) -> None:
        from hostchaos.system import cgroups

        fs = self._fs()
        if self._target is None:
            self.preflight()
        target = self._target
        assert target is not None
        base = {"kind": self.spec.kind, "fault": undo.record.id}
        values = self.values(target.hierarchy.version)
        if not target.move:
            ref = target.ref
            original = cgroups.read_limits(fs, ref, list(values))
            extra = {"oom_kill_before": cgroups.oom_kills(fs, ref)} \
                if self.controller == "memory" else {}
            undo.note("limit", **base, cgroup=ref.to_note(), inode=target.inode,
                      original=original, **extra)
            cgroups.write_limits(fs, ref, values)
            return
        # a process: its own cgroup, limited before the process is moved in
        assert target.parent is not None
        pid = self.spec.pid
        assert pid is not None
        for note in target.adopt:
            undo.note("enable", **base, cgroup=note["cgroup"], controller=self.controller,
                      children_before=note["children_before"], adopted_from=note.get("fault"))
        for ref in target.enable:
            undo.note("enable", **base, cgroup=ref.to_note(), controller=self.controller,
                      children_before=fs.children(ref))
            fs.set_enabled(ref, self.controller, True)
        own = target.parent.child(f"{cgroups.PREFIX}{undo.record.id}")
        threads = fs.thread_cgroups(pid, target.hierarchy) if target.hierarchy.version == 1 \
            else {}
        undo.note("cgroup", **base, cgroup=own.to_note(), pid=pid,
                  start_ticks=target.start_ticks, origin=target.ref.path,
                  threads={str(t): p for t, p in threads.items()})
        fs.create(own)
        cgroups.write_limits(fs, own, values)
        try:
            fs.move_process(pid, own)
            if target.hierarchy.version == 1:
                self._move_stray_threads(fs, own, pid)
        except cgroups.Gone as exc:
            raise TargetNotFoundError(f"process {pid} exited before it could be limited") \
                from exc

    @staticmethod
    def _move_stray_threads(fs: Cgroups, own: CgroupRef, pid: int) -> None:
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

    # -- rollback ------------------------------------------------------------------------------
    def rollback(self, undo: UndoLog) -> None:
        fs = self._fs()
        problems: list[str] = []
        for note in reversed(undo.record.undo):
            step = note.get("step")
            try:
                if step == "limit":
                    self._restore_limits(fs, note)
                elif step == "cgroup":
                    self._empty_and_remove(fs, note, undo)
                elif step == "enable":
                    self._disable_if_ours(fs, note)
            except RollbackError as exc:
                problems.append(str(exc))
            except TargetNotFoundError:
                continue  # the cgroup or the process is gone, and the limit with it
        if problems:
            raise RollbackError("; ".join(problems))

    @staticmethod
    def _restore_limits(fs: Cgroups, note: dict[str, Any]) -> None:
        from hostchaos.errors import ApplyError
        from hostchaos.system import cgroups

        ref = cgroups.CgroupRef.from_note(note["cgroup"])
        if not fs.exists(ref) or not _still_the_one(fs, ref, note):
            return  # the cgroup we limited is gone, and its limit with it
        original: dict[str, str] = note["original"]
        try:
            cgroups.write_limits(fs, ref, original)
        except ApplyError as exc:
            raise RollbackError(f"writing back the original limits of {ref.label()}: {exc}") \
                from exc
        now = cgroups.read_limits(fs, ref, list(original))
        for filename, wanted in original.items():
            if not cgroups.same_value(wanted, now[filename]):
                raise RollbackError(f"{ref.label()}/{filename} reads {now[filename]!r} after "
                                    f"writing back the original {wanted!r}")

    @staticmethod
    def _empty_and_remove(fs: Cgroups, note: dict[str, Any], undo: UndoLog) -> None:
        """Move every task out of our cgroup (each thread to where it came from), then rmdir.

        A task whose cgroup is gone (a systemd scope vanishes with its last
        process) or refuses it goes to the nearest ancestor that accepts it,
        and the record says so.
        """
        from hostchaos.errors import ApplyError
        from hostchaos.system import cgroups, procs

        own = cgroups.CgroupRef.from_note(note["cgroup"])
        victim = procs.ProcessRef(int(note["pid"]), int(note["start_ticks"]))
        threads = {int(t): str(p) for t, p in (note.get("threads") or {}).items()}
        v1 = own.hierarchy.version == 1
        elsewhere: dict[tuple[str, str], list[int]] = {}  # (wanted, went) -> tasks
        last_error = ""
        try:
            for attempt in range(60):
                if not fs.exists(own):
                    return
                try:
                    members = fs.tasks(own) if v1 else fs.procs(own)
                except TargetNotFoundError:
                    return
                if not members:
                    try:
                        fs.remove(own)
                        return
                    except ApplyError as exc:  # EBUSY: a task slipped in, or is still leaving
                        last_error = str(exc)
                        time.sleep(0.05 * min(attempt + 1, 10))
                        continue
                victim_alive = victim.alive()
                for task in members:
                    wanted = str(note["origin"])
                    if v1 and victim_alive and task in threads \
                            and procs.thread_group(task) == victim.pid:
                        wanted = threads[task]
                    try:
                        went = fs.move_to_nearest(task, cgroups.CgroupRef(own.hierarchy, wanted),
                                                  thread=v1)
                    except TargetNotFoundError:
                        continue  # exited meanwhile
                    except ApplyError as exc:
                        last_error = str(exc)
                        continue
                    if went.path != wanted:
                        elsewhere.setdefault((wanted, went.path), []).append(task)
            raise RollbackError(f"cgroup {own.label()} could not be emptied and removed "
                                f"({last_error or 'tasks keep arriving'})")
        finally:
            for (wanted_path, went_path), tasks in elsewhere.items():
                undo.remark(_moved_elsewhere(fs, cgroups.CgroupRef(own.hierarchy, wanted_path),
                                             cgroups.CgroupRef(own.hierarchy, went_path),
                                             tasks, victim.pid))

    @staticmethod
    def _disable_if_ours(fs: Cgroups, note: dict[str, Any]) -> None:
        """Disable a controller hostchaos enabled, unless cgroups have appeared that may use it."""
        from hostchaos.errors import ApplyError
        from hostchaos.system import cgroups

        ref = cgroups.CgroupRef.from_note(note["cgroup"])
        controller = str(note["controller"])
        if not fs.exists(ref) or controller not in fs.enabled(ref):
            return
        newcomers = set(fs.children(ref)) - set(note.get("children_before") or [])
        if newcomers:
            return  # someone may rely on it now: leaving it enabled is the safe side
        try:
            fs.set_enabled(ref, controller, False)
        except ApplyError:
            return  # EBUSY: a child enabled it further down; it is in use

    # -- observe --------------------------------------------------------------------------------
    def observe(self, undo: UndoLog) -> dict[str, Any]:
        from hostchaos.system import cgroups

        fs = self._fs()
        out: dict[str, Any] = {"present": False, "cgroups": []}
        for note in undo.record.undo:
            if note.get("step") not in ("limit", "cgroup"):
                continue
            ref = cgroups.CgroupRef.from_note(note["cgroup"])
            entry: dict[str, Any] = {"cgroup": ref.label(),
                                     "present": fs.exists(ref) and _still_the_one(fs, ref, note)}
            if entry["present"]:
                files = list(self.values(ref.hierarchy.version))
                try:
                    entry["limits"] = cgroups.read_limits(fs, ref, files)
                    entry["stats"] = cgroups.stats(fs, ref, self.controller)
                    if note["step"] == "cgroup":
                        entry["pid"] = note["pid"]
                        entry["pid_inside"] = int(note["pid"]) in fs.procs(ref)
                    else:
                        entry["original"] = note["original"]
                        if "oom_kill_before" in note:
                            entry["stats"]["oom_kill_during_fault"] = (
                                entry["stats"]["oom_kill"] - int(note["oom_kill_before"]))
                except TargetNotFoundError:
                    entry["present"] = False
            out["cgroups"].append(entry)
        out["present"] = any(e["present"] for e in out["cgroups"])
        if self.controller == "memory":
            out["oom_kill"] = sum(e.get("stats", {}).get("oom_kill_during_fault",
                                                          e.get("stats", {}).get("oom_kill", 0))
                                  for e in out["cgroups"])
        return out

    def _where(self) -> str:
        if self.spec.pid is not None:
            return (f"process {self.spec.pid} (all its threads), moved into a new cgroup "
                    "hostchaos-<fault id>")
        return f"{self.spec.target_label()}, in place"


class CpuFault(CgroupLimitFault):
    """Cap the CPU time of a process or cgroup with CFS bandwidth control.

    Mechanism: CFS quota over period: v1 ``cpu.cfs_quota_us`` /
    ``cpu.cfs_period_us`` (through cgroupspy), v2 ``cpu.max``. ``--limit 25%``
    is 25 ms of CPU per 100 ms period; above 100% allows several CPUs. A
    ``--pid`` target moves the process and all its threads into a new cgroup
    ``hostchaos-<fault id>``; ``--unit``, ``--container`` and ``--cgroup``
    are limited in place.
    Rollback: moves every thread back to the cgroup it came from (or, if that
    is gone, to its nearest ancestor that accepts it, and says so in the
    record) and removes the new cgroup (and any controller it had to enable
    on v2); for in-place targets writes back the original quota and period
    and reads them back. A target that exited meanwhile is not an error.
    Does not survive a reboot.

    Example: ``sudo hostchaos inject cpu --pid 4242 --limit 25% --for 5m``
    """

    kind = "cpu"
    spec_type = CpuSpec
    spec: CpuSpec
    controller = "cpu"

    def describe(self) -> str:
        s = self.spec
        return (f"limit the CPU of {self._where()} to {s.limit:g}% of one CPU "
                f"({s.quota_us} us per {s.period_us} us period)")

    def values(self, version: int) -> dict[str, str]:
        s = self.spec
        if version == 1:
            return {"cpu.cfs_period_us": str(s.period_us), "cpu.cfs_quota_us": str(s.quota_us)}
        return {"cpu.max": f"{s.quota_us} {s.period_us}"}

    def check_host(self, fs: Cgroups) -> None:
        cpus = os.cpu_count() or 1
        if self.spec.limit > 100 * cpus:
            raise SpecError(f"--limit {self.spec.limit:g}% is more than this host's {cpus} "
                            f"CPU(s) can give ({100 * cpus}%)")


class MemoryFault(CgroupLimitFault):
    """Cap the memory of a process or cgroup; beyond ``--max`` the kernel OOM-kills.

    Mechanism: v1 ``memory.limit_in_bytes`` (through cgroupspy); v2
    ``memory.max`` and, with ``--high`` (v2 only), ``memory.high``, above which
    the kernel reclaims and throttles the allocating tasks instead of killing.
    Memory a ``--pid`` target already holds stays charged to its old cgroup:
    the limit governs what it allocates from now on. With swap on the host,
    pages beyond the limit may be swapped out rather than killed.
    Rollback: as for cpu, the process goes back and the new cgroup is removed,
    or the original values of an in-place target are written back and read
    back. Does not survive a reboot.

    Example: ``sudo hostchaos inject memory --container web --max 256M --high 200M --for 10m``
    """

    kind = "memory"
    spec_type = MemorySpec
    spec: MemorySpec
    controller = "memory"

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
        if s.high_bytes is not None:
            out["memory.high"] = str(s.high_bytes)
        if s.max_bytes is not None:
            out["memory.max"] = str(s.max_bytes)
        return out

    def check_host(self, fs: Cgroups) -> None:
        if fs.version == 1 and self.spec.high_bytes is not None:
            raise PreconditionError(
                "memory --high needs cgroup v2 (memory.high); this host uses cgroup v1, "
                "where only --max (memory.limit_in_bytes) exists")


class PidsFault(CgroupLimitFault):
    """Cap the number of tasks (processes + threads) a process or cgroup may have.

    Mechanism: ``pids.max`` of the pids controller (v1: plain file I/O, as
    cgroupspy has no pids controller; v2 the same file). Forks and thread
    creations beyond it fail with EAGAIN; tasks already there stay. The target
    process itself counts: with ``--max 5`` it can have 4 more tasks.
    Rollback: as for cpu. Does not survive a reboot.

    Example: ``sudo hostchaos inject pids --unit worker.service --max 50 --for 2m``
    """

    kind = "pids"
    spec_type = PidsSpec
    spec: PidsSpec
    controller = "pids"

    def describe(self) -> str:
        return f"cap the tasks of {self._where()} at {self.spec.max}"

    def values(self, version: int) -> dict[str, str]:
        return {"pids.max": str(self.spec.max)}


# -- nofile -------------------------------------------------------------------------------


def _rlim(value: int) -> str:
    return "unlimited" if value < 0 else str(value)


class NofileFault(Fault):
    """Lower (or raise) the open-files limit of running processes.

    Mechanism: prlimit(2) on RLIMIT_NOFILE of each target process: ``--soft``,
    and ``--hard`` if given (else the hard limit stays). Once a process holds
    ``--soft`` descriptors its next open/socket/pipe fails with EMFILE.
    Descriptors it already holds stay open. ``--name``, ``--unit`` and
    ``--container`` take every matching process at inject time (never PID 1,
    kernel threads or hostchaos itself).
    Rollback: writes each process's original (soft, hard) back and reads it
    back; a process that exited meanwhile is not an error. Does not survive a
    reboot (nor the process).

    Example: ``sudo hostchaos inject nofile --pid 4242 --soft 64 --for 5m``
    """

    kind = "nofile"
    spec_type = NofileSpec
    spec: NofileSpec

    def __init__(self, spec: Spec) -> None:
        super().__init__(spec)
        self._targets: list[tuple[int, int]] | None = None

    @classmethod
    def warm_up(cls) -> None:
        import hostchaos.system.procs
        import hostchaos.system.rlimits  # noqa: F401

    def describe(self) -> str:
        s = self.spec
        hard = f"hard {s.hard}" if s.hard is not None else "hard unchanged"
        return (f"set the open-files limit (RLIMIT_NOFILE) of {s.target_label()} to "
                f"soft {s.soft}, {hard}")

    def conflicts(self, peer: Peer) -> str | None:
        other = peer.spec
        if not isinstance(other, NofileSpec):
            return None
        s = self.spec
        shared = set(s.pids) & set(other.pids)
        if shared:
            return f"pid {min(shared)} (open-files limit)"
        if (s.name, s.unit, s.container) == (other.name, other.unit, other.container) \
                and not s.pids:
            return f"{s.target_label()} (open-files limit)"
        return None

    def resolve(self) -> None:
        """Find the processes and read their limits: outside the state lock."""
        from hostchaos.system import procs, rlimits

        _need_root("nofile")
        s = self.spec
        ceiling = rlimits.nr_open()
        top = s.hard if s.hard is not None else s.soft
        if top > ceiling:
            raise SpecError(f"--{'hard' if s.hard is not None else 'soft'} {top} is above the "
                            f"kernel's ceiling fs.nr_open = {ceiling}")
        targets = []
        privileged = rlimits.can_raise_hard_limits()
        for pid in self._resolve():
            ticks = procs.start_ticks(pid)
            if ticks is None:
                continue
            try:
                _, hard = rlimits.get_nofile(pid)
            except TargetNotFoundError:
                continue
            if s.hard is None and hard != rlimits.INFINITY and s.soft > hard:
                raise SpecError(f"--soft {s.soft} is above the hard limit {hard} of process "
                                f"{pid}; give --hard too")
            if s.hard is not None and s.hard != hard and not privileged:
                # lowering it could never be undone, raising it is refused by the kernel
                raise PreconditionError(
                    f"--hard {s.hard} would change the hard limit {_rlim(hard)} of process "
                    f"{pid}, and only CAP_SYS_RESOURCE can raise a hard limit (back): this "
                    "process lacks it; give --soft alone")
            targets.append((pid, ticks))
        if not targets:
            raise TargetNotFoundError(f"{s.target_label()}: every target process is gone")
        self._targets = targets

    def preflight(self) -> None:
        if self._targets is None:
            self.resolve()
        assert self._targets is not None
        for pid, ticks in self._targets:
            for note in self.peer_notes():
                if note.get("step") == "rlimit" and note.get("pid") == pid \
                        and note.get("start_ticks") == ticks:
                    raise ConflictError(f"process {pid} already carries nofile fault "
                                        f"{note.get('fault')}")

    def _resolve(self) -> list[int]:
        from hostchaos.system import procs

        s = self.spec
        if s.pids:
            for pid in s.pids:
                _check_process(pid)
            return list(s.pids)
        if s.name is not None:
            found = [p for p in procs.find_by_name(s.name) if procs.protection(p) is None]
            if not found:
                raise TargetNotFoundError(f"no process named {s.name} found (PID 1, kernel "
                                          "threads and hostchaos itself are never matched)")
            return found
        from hostchaos.system.cgroups import Cgroups

        fs = Cgroups()
        if fs.version == 2:
            hierarchy = fs.hierarchies[0] if fs.hierarchies else None
        else:
            hierarchy = next((h for c in ("name=systemd", "pids", "memory", "cpu")
                              if (h := fs.hierarchy_for(c)) is not None), None)
        if hierarchy is None:
            raise PreconditionError("no cgroup hierarchy is mounted to find the target's "
                                    "processes in")
        if s.container is not None:
            from hostchaos.system import containers

            pid, _ = containers.container_pid(s.container)
            ref = fs.cgroup_of(pid, hierarchy)
            what = f"container {s.container}"
        else:
            from hostchaos.system import units

            assert s.unit is not None
            ref = fs.ref(hierarchy, units.unit_cgroup(s.unit))
            what = f"unit {s.unit}"
        if ref.is_root:
            raise ConflictError(f"{what} sits in the root cgroup; target its --pid instead")
        found = [p for p in fs.subtree_procs(ref) if procs.protection(p) is None]
        if not found:
            raise TargetNotFoundError(f"{what} has no processes hostchaos may limit")
        return found

    def apply(self, undo: UndoLog) -> None:
        from hostchaos.system import procs, rlimits

        if self._targets is None:
            self.preflight()
        assert self._targets is not None
        s = self.spec
        done = 0
        for pid, ticks in self._targets:
            ref = procs.ProcessRef(pid, ticks)
            try:
                soft, hard = rlimits.get_nofile(pid)
            except TargetNotFoundError:
                continue
            if not ref.alive():
                continue
            undo.note("rlimit", kind=self.kind, fault=undo.record.id, pid=pid,
                      start_ticks=ticks, soft=soft, hard=hard)
            try:
                rlimits.set_nofile(pid, s.soft, s.hard if s.hard is not None else hard)
            except TargetNotFoundError:
                continue
            done += 1
        if not done:
            raise TargetNotFoundError(f"{s.target_label()}: every target process exited "
                                      "before its limit was set")

    def rollback(self, undo: UndoLog) -> None:
        from hostchaos.system import procs, rlimits

        problems = []
        for note in reversed(undo.steps("rlimit")):
            pid = int(note["pid"])
            if not procs.ProcessRef(pid, int(note["start_ticks"])).alive():
                continue  # exited (or the pid was reused): nothing of ours is left there
            wanted = (int(note["soft"]), int(note["hard"]))
            try:
                rlimits.set_nofile(pid, *wanted)
                now = rlimits.get_nofile(pid)
            except TargetNotFoundError:
                continue
            except Exception as exc:  # a kernel refusal: keep going, report all at the end
                problems.append(str(exc))
                continue
            if now != wanted:
                problems.append(f"process {pid} reads RLIMIT_NOFILE {now[0]}:{now[1]} after "
                                f"writing back {wanted[0]}:{wanted[1]}")
        if problems:
            raise RollbackError("; ".join(problems))

    def observe(self, undo: UndoLog) -> dict[str, Any]:
        from hostchaos.system import procs, rlimits

        entries = []
        for note in undo.steps("rlimit"):
            pid = int(note["pid"])
            entry: dict[str, Any] = {"pid": pid, "original": [note["soft"], note["hard"]],
                                     "alive": procs.ProcessRef(pid,
                                                               int(note["start_ticks"])).alive()}
            if entry["alive"]:
                try:
                    entry["soft"], entry["hard"] = rlimits.get_nofile(pid)
                except TargetNotFoundError:
                    entry["alive"] = False
            entries.append(entry)
        return {"present": any(e["alive"] for e in entries), "processes": entries}
