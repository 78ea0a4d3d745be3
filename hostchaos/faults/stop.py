"""Kind ``stop``: pause processes with SIGSTOP, continue them on rollback."""

from __future__ import annotations

import dataclasses
import signal
from typing import TYPE_CHECKING, Any

from hostchaos.errors import RollbackError, TargetNotFoundError
from hostchaos.faults.base import Fault, Peer
from hostchaos.faults.process_targets import ProcessTargetSpec, choose, identities

if TYPE_CHECKING:
    from hostchaos.journal import UndoLog


@dataclasses.dataclass(frozen=True, kw_only=True)
class StopSpec(ProcessTargetSpec):
    """Stop the chosen processes."""


class StopFault(Fault):
    """Pause processes (SIGSTOP); rollback lets them run again (SIGCONT).

    Mechanism: the chosen processes are written to the record by identity
    (pid and start time) before any is signalled; each gets SIGSTOP through a
    pidfd opened and checked against that identity, so a pid reused by
    another process is never hit. A stopped process holds its memory, sockets
    and locks but runs no code: peers see timeouts, not resets. PID 1, kernel
    threads, hostchaos and its callers, and the operator's SSH session are
    never chosen (an explicit --pid naming one exits 5).

    Rollback: SIGCONT to exactly the identities that were stopped; one that
    exited, or whose pid now belongs to another process, is left alone. Does
    not survive a reboot.

    Example: ``sudo hostchaos inject stop --name nginx --count 1 --for 30s``
    """

    spec_type = StopSpec
    spec: StopSpec

    def describe(self) -> str:
        chosen = f" ({len(self.spec.chosen)} processes)" if len(self.spec.chosen) > 1 else ""
        return f"stop (SIGSTOP) {self.spec.target_label()}{chosen}"

    def resolve(self) -> None:
        if not self.spec.chosen:
            self.spec = dataclasses.replace(self.spec, chosen=choose(self.spec))

    def conflicts(self, peer: Peer) -> str | None:
        mine = {tuple(c) for c in self.spec.chosen}
        for note in peer.notes:
            if note.get("step") == "stop" and (note.get("pid"), note.get("start_ticks")) in mine:
                return f"process {note['pid']} (stopped)"
        return None

    def apply(self, undo: UndoLog) -> None:
        from hostchaos.system import procs

        stopped = 0
        for ref in identities(self.spec.chosen):
            undo.note("stop", pid=ref.pid, start_ticks=ref.start_ticks)
            stopped += procs.send_signal(ref, signal.SIGSTOP)
        if not stopped:
            raise TargetNotFoundError(f"{self.spec.target_label()}: every chosen process "
                                      "exited before it could be stopped")

    def rollback(self, undo: UndoLog) -> None:
        from hostchaos.system import procs

        problems = []
        for note in undo.steps("stop"):
            ref = procs.ProcessRef(int(note["pid"]), int(note["start_ticks"]))
            try:
                procs.send_signal(ref, signal.SIGCONT)
            except OSError as exc:
                problems.append(f"process {ref.pid}: {exc.strerror}")
        if problems:
            raise RollbackError("SIGCONT failed: " + "; ".join(problems))

    def observe(self, undo: UndoLog) -> dict[str, Any]:
        from hostchaos.system import procs

        out = []
        for note in undo.steps("stop"):
            ref = procs.ProcessRef(int(note["pid"]), int(note["start_ticks"]))
            alive = ref.alive()
            out.append({"pid": ref.pid, "alive": alive,
                        "state": procs.state_letter(ref.pid) if alive else None})
        return {"present": any(p["state"] == "T" for p in out), "processes": out}
