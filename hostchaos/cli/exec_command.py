"""`hostchaos exec --clock-ready -- CMD ARGS`: start a program that clock faults can reach."""

from __future__ import annotations

import os
import time

import click

EXEC_HELP = """Start CMD so that later faults can reach it, then become CMD (same PID).

With --clock-ready, CMD starts with libfaketime preloaded, following a control
file of its own at offset 0 (its clock is the real one until a fault says
otherwise), with caching off (a change shows at its next clock call) and its
monotonic clock untouched (unless --monotonic). `hostchaos inject clock --pid
PID` then moves its clock live. Children CMD starts follow the same clock.

hostchaos exec replaces itself with CMD, so the PID you start (or systemd's
MainPID, in an ExecStart= line) is the clock-ready process. Static, setuid and
Go programs are refused: libfaketime cannot reach them.

\b
Examples:
  sudo hostchaos exec --clock-ready -- python3 -m http.server 8080 &
  sudo hostchaos inject clock --pid $! --offset +5m --for 2m
"""


@click.command(name="exec", help=EXEC_HELP, context_settings={"ignore_unknown_options": True})
@click.option("--clock-ready", is_flag=True, required=True,
              help="Preload libfaketime with a live control file at offset 0.")
@click.option("--monotonic", is_flag=True,
              help="Let clock faults move CMD's monotonic clock too (libfaketime then makes "
                   "it read as the faked wall clock from the start).")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def exec_command(clock_ready: bool, monotonic: bool, command: tuple[str, ...]) -> None:
    from hostchaos.errors import PreconditionError, SpecError, TargetNotFoundError
    from hostchaos.system import elf, faketime
    from hostchaos.system.procs import ProcessRef, boot_id

    if not clock_ready:
        raise SpecError("nothing to prepare: pass --clock-ready")
    program = command[0]
    import shutil

    path = program if "/" in program else shutil.which(program)
    if path is None or not os.path.isfile(path):
        raise TargetNotFoundError(f"command {program!r} not found (PATH={os.environ.get('PATH')})")
    problem = elf.preload_problem(path)
    if problem:
        raise PreconditionError(f"cannot make {program} clock-ready: {problem}")
    faketime.library()
    me = ProcessRef.current()  # exec keeps the pid and its start time: this is CMD's identity
    control = faketime.ClockControl(f"pid-{me.pid}-{me.start_ticks}")
    control.create()
    env = faketime.preload_environment(control, monotonic=monotonic, base=dict(os.environ))
    # libfaketime starts counting a --rate from its own start in CMD, right after execve
    control.register({"pid": me.pid, "start_ticks": me.start_ticks, "boot_id": boot_id(),
                      "started_at": time.time(), "argv": list(command), "monotonic": monotonic})
    try:
        os.execve(path, list(command), env)
    except OSError as exc:
        control.remove()
        raise PreconditionError(f"cannot start {program}: {exc.strerror}") from exc
