"""Kind ``nofile``: lower (or raise) the open-files limit of running processes."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from hostchaos.errors import (
    ConflictError,
    PreconditionError,
    RollbackError,
    SpecError,
    TargetNotFoundError,
)
from hostchaos.faults.base import Fault, Peer, Spec, require
from hostchaos.faults.cgroup_target import check_process, check_unit_and_container, need_root
from hostchaos.faults.options import option

if TYPE_CHECKING:
    from hostchaos.journal import UndoLog


@dataclasses.dataclass(frozen=True, kw_only=True)
class NofileSpec(Spec):
    """Set RLIMIT_NOFILE (soft, and optionally hard) of running processes."""

    pids: tuple[int, ...] = option("--pid", "A process.", default=(), multiple=True,
                                   metavar="PID")
    name: str | None = option("--name", "Every process with this name (comm or executable "
                              "basename).", default=None, metavar="NAME")
    unit: str | None = option("--unit", "Every process of a systemd unit.", default=None,
                              metavar="NAME")
    container: str | None = option("--container", "Every process of a running container.",
                                   default=None, metavar="NAME|ID")
    soft: int = option("--soft", "Soft limit: the process can hold at most N open "
                       "descriptors.", required=True, metavar="N")
    hard: int | None = option("--hard", "Hard limit (default: unchanged). Must be at least "
                              "--soft.", default=None, metavar="N")

    def __post_init__(self) -> None:

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
        check_unit_and_container(self.unit, self.container)
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
        return f"unit {self.unit}" if self.unit is not None else f"container {self.container}"


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

        need_root("nofile")
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
                check_process(pid)
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
