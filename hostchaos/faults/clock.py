"""Kind ``clock``: move one process's (or one service's) wall clock, live, through libfaketime."""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hostchaos.errors import (
    ApplyError,
    PreconditionError,
    SpecError,
    TargetNotFoundError,
)
from hostchaos.faults.base import Fault, Peer, Spec, require
from hostchaos.faults.cgroup_target import check_process, check_unit_and_container, need_root
from hostchaos.faults.options import option
from hostchaos.quantities import format_duration, parse_signed_duration

if TYPE_CHECKING:
    from hostchaos.journal import UndoLog

#: the largest offset accepted: a century either way (libfaketime's arithmetic is in seconds)
MAX_OFFSET = 100 * 365 * 86400.0
#: how far the canary may read from the clock it was asked for before the fault fails
CANARY_TOLERANCE = 0.5
DROPIN_NAME = "50-hostchaos-clock"
START_HINT = "start it with `hostchaos exec --clock-ready -- CMD ARGS`, or target its --unit"

LIMITS_HELP = """\b
What libfaketime can and cannot reach (the library is the libfaketime PyPI
package's vendored build (3.0.1), GPLv2, x86-64 only):
\b
  - only processes started with it preloaded: `hostchaos exec --clock-ready`
    or a --unit; children of such a process follow the same clock
  - not static, setuid/setgid or Go programs (refused with exit 3)
  - --monotonic: the library makes the monotonic clock read as the faked
    wall clock from the start; Python 3.11+ `time.sleep()` then hangs in that
    process (it sleeps to an absolute monotonic deadline the library
    mistranslates): use it for programs that sleep with relative timeouts
  - each clock-ready process tree keeps /dev/shm/faketime_shm_PID and
    sem.faketime_sem_PID (this build cannot turn shared memory off);
    `hostchaos sweep` removes those of registered processes that are gone
\b
The fault's own deadline is judged on CLOCK_BOOTTIME: no clock fault, NTP
step or `date -s` moves it."""


