"""The mechanism every cgroup kind shares: a limit on a moved process or on a cgroup in place.

See :mod:`hostchaos.faults.cgroup_target` for the two ways a target is
limited. A kind (cpu, memory, pids) says only which controller, which files
with which values (in an order the kernel accepts), and which numbers
`status` shows; nothing here knows one kind from another.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, ClassVar

from hostchaos.errors import (
    ConflictError,
    PreconditionError,
    RollbackError,
    TargetNotFoundError,
)
from hostchaos.faults.base import Fault, Spec
from hostchaos.faults.cgroup_target import (
    TARGETS_HELP,
    CgroupTargetSpec,
    Target,
    check_process,
    move_stray_threads,
    moved_elsewhere,
    need_root,
    owner_fault,
    same_cgroup,
    still_the_one,
)

if TYPE_CHECKING:
    from hostchaos.journal import UndoLog
    from hostchaos.system.cgroups import CgroupRef, Cgroups, Hierarchy


class CgroupLimitFault(Fault):
    """Common mechanism of the cgroup kinds (see the kinds' docstrings)."""

    spec: CgroupTargetSpec
    controller: ClassVar[str]
    #: the systemd setting that gives a unit its own cgroup for this controller
    accounting: ClassVar[str]
    help_epilog = TARGETS_HELP

    def __init_subclass__(cls, controller: str = "", accounting: str = "",
                          **kwargs: Any) -> None:
        """``class CpuFault(CgroupLimitFault, controller="cpu", accounting="CPUWeight=100")``.

        ``accounting``: the unit property that makes systemd enable the controller
        for a unit (for cpu on cgroup v2, CPUAccounting=yes does not: the kernel
        counts CPU time without the controller, so systemd leaves it off).
        """
        cls.controller, cls.accounting = controller, accounting
        cls.needs = ("root", "cgroups", f"cgroup-{controller}")
        super().__init_subclass__(**kwargs)

    def __init__(self, spec: Spec) -> None:
        super().__init__(spec)
        self._target: Target | None = None

    # -- what each kind writes ---------------------------------------------------------
    def values(self, version: int) -> dict[str, str]:
        """File -> value to write, in the order :func:`write_limits` expects."""
        raise NotImplementedError

    def check_host(self, fs: Cgroups) -> None:
        """Kind-specific checks of the host (raise on a problem)."""

    def write_values(self, fs: Cgroups, ref: CgroupRef, values: dict[str, str]) -> None:
        """Write limit files in the order given; a kind whose files constrain each other
        (v1 CFS quota and period) overrides this."""
        from hostchaos.system import cgroups

        cgroups.write_limits(fs, ref, values)

    def before_limit(self, fs: Cgroups, ref: CgroupRef) -> dict[str, Any]:
        """Extra facts noted with an in-place limit (memory: its OOM kills so far)."""
        return {}

    def stats(self, fs: Cgroups, ref: CgroupRef, note: dict[str, Any]) -> dict[str, Any]:
        """Live numbers for `status` (usage, throttling, OOM kills ...) of the cgroup a
        ``limit`` or ``cgroup`` note names."""
        return {}

    def summarise(self, entries: list[dict[str, Any]]) -> dict[str, Any]:
        """Totals over every limited cgroup, for `status`."""
        return {}

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
        need_root(self.spec.kind)
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

    def _resolve(self, fs: Cgroups, hierarchy: Hierarchy) -> Target:
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
                    f"({ref.dir} does not exist); give it one: systemctl set-property "
                    f"--runtime {s.unit} {self.accounting}")
        else:
            assert s.cgroup is not None
            ref = fs.ref(hierarchy, s.cgroup)
            if not fs.exists(ref):
                raise TargetNotFoundError(
                    f"cgroup {s.cgroup} not found in the {hierarchy.name} hierarchy ({ref.dir})")
        self._check_in_place(fs, ref)
        return Target(hierarchy, False, ref)

    def _check_in_place(self, fs: Cgroups, ref: CgroupRef) -> None:
        from hostchaos.system import procs

        label = ref.label()
        if ref.is_root:
            raise ConflictError(f"cgroup {label} is the root cgroup: it holds the whole host "
                                "(and PID 1); hostchaos does not limit it")
        owner = owner_fault(ref.path)
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
                    "enabled for it (add it to its parent's cgroup.subtree_control; for a "
                    f"systemd unit: systemctl set-property --runtime UNIT {self.accounting})")

    def _resolve_process(self, fs: Cgroups, hierarchy: Hierarchy, pid: int) -> Target:
        from hostchaos.system import procs

        check_process(pid)
        ticks = procs.start_ticks(pid)
        try:
            origin = fs.cgroup_of(pid, hierarchy)
        except TargetNotFoundError as exc:
            raise TargetNotFoundError(f"process {pid} not found") from exc
        owner = owner_fault(origin.path)
        if owner:
            raise ConflictError(
                f"process {pid} already sits in the cgroup of hostchaos fault {owner} "
                f"({origin.label()}); roll that back first (hostchaos rollback {owner})")
        target = Target(hierarchy, True, origin, start_ticks=ticks or 0)
        if hierarchy.version == 1:
            target.parent = origin
            return target
        self._place_v2(fs, target)
        return target

    def _place_v2(self, fs: Cgroups, target: Target) -> None:
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

    def _refuse_peers(self, target: Target) -> None:
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
            undo.note("limit", **base, cgroup=ref.to_note(), inode=target.inode,
                      original=original, **self.before_limit(fs, ref))
            self.write_values(fs, ref, values)
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
        self.write_values(fs, own, values)
        try:
            fs.move_process(pid, own)
            if target.hierarchy.version == 1:
                move_stray_threads(fs, own, pid)
        except cgroups.Gone as exc:
            raise TargetNotFoundError(f"process {pid} exited before it could be limited") \
                from exc

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

    def _restore_limits(self, fs: Cgroups, note: dict[str, Any]) -> None:
        from hostchaos.errors import ApplyError
        from hostchaos.system import cgroups

        ref = cgroups.CgroupRef.from_note(note["cgroup"])
        if not fs.exists(ref) or not still_the_one(fs, ref, note):
            return  # the cgroup we limited is gone, and its limit with it
        original: dict[str, str] = note["original"]
        try:
            self.write_values(fs, ref, original)
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
                undo.remark(moved_elsewhere(fs, cgroups.CgroupRef(own.hierarchy, wanted_path),
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
                                     "present": fs.exists(ref) and still_the_one(fs, ref, note)}
            if entry["present"]:
                files = list(self.values(ref.hierarchy.version))
                try:
                    entry["limits"] = cgroups.read_limits(fs, ref, files)
                    entry["stats"] = self.stats(fs, ref, note)
                    if note["step"] == "cgroup":
                        entry["pid"] = note["pid"]
                        entry["pid_inside"] = int(note["pid"]) in fs.procs(ref)
                    else:
                        entry["original"] = note["original"]
                except TargetNotFoundError:
                    entry["present"] = False
            out["cgroups"].append(entry)
        out["present"] = any(e["present"] for e in out["cgroups"])
        out.update(self.summarise(out["cgroups"]))
        return out

    def _where(self) -> str:
        if self.spec.pid is not None:
            return (f"process {self.spec.pid} (all its threads), moved into a new cgroup "
                    "hostchaos-<fault id>")
        return f"{self.spec.target_label()}, in place"
