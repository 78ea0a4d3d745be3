"""Which processes a process fault (kill, stop, freeze) acts on, and which it never touches.

Targets: ``--pid`` (repeatable), ``--name`` (exact comm or executable name),
``--cmdline REGEX`` (searched in the command line joined by spaces),
``--unit``, ``--container`` or ``--cgroup`` (every process in that cgroup and
below); then ``--count N`` or ``--percent P`` keeps a random subset, the same
one for the same ``--seed``.

Never touched, whatever the selection says: PID 1, kernel threads, hostchaos
itself (CLI, the warden, the agent) and every ancestor of the process that
injects (its shell, sudo, terminal...), and the operator's SSH session (the
sshd process serving the command) with everything below it. An explicit
``--pid`` naming one of those is refused (exit 5, naming the reason); a
pattern simply skips them.

A process is identified by (pid, start time) in the record, and the record's
boot id says which boot that was: a PID that is reused later never matches.
"""

from __future__ import annotations

import dataclasses
import random
import re
from typing import Any

from hostchaos.errors import ConflictError, TargetNotFoundError
from hostchaos.faults.base import Spec, require
from hostchaos.faults.options import option
from hostchaos.system import procs

_SELECTORS = ("pids", "name", "cmdline", "unit", "container", "cgroup")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ProcessTargetSpec(Spec):
    """The processes a fault acts on (see the module docstring)."""

    pids: tuple[int, ...] = option("--pid", "A process id (repeatable).", metavar="PID",
                                   multiple=True, default=())
    name: str | None = option("--name", "Every process with exactly this name (comm, or the "
                              "executable's name).", metavar="NAME", default=None)
    cmdline: str | None = option("--cmdline", "Every process whose command line matches this "
                                 "regular expression.", metavar="REGEX", default=None)
    unit: str | None = option("--unit", "Every process of this systemd unit.", metavar="UNIT",
                              default=None)
    container: str | None = option("--container", "Every process of this container.",
                                   metavar="NAME|ID", default=None)
    cgroup: str | None = option("--cgroup", "Every process in this cgroup and below.",
                                metavar="PATH", default=None)
    count: int | None = option("--count", "Pick N of the matching processes at random.",
                               metavar="N", default=None)
    percent: float | None = option("--percent", "Pick this share of the matching processes "
                                   "at random (at least one).", metavar="P", default=None)
    seed: int | None = option("--seed", "Seed for --count/--percent, to pick the same "
                              "processes again.", metavar="N", default=None)
    #: filled in at inject: the (pid, start time) pairs picked
    chosen: tuple[tuple[int, int], ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "pids", tuple(self.pids))
        object.__setattr__(self, "chosen", tuple(tuple(c) for c in self.chosen))
        given = [n for n in _SELECTORS if getattr(self, n)]
        require(len(given) == 1, "give exactly one target: --pid (repeatable), --name, "
                "--cmdline, --unit, --container or --cgroup"
                + (f" (got {', '.join('--' + g.rstrip('s') for g in given)})" if given else ""))
        for pid in self.pids:
            require(isinstance(pid, int) and pid > 0,
                    f"--pid must be a positive process id, got {pid}")
        if self.cmdline is not None:
            try:
                re.compile(self.cmdline)
            except re.error as exc:
                require(False, f"--cmdline {self.cmdline!r} is not a regular expression: {exc}")
        if self.name is not None:
            require(0 < len(self.name) <= 255 and "/" not in self.name,
                    f"--name {self.name!r} is not a process name")
        require(self.count is None or self.percent is None, "give --count or --percent, not both")
        if self.count is not None:
            require(self.count > 0, f"--count must be 1 or more, got {self.count}")
        if self.percent is not None:
            require(0 < self.percent <= 100, f"--percent must be above 0 and at most 100, "
                    f"got {self.percent:g}")

    def target_label(self) -> str:
        if self.pids:
            what = ("pid " if len(self.pids) == 1 else "pids ") + ",".join(map(str, self.pids))
        elif self.name is not None:
            what = f"processes named {self.name}"
        elif self.cmdline is not None:
            what = f"processes matching /{self.cmdline}/"
        elif self.unit is not None:
            what = f"processes of unit {self.unit}"
        elif self.container is not None:
            what = f"processes of container {self.container}"
        else:
            what = f"processes in cgroup {self.cgroup}"
        if self.count is not None:
            return f"{self.count} random {what}"
        if self.percent is not None:
            return f"{self.percent:g}% of {what}"
        return what


