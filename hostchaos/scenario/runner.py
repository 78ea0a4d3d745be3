"""Play a scenario: steady state first, then the steps with probes watching, then recovery.

One run:

1. Every probe starts sampling. Nothing is injected until each probe that
   watches ``before`` has passed ``consecutive`` samples in a row (within
   ``steady-timeout``); otherwise the run is *aborted* with nothing changed.
2. The steps play in order. A fault is injected with a deadline a little
   past its ``for`` (never past the run's own deadline) and a short lease the
   runner keeps renewing, then rolled back by the runner at its ``for``. So a
   runner killed with ``kill -9`` leaves its faults for at most one lease
   (``settings: lease``, default 5s): the warden takes them out. A probe with
   ``abort: true`` that fails while a fault is active rolls everything back at
   once and ends the run; so do Ctrl-C and SIGTERM.
3. After the last fault, probes keep sampling until each has passed
   ``consecutive`` samples in a row (*recovered*) or ``recovery-timeout``
   passes (*deviated*).
"""

from __future__ import annotations

import random
import signal
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from hostchaos.errors import HostchaosError
from hostchaos.scenario.model import (
    FaultStep,
    ParallelStep,
    RandomStep,
    Scenario,
    Step,
    WaitStep,
    step_seconds,
)
from hostchaos.scenario.probes import Sampler, check_netns

TICK = 0.02
#: a fault's deadline is this far past its planned end: the runner's rollback comes first
DEADLINE_SLACK = 2.0


class Injector(Protocol):
    """What the runner needs from the engine (or the agent's client)."""

    def inject(self, spec: Any, duration: float | None = None,
               lease: float | None = None) -> Any: ...

    def extend(self, fault_id: str, duration: float | None = None) -> Any: ...

    def rollback(self, fault_id: str, reason: str = "requested") -> Any: ...


class Interrupted(Exception):
    """Ctrl-C or SIGTERM during a run (everything was rolled back)."""


@dataclass
class FaultRun:
    """One fault as it happened in a run (times in seconds since the run began)."""

    step: FaultStep
    id: str | None = None
    summary: str = ""
    #: when the runner asked for the fault (the kernel changed between this and applied_at)
    started_at: float | None = None
    applied_at: float | None = None
    planned_end: float = 0.0
    ended_at: float | None = None
    end: str = ""
    error: str | None = None

    @property
    def active(self) -> bool:
        return self.id is not None and self.ended_at is None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.step.kind, "summary": self.summary,
                "where": self.step.where, "for": self.step.duration,
                "started_at": _round(self.started_at), "applied_at": _round(self.applied_at),
                "ended_at": _round(self.ended_at),
                "end": self.end, "error": self.error}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


@dataclass
class RunResult:
    """What one run did and saw."""

    index: int
    seed: int
    outcome: str = "recovered"  # recovered | deviated | aborted | interrupted
    reason: str = ""
    started_wall: float = 0.0
    duration: float = 0.0
    faults: list[FaultRun] = field(default_factory=list)
    samplers: list[Sampler] = field(default_factory=list)
    last_fault_end: float | None = None


