"""Kind ``freeze``: stop every task of a cgroup with the cgroup freezer."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from hostchaos.errors import ConflictError, PreconditionError, TargetNotFoundError
from hostchaos.faults.base import Fault, Peer, require
from hostchaos.faults.cgroup_target import CgroupTargetSpec, cgroup_named, need_root

if TYPE_CHECKING:
    from hostchaos.journal import UndoLog
    from hostchaos.system.cgroups import CgroupRef, Cgroups


@dataclasses.dataclass(frozen=True, kw_only=True)
class FreezeSpec(CgroupTargetSpec):
    """Freeze the cgroup of a container, a unit, or one given by path."""

    def __post_init__(self) -> None:
        require(self.pid is None, "freeze acts on a whole cgroup: give --container, --unit or "
                "--cgroup (to pause single processes, use `hostchaos inject stop --pid`)")
        super().__post_init__()


class FreezeFault(Fault):
    """Freeze every task of a container, unit or cgroup (cgroup freezer); thaw on rollback.

    Mechanism: v1 writes FROZEN to the freezer hierarchy's ``freezer.state``,
    v2 writes 1 to ``cgroup.freeze``, and waits until the kernel reports every
    task stopped (``FROZEN``, ``frozen 1`` in ``cgroup.events``). Frozen tasks
    use no CPU and cannot be signalled awake, not even by SIGKILL, until
    thawed. A freeze that does not complete within 5 s is undone at once and
    reported as failed (exit 6): a half-frozen cgroup is never left behind. A
    cgroup holding PID 1 or hostchaos itself is refused (exit 5).

    A ``--unit`` where systemd runs is frozen through systemd (``systemctl
    freeze``), so systemd knows its unit is frozen and shows it.

    Rollback: thaws the cgroup (``systemctl thaw`` for a unit frozen through
    systemd), if it is still the one frozen (same inode); a
    cgroup that is gone (the container exited) is not an error. Does not
    survive a reboot.

    Example: ``sudo hostchaos inject freeze --container web --for 30s``
    """

    spec_type = FreezeSpec
    spec: FreezeSpec
    needs = ("root", "cgroups")

    def __init__(self, spec: Any) -> None:
        super().__init__(spec)
        self._ref: CgroupRef | None = None

    def describe(self) -> str:
        return f"freeze every task of {self.spec.target_label()}"

    @staticmethod
    def _fs() -> Cgroups:
        from hostchaos.system.cgroups import Cgroups

        return Cgroups()

    def resolve(self) -> None:
        need_root("freeze")
        fs = self._fs()
        hierarchy = fs.hierarchies[0] if fs.version == 2 else fs.hierarchy_for("freezer")
        if hierarchy is None:
            raise PreconditionError("the cgroup v1 freezer hierarchy is not mounted "
                                    "(mount -t cgroup -o freezer cgroup /sys/fs/cgroup/freezer)")
        s = self.spec
        ref = cgroup_named(fs, hierarchy, container=s.container, unit=s.unit, cgroup=s.cgroup)
        self._ref = ref

    def preflight(self) -> None:
        from hostchaos.faults.process_targets import protected, why_protected
        from hostchaos.system import freezer

        if self._ref is None:
            self.resolve()
        ref, fs = self._ref, self._fs()
        assert ref is not None
        if ref.is_root:
            raise ConflictError(f"{self.spec.target_label()} is the root cgroup: the whole host")
        known = protected()
        for pid in fs.subtree_procs(ref):
            reason = why_protected(pid, known)
            if reason is not None:
                raise ConflictError(f"cgroup {ref.label()} holds {reason}; hostchaos never "
                                    "freezes it")
        if freezer.wants_frozen(fs, ref):
            raise ConflictError(f"cgroup {ref.label()} is frozen already (by someone else, or "
                                "another fault): its thaw is not ours to give")

    def conflicts(self, peer: Peer) -> str | None:
        if self._ref is None:
            return None
        for note in peer.notes:
            if note.get("step") == "freeze" and note["cgroup"]["path"] == self._ref.path \
                    and note["cgroup"]["mount"] == str(self._ref.hierarchy.mount):
                return f"cgroup {self._ref.label()} (frozen)"
        return None

    def apply(self, undo: UndoLog) -> None:
        from hostchaos.system import freezer, units

        ref, fs = self._ref, self._fs()
        assert ref is not None
        by_systemd = self.spec.unit is not None and units.systemd_running()
        undo.note("freeze", cgroup=ref.to_note(), inode=fs.inode(ref),
                  unit=self.spec.unit if by_systemd else None)
        if not by_systemd:
            freezer.freeze(fs, ref)
            return
        units.set_frozen(self.spec.unit or "", True)  # systemd knows its unit is frozen
        try:
            freezer.wait_frozen(fs, ref)
        except Exception:
            units.set_frozen(self.spec.unit or "", False)
            raise

    def _noted(self, undo: UndoLog) -> tuple[Cgroups, CgroupRef] | None:
        from hostchaos.system.cgroups import CgroupRef

        fs = self._fs()
        for note in undo.steps("freeze"):
            ref = CgroupRef.from_note(note["cgroup"])
            try:
                if fs.exists(ref) and fs.inode(ref) == int(note["inode"]):
                    return fs, ref
            except TargetNotFoundError:
                return None
        return None

    def rollback(self, undo: UndoLog) -> None:
        from hostchaos.system import freezer, units

        found = self._noted(undo)
        if found is None:
            return  # never frozen, or the cgroup is gone and its freeze with it
        unit = next((n.get("unit") for n in undo.steps("freeze") if n.get("unit")), None)
        try:
            if unit and units.systemd_running():
                units.set_frozen(str(unit), False)
            else:
                freezer.thaw(*found)
        except TargetNotFoundError:
            return

    def observe(self, undo: UndoLog) -> dict[str, Any]:
        from hostchaos.system import freezer

        found = self._noted(undo)
        if found is None:
            return {"present": False}
        fs, ref = found
        return {"present": freezer.wants_frozen(fs, ref), "frozen": freezer.is_frozen(fs, ref),
                "cgroup": ref.label(), "tasks": len(fs.procs(ref))}
