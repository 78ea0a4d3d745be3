"""What a scenario is once its file has been read and checked: steps, probes, settings.

Nothing here touches the host. :mod:`hostchaos.scenario.loader` builds these
from YAML (with the file and line of every value, for errors);
:mod:`hostchaos.scenario.runner` plays them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hostchaos.faults.base import Spec

PHASES = ("before", "during", "after")


@dataclass(frozen=True)
class FaultStep:
    """Inject one fault, hold it for ``duration``, roll it back (its deadline backs that up)."""

    kind: str
    spec: Spec
    duration: float
    where: str  # file:line, for messages
    options: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        from hostchaos.faults import fault_class

        return fault_class(self.kind)(self.spec).describe()


@dataclass(frozen=True)
class WaitStep:
    """Do nothing (probes keep sampling) for ``seconds``."""

    seconds: float
    where: str


@dataclass(frozen=True)
class ParallelStep:
    """Start every step at once; the group ends when the last one has."""

    steps: tuple[Step, ...]
    where: str


@dataclass(frozen=True)
class RandomStep:
    """Play one of ``choices``, picked by the run's seeded random generator."""

    choices: tuple[Step, ...]
    where: str


Step = FaultStep | WaitStep | ParallelStep | RandomStep


@dataclass(frozen=True)
class Probe:
    """One check of the system's health, sampled before, during and after the faults.

    ``kind`` is ``command``, ``http``, ``tcp`` or ``process``; ``settings`` holds
    that kind's checked settings (see :mod:`hostchaos.scenario.probes`).
    """

    name: str
    kind: str
    settings: dict[str, Any]
    every: float = 0.5
    timeout: float = 2.0
    phases: tuple[str, ...] = PHASES
    #: a failing sample while faults are active rolls everything back and ends the run
    abort: bool = False
    netns: str | None = None
    where: str = ""


@dataclass(frozen=True)
class Scenario:
    """A scenario file, checked: its probes, its steps and how recovery is judged."""

    name: str
    path: str
    description: str
    probes: tuple[Probe, ...]
    steps: tuple[Step, ...]
    #: consecutive passing samples that count as steady (before) or recovered (after)
    consecutive: int = 3
    #: how long to wait for the steady state before anything is injected
    steady_timeout: float = 30.0
    #: how long after the last fault ends probes may take to recover
    recovery_timeout: float = 30.0
    #: leases the runner keeps renewing: a killed runner's faults end this long after it
    lease: float = 5.0

    def faults(self) -> list[FaultStep]:
        """Every fault step, in order, through groups and random choices."""
        out: list[FaultStep] = []

        def walk(steps: tuple[Step, ...]) -> None:
            for step in steps:
                if isinstance(step, FaultStep):
                    out.append(step)
                elif isinstance(step, ParallelStep):
                    walk(step.steps)
                elif isinstance(step, RandomStep):
                    walk(step.choices)

        walk(self.steps)
        return out


def step_seconds(step: Step) -> float:
    """How long a step takes at most (a random choice: its longest choice)."""
    if isinstance(step, FaultStep):
        return step.duration
    if isinstance(step, WaitStep):
        return step.seconds
    if isinstance(step, ParallelStep):
        return max((step_seconds(s) for s in step.steps), default=0.0)
    return max((step_seconds(s) for s in step.choices), default=0.0)