def _rate(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise SpecError(f"--rate {text!r} is not a number")
    return value


@dataclasses.dataclass(frozen=True, kw_only=True)
class ClockSpec(Spec):
    """Shift and/or speed up one clock-ready process's wall clock, or a systemd service's."""

    pid: int | None = option("--pid", "A process started with `hostchaos exec --clock-ready` "
                             "(or a child of one).", default=None, metavar="PID")
    unit: str | None = option("--unit", "A running systemd service: a runtime drop-in preloads "
                              "libfaketime, then the service is restarted once.", default=None,
                              metavar="NAME.service")
    offset: float = option("--offset", "Move the clock by this much at once: +5m, -90s, 1h30m, "
                           "or seconds.", default=0.0, parse=parse_signed_duration,
                           metavar="[+|-]DURATION")
    rate: float = option("--rate", "From now on the clock runs at this speed: 1.001 gains 1 ms "
                         "per second, 0.999 loses it.", default=1.0, parse=_rate,
                         metavar="FACTOR")
    monotonic: bool = option("--monotonic", "Also move the monotonic clock. Only for a process "
                             "started with `exec --clock-ready --monotonic` (its monotonic clock "
                             "then reads as its wall clock); --unit sets the service up so.",
                             default=False)
    restart_on_rollback: bool = option("--restart-on-rollback", "--unit only: restart the service "
                                       "again on rollback, so it runs without the preload. "
                                       "Default: no second restart (the offset is back to 0 at "
                                       "once without one).", default=False)

    def __post_init__(self) -> None:
        require((self.pid is None) != (self.unit is None), "give exactly one target: --pid or "
                "--unit")
        if self.pid is not None:
            require(isinstance(self.pid, int) and self.pid > 0,
                    f"--pid must be a positive process id, got {self.pid}")
        check_unit_and_container(self.unit, None)
        if self.unit is not None:
            require(self.unit.endswith(".service"),
                    f"--unit {self.unit}: only services (NAME.service) run a process to preload")
        require(isinstance(self.offset, int | float) and math.isfinite(self.offset)
                and abs(self.offset) <= MAX_OFFSET,
                f"--offset {self.offset} is beyond a century either way")
        require(isinstance(self.rate, int | float) and 0.001 <= self.rate <= 1000,
                f"--rate {self.rate} must be between 0.001 and 1000 (1 is the real speed)")
        require(self.offset != 0 or self.rate != 1, "nothing to do: give --offset and/or a "
                "--rate other than 1")
        require(not self.restart_on_rollback or self.unit is not None,
                "--restart-on-rollback goes with --unit")

    def target_label(self) -> str:
        return f"pid {self.pid}" if self.pid is not None else f"unit {self.unit}"

    @property
    def token(self) -> str:
        """The name of the control file a --unit target follows (a --pid's is in its env)."""
        return f"unit-{self.unit}"


class ClockFault(Fault):
    """Move a process's wall clock by an offset and/or make it run fast or slow, live.

    Mechanism: libfaketime (the ``libfaketime`` PyPI package's
    ``libfaketime.so.1``, x86-64, GPLv2) preloaded into the target reads a
    control file of its own on every clock call; the fault rewrites that
    file, so the process's ``time()``, ``gettimeofday()`` and
    ``clock_gettime(CLOCK_REALTIME)`` move at its next call, without a
    restart. A ``--pid`` must have been started clock-ready:
    ``hostchaos exec --clock-ready -- CMD`` starts CMD preloaded, at offset 0,
    with its monotonic clock untouched (``--monotonic`` there makes it follow
    the wall clock). A ``--unit`` gets a runtime drop-in under
    ``/run/systemd/system/NAME.service.d/`` that preloads the library, and one
    restart. ``--rate`` keeps the clock continuous: it reads the same the
    moment the fault starts and then runs at the new speed. Before inject
    returns, a canary program started the same way reads the faked clock; if
    it is off, the fault fails and is rolled back. Static, setuid and Go
    programs are refused (libfaketime cannot reach them). The deadline itself
    is judged on CLOCK_BOOTTIME, which no clock fault moves.

    Rollback: writes the control file back to the real clock (offset 0, rate
    1) at once; the process keeps running. For a ``--unit``, the drop-in is
    then removed and systemd reloaded; the service is restarted again only
    with ``--restart-on-rollback`` (by default not: its clock is already
    real, and a second restart is a second outage nobody asked for; it loses
    the preload at its next restart). Does not survive a reboot (the control
    files and drop-in live under /run).

    Example: ``sudo hostchaos inject clock --pid 4242 --offset +5m --for 2m``
    """

    spec_type = ClockSpec
    spec: ClockSpec
    needs = ("root", "libfaketime")
    help_epilog = LIMITS_HELP

    def __init__(self, spec: Spec) -> None:
        super().__init__(spec)
        self._token: str | None = None
        self._monotonic = False

    def describe(self) -> str:
        s = self.spec
        parts = []
        if s.offset:
            parts.append(f"move the clock {'forward' if s.offset > 0 else 'back'} by "
                         f"{format_duration(abs(s.offset))}")
        if s.rate != 1:
            parts.append(f"run it at {s.rate:g}x speed")
        what = " and ".join(parts)
        mono = " (monotonic clock too)" if s.monotonic else ""
        return f"{what} for {s.target_label()}{mono}"

    @classmethod
    def warm_up(cls) -> None:
        import hostchaos.system.faketime  # noqa: F401

    # -- target ---------------------------------------------------------------------------
    def resolve(self) -> None:
        need_root("clock")
        from hostchaos.system import faketime

        faketime.library()
        if self.spec.pid is not None:
            self._resolve_pid(self.spec.pid)
        else:
            self._resolve_unit(self.spec.unit or "")

    def _resolve_pid(self, pid: int) -> None:
        from hostchaos.system import elf, faketime

        check_process(pid)
        ready = faketime.clock_ready(pid)
        if ready is None:
            problem = elf.process_problem(pid)
            raise PreconditionError(f"process {pid} was not started clock-ready" +
                                    (f" ({problem})" if problem else f": {START_HINT}"))
        if not faketime.library_loaded(pid):
            problem = elf.process_problem(pid) or "the loader did not preload it"
            raise PreconditionError(f"libfaketime is not loaded in process {pid}: {problem}")
        problem = elf.process_problem(pid)
        if problem:
            raise PreconditionError(problem)
        self._check_monotonic(ready.monotonic, f"process {pid}")
        self._token = ready.control.token

    def _check_monotonic(self, follows: bool, what: str) -> None:
        if self.spec.monotonic and not follows:
            raise PreconditionError(
                f"{what} keeps its real monotonic clock (libfaketime fixes that at start): "
                "start it with `hostchaos exec --clock-ready --monotonic -- CMD` to fault it")
        if follows and not self.spec.monotonic:
            raise PreconditionError(
                f"{what} was started with --monotonic: its monotonic clock moves with every "
                "offset; add --monotonic to say so")

    def _resolve_unit(self, unit: str) -> None:
        from hostchaos.system import units

        state = units.show(unit, "LoadState", "ActiveState", "Type")
        if state.get("LoadState") != "loaded":
            raise TargetNotFoundError(f"unit {unit} not found (LoadState="
                                      f"{state.get('LoadState') or '?'})")
        if state.get("ActiveState") != "active":
            raise TargetNotFoundError(f"unit {unit} is not running (ActiveState="
                                      f"{state.get('ActiveState')}); start it first")
        self._token = self.spec.token
        self._monotonic = self.spec.monotonic

    def preflight(self) -> None:
        if self._token is None:
            self.resolve()

    def conflicts(self, peer: Peer) -> str | None:
        if self._token is None:
            return None
        for note in peer.notes:
            if note.get("step") == "clock" and note.get("token") == self._token:
                return f"the clock of {self.spec.target_label()}"
        return None

    # -- apply ----------------------------------------------------------------------------
    def apply(self, undo: UndoLog) -> None:
        from hostchaos.system import faketime

        assert self._token is not None
        control = faketime.ClockControl(self._token)
        if self.spec.unit is not None:
            self._prepare_unit(undo, control)
        started_at = self._started_at(control)
        now = time.time()
        written = faketime.control_text(
            faketime.continuous_offset(self.spec.offset, self.spec.rate, started_at, now),
            self.spec.rate)
        undo.note("clock", token=control.token, before=control.read().strip(),
                  started_at=started_at, written=written, at=now)
        control.write(written)
        self._check_canary(control, written)

    def _started_at(self, control: Any) -> float:
        """When libfaketime started in the target's process tree (the origin of its rate)."""
        from hostchaos.system import faketime

        registered = control.registration() or {}
        value = registered.get("started_at")
        if isinstance(value, int | float):
            return float(value)
        pid = self.spec.pid if self.spec.pid is not None else registered.get("pid")
        start = faketime.started_at(int(pid)) if isinstance(pid, int) else None
        if start is None:
            raise TargetNotFoundError(f"{self.spec.target_label()} is gone")
        return start

    def _check_canary(self, control: Any, written: str) -> None:
        from hostchaos.system import faketime

        expected, _ = faketime.parse_control(written) or (0.0, 1.0)
        seen = faketime.canary_offset(control, monotonic=self._monotonic)
        if abs(seen - expected) > CANARY_TOLERANCE:
            raise ApplyError(f"the clock change did not take: a canary started like "
                             f"{self.spec.target_label()} read an offset of {seen:+.3f} s, not "
                             f"{expected:+.3f} s")

    def _prepare_unit(self, undo: UndoLog, control: Any) -> None:
        from hostchaos.system import elf, faketime, units

        unit = self.spec.unit or ""
        undo.note("clock-control", token=control.token)
        control.create()
        env = faketime.preload_environment(control, monotonic=self.spec.monotonic, base={})
        current = units.show(unit, "Environment").get("Environment", "")
        theirs = [e.partition("=")[2] for e in current.split() if e.startswith("LD_PRELOAD=")]
        if theirs:
            env["LD_PRELOAD"] = ":".join([env["LD_PRELOAD"], *theirs])
        marker = f"# written by hostchaos for fault {undo.record.id}"
        lines = [marker, "# removed on rollback: `hostchaos rollback " + undo.record.id + "`",
                 "[Service]"]
        lines += [f'Environment="{key}={value}"' for key, value in sorted(env.items())]
        path = units.dropin_path(unit, DROPIN_NAME)
        if path.exists():
            raise ApplyError(f"{path} exists already: another tool's drop-in, or one a killed "
                             "hostchaos left (remove it, then `systemctl daemon-reload`)")
        undo.note("clock-dropin", unit=unit, path=str(path), marker=marker)
        units.write_dropin(path, "\n".join(lines) + "\n")
        units.daemon_reload()
        undo.note("clock-restart", unit=unit)
        units.restart(unit)
        main = int(units.show(unit, "MainPID").get("MainPID") or 0)
        if main <= 0:
            raise ApplyError(f"unit {unit} has no main process after its restart")
        if not _wait(lambda: faketime.library_loaded(main), 5.0):
            problem = elf.process_problem(main) or "the loader did not preload it"
            raise ApplyError(f"libfaketime is not loaded in {unit}'s main process {main}: "
                             f"{problem}")
        started = faketime.started_at(main)
        control.register({"unit": unit, "pid": main, "started_at": started})

    # -- rollback -------------------------------------------------------------------------
    def rollback(self, undo: UndoLog) -> None:
        from hostchaos.system import faketime, units

        for note in reversed(undo.steps("clock")):
            control = faketime.ClockControl(str(note["token"]))
            before = str(note.get("before") or "")
            if control.exists():
                control.write(before if faketime.parse_control(before) else faketime.NEUTRAL)
        for note in reversed(undo.steps("clock-dropin")):
            if units.remove_dropin(Path(str(note["path"])), str(note["marker"])):
                units.daemon_reload()
        restart = self.spec.restart_on_rollback if self.spec is not None else False
        if restart and undo.steps("clock-restart"):
            units.restart(str(undo.steps("clock-restart")[-1]["unit"]))

    def observe(self, undo: UndoLog) -> dict[str, Any]:
        from hostchaos.system import faketime

        notes = undo.steps("clock")
        if not notes:
            return {"present": False}
        note = notes[-1]
        control = faketime.ClockControl(str(note["token"]))
        if not control.exists():
            return {"present": False, "control": str(control.path)}
        text = control.read().strip()
        offset = faketime.offset_at(text, float(note["started_at"]), time.time())
        return {"present": text == note.get("written"), "control": str(control.path),
                "line": text, "offset_now_s": None if offset is None else round(offset, 3)}

    @classmethod
    def sweep_leftovers(cls, state_dir: Any, open_ids: set[str]) -> list[str]:
        """Remove control files no open fault and no live process uses, and the shared
        memory libfaketime left for clock-ready processes that are gone."""
        from hostchaos.system import faketime

        return faketime.sweep_controls()


def _wait(condition: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