class Runner:
    """Plays a :class:`Scenario` against the host through an :class:`Injector`."""

    def __init__(self, scenario: Scenario, injector: Injector, *, seed: int) -> None:
        self.scenario = scenario
        self.injector = injector
        self.seed = seed

    def run(self, index: int = 0) -> RunResult:
        for probe in self.scenario.probes:
            check_netns(probe)
        result = RunResult(index=index, seed=self.seed + index, started_wall=time.time())
        self._rng = random.Random(result.seed)
        origin = time.monotonic()
        self._origin = origin
        self._renewed: dict[str, float] = {}
        self._deadline = float("inf")
        result.samplers = [Sampler(probe, origin) for probe in self.scenario.probes]
        for sampler in result.samplers:
            sampler.start()
        previous = signal.getsignal(signal.SIGTERM)
        if _main_thread():
            signal.signal(signal.SIGTERM, _raise_interrupt)
        try:
            self._play(result)
        except (KeyboardInterrupt, Interrupted):
            self._abort(result, "interrupted", "interrupted (Ctrl-C or SIGTERM): every fault "
                                               "was rolled back")
            raise Interrupted() from None
        finally:
            self._abort(result, result.outcome, result.reason)  # nothing stays, whatever happened
            for sampler in result.samplers:
                sampler.stop()
            for sampler in result.samplers:
                sampler.join(timeout=5 + sampler.probe.timeout)
            if _main_thread():
                signal.signal(signal.SIGTERM, previous)
            result.duration = time.monotonic() - origin
        return result

    def _now(self) -> float:
        return time.monotonic() - self._origin

    # -- phases ---------------------------------------------------------------------------
    def _play(self, result: RunResult) -> None:
        if not self._steady(result):
            return
        deadline = self._now() + sum(step_seconds(s) for s in self.scenario.steps) + \
            DEADLINE_SLACK
        self._deadline = deadline
        for step in self.scenario.steps:
            end = self._start(step, result)
            if result.outcome == "aborted":
                return
            if not self._hold(result, end):
                return
        result.last_fault_end = max((f.ended_at for f in result.faults if f.ended_at is not None),
                                    default=self._now())
        self._recover(result)

    def _steady(self, result: RunResult) -> bool:
        gate = [s for s in result.samplers if "before" in s.probe.phases]
        limit = self._now() + self.scenario.steady_timeout
        need = self.scenario.consecutive
        while True:
            problems = [s for s in gate if s.problem]
            if problems:
                result.outcome, result.reason = "aborted", (
                    f"probe {problems[0].probe.name} cannot run: {problems[0].problem}")
                return False
            if all(_passing_run(s.snapshot()) >= need for s in gate):
                return True
            if self._now() > limit:
                bad = next(s for s in gate if _passing_run(s.snapshot()) < need)
                last = bad.snapshot()[-1:]
                detail = f" (last: {last[0].detail})" if last else " (no sample)"
                result.outcome, result.reason = "aborted", (
                    f"steady state not met before any fault: probe {bad.probe.name} did not "
                    f"pass {need} samples in a row within "
                    f"{self.scenario.steady_timeout:g} s{detail}; nothing was injected")
                return False
            time.sleep(TICK)

    def _start(self, step: Step, result: RunResult) -> float:
        """Begin ``step``; return when (seconds since the run began) it ends."""
        if isinstance(step, WaitStep):
            return self._now() + step.seconds
        if isinstance(step, ParallelStep):
            ends = [self._start(child, result) for child in step.steps]
            return max(ends, default=self._now())
        if isinstance(step, RandomStep):
            return self._start(self._rng.choice(step.choices), result)
        return self._inject(step, result)

    def _inject(self, step: FaultStep, result: RunResult) -> float:
        fault = FaultRun(step)
        result.faults.append(fault)
        lease = min(self.scenario.lease, step.duration)
        duration = max(min(step.duration + DEADLINE_SLACK, self._deadline - self._now()),
                       step.duration)
        fault.started_at = self._now()
        try:
            record = self.injector.inject(step.spec, duration, lease)
        except HostchaosError as exc:
            fault.error = str(exc)
            result.outcome, result.reason = "aborted", (
                f"{step.where}: {step.kind} could not be injected: {exc}")
            return self._now()
        fault.id, fault.summary = record.id, record.summary or ""
        fault.applied_at = self._now()
        fault.planned_end = fault.applied_at + step.duration
        self._renewed[record.id] = time.monotonic()
        return fault.planned_end

    def _hold(self, result: RunResult, until: float) -> bool:
        """Keep faults alive and watched until ``until``; False if the run was aborted."""
        while True:
            now = self._now()
            for fault in result.faults:
                if fault.active and now >= fault.planned_end:
                    self._rollback(fault, "its for: elapsed (scenario)")
            if now >= until and not any(f.active for f in result.faults):
                return True
            failing = self._abort_probe(result)
            if failing:
                self._abort(result, "aborted", failing)
                return False
            self._renew(result)
            time.sleep(TICK)

    def _abort_probe(self, result: RunResult) -> str | None:
        active = [f for f in result.faults if f.active and f.applied_at is not None]
        if not active:
            return None
        since = min(f.applied_at for f in active if f.applied_at is not None)
        for sampler in result.samplers:
            if not sampler.probe.abort or "during" not in sampler.probe.phases:
                continue
            for sample in sampler.snapshot():
                if sample.t >= since and not sample.ok:
                    return (f"probe {sampler.probe.name} failed during the fault at "
                            f"{sample.t:.2f} s ({sample.detail}): abort: true rolled everything "
                            "back")
        return None

    def _renew(self, result: RunResult) -> None:
        lease = self.scenario.lease
        for fault in result.faults:
            every = min(lease, fault.step.duration) / 3
            if fault.active and fault.id is not None and \
                    time.monotonic() - self._renewed[fault.id] > every:
                try:
                    self.injector.extend(fault.id)
                    self._renewed[fault.id] = time.monotonic()
                except HostchaosError as exc:  # it ended under us (deadline, operator)
                    fault.ended_at, fault.end = self._now(), f"ended outside the run: {exc}"

    def _rollback(self, fault: FaultRun, reason: str) -> None:
        assert fault.id is not None
        try:
            self.injector.rollback(fault.id, reason)
            fault.end = reason
        except HostchaosError as exc:
            fault.error = str(exc)
            fault.end = f"rollback failed: {exc}"
        fault.ended_at = self._now()

    def _abort(self, result: RunResult, outcome: str, reason: str) -> None:
        for fault in result.faults:
            if fault.active:
                self._rollback(fault, f"run {outcome}: {reason}"[:200])
        result.outcome, result.reason = outcome, reason

    def _recover(self, result: RunResult) -> None:
        watch = [s for s in result.samplers if "after" in s.probe.phases]
        since = result.last_fault_end or self._now()
        limit = since + self.scenario.recovery_timeout
        need = self.scenario.consecutive
        while True:
            if all(_passing_run([x for x in s.snapshot() if x.t >= since]) >= need
                   for s in watch):
                result.outcome, result.reason = "recovered", (
                    f"every probe passed {need} samples in a row after the faults")
                return
            if self._now() > limit:
                bad = [s.probe.name for s in watch
                       if _passing_run([x for x in s.snapshot() if x.t >= since]) < need]
                result.outcome, result.reason = "deviated", (
                    f"not recovered within {self.scenario.recovery_timeout:g} s after the "
                    f"faults: {', '.join(bad)}")
                return
            time.sleep(TICK)


def _passing_run(samples: list[Any]) -> int:
    """How many samples at the end of ``samples`` passed in a row."""
    count = 0
    for sample in reversed(samples):
        if not sample.ok:
            break
        count += 1
    return count


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise Interrupted()