def protected() -> dict[int, str]:
    """PID -> why it is never a target, for the processes that protection is about now."""
    from hostchaos.system import caller

    out = {1: "PID 1 (init) is protected"}
    # this process and, in the agent, the client that asked (its shell, its SSH session)
    for me in caller.pids():
        out.setdefault(me, "it is hostchaos itself")
        for pid in procs.ancestors(me):
            out.setdefault(pid, "it runs the hostchaos command (an ancestor of it)")
        session = procs.operator_session(me)
        if session is not None:
            out.setdefault(session, "it is the operator's SSH session")
            for pid in procs.descendants(session):
                out.setdefault(pid, "it belongs to the operator's SSH session")
    return out


def why_protected(pid: int, known: dict[int, str]) -> str | None:
    if pid in known:
        return f"process {pid}: {known[pid]}"
    return procs.protection(pid)


def candidates(spec: ProcessTargetSpec) -> list[int]:
    """The PIDs the selector names, before protection and the random subset."""
    if spec.pids:
        for pid in spec.pids:
            if not procs.exists(pid):
                raise TargetNotFoundError(f"process {pid} not found")
        return list(spec.pids)
    if spec.name is not None:
        return procs.find_by_name(spec.name)
    if spec.cmdline is not None:
        pattern = re.compile(spec.cmdline)
        return [p for p in procs.all_pids()
                if pattern.search(" ".join(procs.cmdline(p))) and procs.exists(p)]
    return _cgroup_members(spec)


def _cgroup_members(spec: ProcessTargetSpec) -> list[int]:
    from hostchaos.system.cgroups import Cgroups

    fs = Cgroups()
    hierarchy = fs.hierarchies[0] if fs.version == 2 else next(
        (h for c in ("name=systemd", "pids", "freezer", "memory", "cpu")
         if (h := fs.hierarchy_for(c)) is not None), None)
    if hierarchy is None:
        raise TargetNotFoundError("no cgroup hierarchy is mounted to find the processes in")
    from hostchaos.faults.cgroup_target import cgroup_named

    ref = cgroup_named(fs, hierarchy, container=spec.container, unit=spec.unit,
                       cgroup=spec.cgroup)
    if ref.is_root:
        raise ConflictError(f"{spec.target_label()} is the root cgroup: that is the whole host")
    return fs.subtree_procs(ref)


def choose(spec: ProcessTargetSpec) -> tuple[tuple[int, int], ...]:
    """(pid, start time) of the processes to act on: selected, unprotected, subset picked."""
    known = protected()
    picked = []
    for pid in candidates(spec):
        reason = why_protected(pid, known)
        if reason is not None:
            if spec.pids:
                raise ConflictError(f"{reason}; hostchaos never targets it")
            continue
        ticks = procs.start_ticks(pid)
        if ticks is not None:
            picked.append((pid, ticks))
    if not picked:
        raise TargetNotFoundError(f"no process matches {spec.target_label()} (PID 1, kernel "
                                  "threads, hostchaos, its callers and the operator's SSH "
                                  "session are never matched)")
    picked.sort()
    if spec.count is not None or spec.percent is not None:
        size = spec.count if spec.count is not None else \
            max(1, round(len(picked) * (spec.percent or 0) / 100))
        picked = sorted(random.Random(spec.seed).sample(picked, min(size, len(picked))))
    return tuple(picked)


def identities(chosen: Any) -> list[procs.ProcessRef]:
    return [procs.ProcessRef(int(pid), int(ticks)) for pid, ticks in chosen]
