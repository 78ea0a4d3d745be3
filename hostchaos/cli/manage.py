"""`list`, `status`, `extend`, `rollback` and `sweep`: the life of faults after inject."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import click

from hostchaos.cli.common import DURATION, json_option, make_engine
from hostchaos.errors import RollbackError, SpecError

if TYPE_CHECKING:
    from hostchaos.records import FaultRecord


@click.command(name="list")
@click.option("--all", "include_ended", is_flag=True, help="Also show ended faults.")
@json_option
def list_faults(include_ended: bool, as_json: bool) -> None:
    """List open faults (with --all, ended ones too)."""
    from hostchaos.cli.output import emit_json, record_summary, remaining, table

    records, unreadable = make_engine().listing(include_ended=include_ended)
    damaged = [{"id": bad.fault_id, "state": "unreadable", "path": str(bad.path),
                "problem": bad.problem} for bad in unreadable]
    if as_json:
        emit_json([record_summary(r) for r in records] + damaged)
        return
    if not records and not damaged:
        click.echo("no faults" if include_ended else "no open faults")
        return
    rows = []
    for record in records:
        summary = record_summary(record)
        state = record.state + (" (record damaged, read from its copy)" if record.salvaged
                                else "")
        rows.append([record.id, record.kind, state, summary["target"], remaining(record)])
    for bad in damaged:
        rows.append([bad["id"], "?", "UNREADABLE", bad["path"], "?"])
    click.echo(table(rows, ["ID", "KIND", "STATE", "TARGET", "LEFT"]))
    for record in records:
        for remark in record.remarks:
            click.echo(f"{record.id}: {remark}")
    for bad in damaged:
        click.echo(f"unreadable record {bad['path']}: {bad['problem']}; the host may still carry "
                   "its fault", err=True)


@click.command()
@click.argument("fault_id")
@json_option
def status(fault_id: str, as_json: bool) -> None:
    """Show one fault: its record and what the kernel says about it now."""
    from hostchaos.cli.output import emit_json, record_summary, remaining

    record, observed = make_engine().status(fault_id)
    summary = record_summary(record)
    summary["observed"] = observed
    summary["events"] = record.events
    if as_json:
        emit_json(summary)
        return
    click.echo(f"{record.id}  {record.kind}  {record.state}")
    click.echo(f"  target:   {summary['target']}")
    click.echo(f"  spec:     {record.spec}")
    click.echo(f"  expires:  {summary['expires_at']} ({remaining(record)} left)")
    if record.lease_seconds:
        click.echo(f"  lease:    {record.lease_seconds:g}s, renew by {summary['lease_expires_at']}")
    if record.holder:
        alive = "alive" if record.holder.alive() else "gone"
        click.echo(f"  warden:   pid {record.holder.pid} ({alive})")
    if record.error:
        click.echo(f"  error:    {record.error}")
    if record.end_reason:
        click.echo(f"  ended:    {summary['ended_at']} ({record.end_reason})")
    for remark in record.remarks:
        click.echo(f"  remark:   {remark}")
    if observed:
        click.echo(f"  kernel:   {observed}")


@click.command()
@click.argument("fault_id")
@click.option("--for", "duration", type=DURATION, default=None, metavar="DURATION",
              help="Move the deadline to now + DURATION (within max_duration of the start).")
@json_option
def extend(fault_id: str, duration: float | None, as_json: bool) -> None:
    """Renew a fault's lease, and with --for move its deadline."""
    from hostchaos.cli.output import clock_time, emit_json, record_summary

    record = make_engine().extend(fault_id, duration)
    if as_json:
        emit_json(record_summary(record))
        return
    line = f"{record.id} until {clock_time(record.expires_at)}"
    if record.lease_expires_at:
        line += f", lease renewed until {clock_time(record.lease_expires_at)}"
    click.echo(line)


@click.command()
@click.argument("fault_id", required=False)
@click.option("--all", "everything", is_flag=True, help="Roll back every open fault.")
@json_option
def rollback(fault_id: str | None, everything: bool, as_json: bool) -> None:
    """Take a fault (or --all faults) out of the host. Idempotent."""
    from hostchaos.cli.output import emit_json, record_summary

    if bool(fault_id) == everything:
        raise SpecError("give exactly one of: a fault id, or --all")
    engine = make_engine()
    if fault_id:
        record = engine.rollback(fault_id)
        if as_json:
            emit_json(record_summary(record))
        else:
            _echo_ended(record)
        return
    done, errors = engine.rollback_all()
    if as_json:
        emit_json({"rolled_back": [r.id for r in done], "errors": errors})
    else:
        for record in done:
            _echo_ended(record)
        if not done and not errors:
            click.echo("no open faults")
    if errors:
        raise RollbackError("; ".join(errors))


def _echo_ended(record: FaultRecord) -> None:
    click.echo(f"{record.id} {record.state}")
    for remark in record.remarks:
        click.echo(f"  remark: {remark}")


@click.command()
@json_option
def sweep(as_json: bool) -> None:
    """Roll back faults whose deadline or lease passed or whose warden is gone.

    Also closes records that a reboot already undid. A damaged record is
    rolled back from its copy; one that cannot be read at all is reported
    (exit 7) and left in place for an operator. Run at boot and every minute
    by hostchaos-sweep.timer.
    """
    from hostchaos.cli.output import emit_json

    started = time.monotonic()
    report = make_engine(revive=False).sweep()
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
