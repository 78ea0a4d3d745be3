"""`list`, `status`, `extend`, `rollback` and `sweep`: the life of faults after inject."""

from __future__ import annotations

import time
from typing import Any

import click

from hostchaos.backend import make_engine
from hostchaos.cli.common import DURATION, json_option
from hostchaos.errors import RollbackError, SpecError


@click.command(name="list")
@click.option("--all", "include_ended", is_flag=True, help="Also show ended faults.")
@json_option
def list_faults(include_ended: bool, as_json: bool) -> None:
    """List open faults (with --all, ended ones too)."""
    from hostchaos.backend import get_backend
    from hostchaos.cli.output import emit_json, printable, remaining, table

    found = get_backend().listing(include_ended)
    views, damaged = found["faults"], found["unreadable"]
    if as_json:
        emit_json([printable(v) for v in views] + damaged)
        return
    if not views and not damaged:
        click.echo("no faults" if include_ended else "no open faults")
        return
    rows = []
    for view in views:
        state = view["state"] + (" (record damaged, read from its copy)" if view["salvaged"]
                                 else "")
        rows.append([view["id"], view["kind"], state, view["target"], remaining(view)])
    for bad in damaged:
        rows.append([bad["id"], "?", "UNREADABLE", bad["path"], "?"])
    click.echo(table(rows, ["ID", "KIND", "STATE", "TARGET", "LEFT"]))
    for view in views:
        for remark in view["remarks"]:
            click.echo(f"{view['id']}: {remark}")
    for bad in damaged:
        click.echo(f"unreadable record {bad['path']}: {bad['problem']}; the host may still carry "
                   "its fault", err=True)


@click.command()
@click.argument("fault_id")
@json_option
def status(fault_id: str, as_json: bool) -> None:
    """Show one fault: its record and what the kernel says about it now."""
    from hostchaos.backend import get_backend
    from hostchaos.cli.output import emit_json, printable, remaining

    view = get_backend().status(fault_id)
    if as_json:
        emit_json(printable(view))
        return
    click.echo(f"{view['id']}  {view['kind']}  {view['state']}")
    click.echo(f"  target:   {view['target']}")
    click.echo(f"  spec:     {view['spec']}")
    click.echo(f"  expires:  {view['expires_at']} ({remaining(view)} left)")
    if view["lease_seconds"]:
        click.echo(f"  lease:    {view['lease_seconds']:g}s, renew by {view['lease_expires_at']}")
    if view["holder_pid"]:
        alive = "alive" if view["holder_alive"] else "gone"
        click.echo(f"  warden:   pid {view['holder_pid']} ({alive})")
    if view["error"]:
        click.echo(f"  error:    {view['error']}")
    if view["end_reason"]:
        click.echo(f"  ended:    {view['ended_at']} ({view['end_reason']})")
    for remark in view["remarks"]:
        click.echo(f"  remark:   {remark}")
    if view["observed"]:
        click.echo(f"  kernel:   {view['observed']}")


@click.command()
@click.argument("fault_id")
@click.option("--for", "duration", type=DURATION, default=None, metavar="DURATION",
              help="Move the deadline to now + DURATION (within max_duration of the start).")
@json_option
def extend(fault_id: str, duration: float | None, as_json: bool) -> None:
    """Renew a fault's lease, and with --for move its deadline."""
    from hostchaos.backend import get_backend
    from hostchaos.cli.output import emit_json
    from hostchaos.rendering import extended_line, printable

    view = get_backend().extend(fault_id, duration)
    if as_json:
        emit_json(printable(view))
        return
    click.echo(extended_line(view))


@click.command()
@click.argument("fault_id", required=False)
@click.option("--all", "everything", is_flag=True, help="Roll back every open fault.")
@json_option
def rollback(fault_id: str | None, everything: bool, as_json: bool) -> None:
    """Take a fault (or --all faults) out of the host. Idempotent."""
    from hostchaos.backend import get_backend
    from hostchaos.cli.output import emit_json, printable

    if bool(fault_id) == everything:
        raise SpecError("give exactly one of: a fault id, or --all")
    backend = get_backend()
    if fault_id:
        view = backend.rollback(fault_id)
        if as_json:
            emit_json(printable(view))
        else:
            _echo_ended(view)
        return
    result = backend.rollback_all()
    done, errors = result["rolled_back"], result["errors"]
    if as_json:
        emit_json({"rolled_back": [v["id"] for v in done], "errors": errors})
    else:
        for view in done:
            _echo_ended(view)
        if not done and not errors:
            click.echo("no open faults")
    if errors:
        raise RollbackError("; ".join(errors))


def _echo_ended(view: dict[str, Any]) -> None:
    from hostchaos.rendering import ended_lines

    for line in ended_lines(view):
        click.echo(line)


@click.command()
@click.option("--revive", is_flag=True,
              help="Hand faults whose warden is gone to a new warden, which ends each at "
                   "its own deadline, instead of rolling them back now. Used by "
                   "hostchaos-sweep.service: a sweep that runs while the agent restarts "
                   "must not cut its faults short. If no warden can start, they are "
                   "rolled back as without it.")
@json_option
def sweep(revive: bool, as_json: bool) -> None:
    """Roll back faults whose deadline or lease passed or whose warden is gone.

    Also closes records that a reboot already undid. A damaged record is
    rolled back from its copy; one that cannot be read at all is reported
    (exit 7) and left in place for an operator. Run at boot and every minute
    by hostchaos-sweep.timer (with --revive).
    """
    from hostchaos.cli.output import emit_json
    from hostchaos.errors import HostchaosError

    started = time.monotonic()
    engine = make_engine(revive=False)
    report = engine.sweep(orphans=not revive)
    if revive and report.still_active:
        try:
            engine.revive_warden()
        except HostchaosError as exc:  # nobody would guard them: end them now
            click.echo(f"hostchaos: warning: {exc}; rolling back the faults it would hold",
                       err=True)
            again = engine.sweep()
            report.rolled_back += again.rolled_back
            report.failed += again.failed
            report.still_active = again.still_active
    data = report.to_dict()
    data["seconds"] = round(time.monotonic() - started, 3)
    if as_json:
        emit_json(data)
    else:
        for item in report.rolled_back:
            click.echo(f"rolled back {item['id']}: {item['reason']}")
        for fault_id in report.closed_by_reboot:
            click.echo(f"closed {fault_id}: the reboot removed it")
        for path in report.leftovers:
            click.echo(f"removed {path}: its fault is closed")
        for item in report.failed:
            click.echo(f"FAILED {item['id']}: {item['error']}", err=True)
        click.echo(f"sweep: {len(report.rolled_back)} rolled back, "
                   f"{len(report.still_active)} still active, {len(report.failed)} failed")
    if report.failed:
        raise RollbackError(f"{len(report.failed)} fault(s) could not be rolled back")


COMMANDS = [list_faults, status, extend, rollback, sweep]
