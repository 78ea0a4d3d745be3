"""`hostchaos inject KIND ...`: apply one fault with a deadline."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from typing import Any, TypeVar

import click

from hostchaos.cli.common import DURATION

F = TypeVar("F", bound=Callable[..., Any])

TIMING_HELP = """\b
Every fault ends: at --for (default 60s, capped by max_duration in
/etc/hostchaos/config.toml, default 1h), or earlier when a --lease is not
renewed with `hostchaos extend ID`. The warden (one for all faults: a
detached process, or a thread of the agent with a sentinel beside it)
enforces this even if this command is killed."""


class InjectGroup(click.Group):
    """`hostchaos inject`: one command per registered kind, made when first asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        from hostchaos.faults import KINDS

        return [*KINDS, *(name for name in self.commands if name not in KINDS)]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        from hostchaos.faults import KINDS, fault_class

        command = super().get_command(ctx, cmd_name)
        if command is not None or cmd_name not in KINDS:
            return command
        from hostchaos.cli.kind_command import kind_command

        return kind_command(cmd_name, fault_class(cmd_name), run_kind, timing_params(),
                            epilog=TIMING_HELP)


@click.group(cls=InjectGroup, epilog=TIMING_HELP)
def inject() -> None:
    """Apply a fault. Prints the fault id; `hostchaos rollback ID` takes it out."""


def timing_params() -> list[click.Parameter]:
    """The options every kind shares: when the fault ends, and how the result is shown."""
    return [
        click.Option(["--for", "duration"], type=DURATION, default=None, metavar="DURATION",
                     help="How long the fault lasts (30s, 5m, 1h; default 60s)."),
        click.Option(["--lease"], type=DURATION, default=None, metavar="DURATION",
                     help="Roll back unless renewed (`hostchaos extend ID`) within this long."),
        click.Option(["--wait"], is_flag=True,
                     help="Stay in the foreground renewing the lease until the deadline or "
                          "Ctrl-C/SIGTERM, then roll back."),
        click.Option(["--dry-run"], is_flag=True,
                     help="Check everything and print the plan; change nothing."),
        click.Option(["--json", "as_json"], is_flag=True,
                     help="Print machine-readable JSON on stdout."),
    ]


def run_kind(kind: str, fault_class: type[Any], given: dict[str, Any]) -> None:
    """A generated `inject <kind>` command: options -> spec -> engine or agent -> output."""
    from hostchaos.faults.from_options import spec_from_options
    from hostchaos.faults.options import options_from_click

    timing = {k: given.pop(k) for k in ("duration", "lease", "wait", "dry_run", "as_json")}
    options = options_from_click(fault_class.spec_type, given)
    spec_from_options(kind, options)  # bad input fails here, before the agent is asked
    run_inject(kind, options, **timing)


def timing_options(func: F) -> F:
    params = func.__dict__.setdefault("__click_params__", [])
    params.extend(reversed(timing_params()))  # click reads decorator params bottom-up
    return func


class _Terminated(Exception):
    pass


def run_inject(kind: str, options: dict[str, Any], duration: float | None,
               lease: float | None, wait: bool, dry_run: bool, as_json: bool) -> None:
    from hostchaos.backend import get_backend
    from hostchaos.cli.output import emit_json
    from hostchaos.rendering import injected_lines, plan_line, printable

    backend = get_backend()
    if dry_run:
        plan = backend.plan(kind, options, duration, lease)
        if as_json:
            emit_json(plan)
        else:
            click.echo(plan_line(plan, lease))
        return
    view = backend.inject(kind, options, duration, lease)
    if as_json:
        emit_json(printable(view))
    else:
        out, err = injected_lines(view)
        click.echo(out)
        click.echo(err, err=True)
    if wait:
        _wait_and_rollback(backend, view["id"])


def _wait_and_rollback(backend: Any, fault_id: str) -> None:
    from hostchaos.cli.output import is_open
    from hostchaos.errors import ConflictError, TargetNotFoundError

    def on_term(signum: int, frame: Any) -> None:
        raise _Terminated()

    previous = signal.signal(signal.SIGTERM, on_term)
    reason = "deadline reached (--wait)"
    code = 0
    try:
        while True:
            view = backend.peek(fault_id)
            if not is_open(view):
                return
            left = view.get("seconds_left")  # the deadline clock: no clock fault moves it
            if left is None or left <= 0:
                break
            lease = view["lease_seconds"]
            step = lease / 3 if lease else 1.0
            time.sleep(max(0.05, min(step, left)))
            if lease:
                try:
                    backend.extend(fault_id, None)
                except (ConflictError, TargetNotFoundError):
                    return
    except (KeyboardInterrupt, _Terminated):
        reason, code = "interrupted while waiting (--wait)", 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    backend.rollback(fault_id, reason)
    click.echo(f"rolled back {fault_id}: {reason}", err=True)
    if code:
        raise click.exceptions.Exit(code)
