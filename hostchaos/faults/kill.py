"""Kind ``kill``: signal processes once, or again and again (a chaos-monkey loop)."""

from __future__ import annotations

import dataclasses
import signal
import time
from typing import TYPE_CHECKING, Any

from hostchaos.errors import SpecError, TargetNotFoundError
from hostchaos.faults.base import Fault, require
from hostchaos.faults.options import option
from hostchaos.faults.process_targets import ProcessTargetSpec, choose, identities
from hostchaos.quantities import parse_duration

if TYPE_CHECKING:
    from hostchaos.journal import UndoLog


def signal_number(name: str) -> int:
    """``KILL``, ``SIGKILL``, ``kill`` or ``9`` -> 9."""
    text = name.strip().upper()
    try:
        return int(signal.Signals(int(text))) if text.isdigit() else \
            int(signal.Signals["SIG" + text.removeprefix("SIG")])
    except (KeyError, ValueError):
        raise SpecError(f"--signal {name!r} is not a signal (e.g. KILL, TERM, HUP, 9)") from None


@dataclasses.dataclass(frozen=True, kw_only=True)
class KillSpec(ProcessTargetSpec):
    """Send ``signal`` to the chosen processes; with ``interval``, again at every tick."""

    signal: str = option("--signal", "The signal: KILL, TERM, INT, HUP ... or its number.",
                         default="KILL", metavar="SIG")
    interval: float | None = option(
        "--interval", "Repeat every DURATION until the fault ends, choosing again each time "
        "(whatever matches then, e.g. a respawned service).", default=None,
        parse=lambda t: parse_duration(t, what="--interval"), metavar="DURATION")

    def __post_init__(self) -> None:
        super().__post_init__()
        signal_number(self.signal)
        if self.interval is not None:
            require(self.interval >= 0.1, "--interval must be at least 100ms")


class KillFault(Fault):
    """Kill processes (or send them another signal), once or at every --interval.

    Mechanism: each chosen process is noted in the record by identity (pid,
    start time, the time it was signalled) before its signal goes out through
    a pidfd checked against that identity, so a reused pid is never hit. With
    --interval the warden chooses again at every tick and signals
    whatever matches then, noting each kill. PID 1, kernel threads, hostchaos
    and its callers, and the operator's SSH session are never chosen.

    Rollback: nothing to give back: a killed process stays killed, and the
    record (`hostchaos status`) lists every process killed and when. Rollback
    ends the --interval loop. Not reversible; does not survive a reboot.

    Example: ``sudo hostchaos inject kill --name worker --interval 10s --for 5m``
    """

    spec_type = KillSpec
    spec: KillSpec

    def describe(self) -> str:
        every = f" every {self.spec.interval:g} s" if self.spec.interval else ""
        return (f"send SIG{signal.Signals(signal_number(self.spec.signal)).name[3:]} to "
                f"{self.spec.target_label()}{every} (not reversible)")

    def resolve(self) -> None:
        if not self.spec.chosen:
            self.spec = dataclasses.replace(self.spec, chosen=choose(self.spec))

    def apply(self, undo: UndoLog) -> None:
        if not self._signal(undo, self.spec.chosen):
            raise TargetNotFoundError(f"{self.spec.target_label()}: every chosen process "
                                      "exited before it could be signalled")

    def _signal(self, undo: UndoLog, chosen: Any) -> int:
        from hostchaos.system import procs

        number = signal_number(self.spec.signal)
        sent = 0
        for ref in identities(chosen):
            undo.note("kill", pid=ref.pid, start_ticks=ref.start_ticks, signal=number,
                      at=round(time.time(), 3))
            sent += procs.send_signal(ref, number)
        return sent

    def work(self, undo: UndoLog) -> float | None:
        if self.spec.interval is None:
            return None
        last = max((float(n.get("at", 0)) for n in undo.steps("kill")), default=0.0)
        due = last + self.spec.interval
        if time.time() < due:
            return due - time.time()
        try:
            chosen = choose(dataclasses.replace(self.spec, chosen=()))
        except TargetNotFoundError:
            chosen = ()  # nothing matches right now (a victim respawning): try next tick
        if not chosen:
            undo.note("kill", pid=None, start_ticks=None, at=round(time.time(), 3))
        self._signal(undo, chosen)
        return self.spec.interval

    def rollback(self, undo: UndoLog) -> None:
        return None  # a kill cannot be taken back; the record keeps what was killed

    def observe(self, undo: UndoLog) -> dict[str, Any]:
        kills = [{"pid": n["pid"], "start_ticks": n["start_ticks"], "at": n["at"]}
                 for n in undo.steps("kill") if n.get("pid") is not None]
        return {"present": self.spec.interval is not None, "kills": kills}
