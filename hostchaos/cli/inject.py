"""`hostchaos inject KIND ...`: apply one fault with a deadline."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from typing import Any, TypeVar

import click

from hostchaos.cli.common import DURATION, json_option, make_engine

F = TypeVar("F", bound=Callable[..., Any])

TIMING_HELP = """\b
Every fault ends: at --for (default 60s, capped by max_duration in
/etc/hostchaos/config.toml, default 1h), or earlier when a --lease is not
renewed with `hostchaos extend ID`. A detached guardian process enforces
this even if this command is killed."""


@click.group(epilog=TIMING_HELP)
def inject() -> None:
    """Apply a fault. Prints the fault id; `hostchaos rollback ID` takes it out."""


def timing_options(func: F) -> F:
    options = [
        click.option("--for", "duration", type=DURATION, default=None, metavar="DURATION",
                     help="How long the fault lasts (30s, 5m, 1h; default 60s)."),
        click.option("--lease", type=DURATION, default=None, metavar="DURATION",
                     help="Roll back unless renewed (`hostchaos extend ID`) within this long."),
        click.option("--wait", is_flag=True,
                     help="Stay in the foreground renewing the lease until the deadline or "
                          "Ctrl-C/SIGTERM, then roll back."),
        click.option("--dry-run", is_flag=True,
                     help="Check everything and print the plan; change nothing."),
        json_option,
    ]
    for option in reversed(options):
        func = option(func)
    return func


def network_target_options(func: F) -> F:
    options = [
        click.option("--iface", required=True, metavar="NAME",
                     help="Interface whose outgoing traffic is affected."),
        click.option("--netns", default=None, metavar="NAME",
                     help="Named network namespace (see `ip netns list`) holding --iface."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


class _Terminated(Exception):
    pass


def run_inject(spec_factory: Callable[[], Any], duration: float | None, lease: float | None,
               wait: bool, dry_run: bool, as_json: bool) -> None:
    from hostchaos.cli.output import clock_time, emit_json, record_summary
    from hostchaos.durations import format_duration

    spec = spec_factory()
    engine = make_engine()
    if dry_run:
        plan = engine.plan(spec, duration, lease)
        if as_json:
            emit_json(plan)
        else:
            click.echo(f"would {plan['plan']} for {format_duration(plan['duration'])}"
                       + (f" (lease {format_duration(lease)})" if lease else "")
                       + "; nothing was changed")
        return
    record = engine.inject(spec, duration, lease)
    if as_json:
        emit_json(record_summary(record))
    else:
        click.echo(record.id)
        click.echo(f"{record.kind}: {engine.fault_factory(record.kind, record.spec).describe()}, "
                   f"until {clock_time(record.expires_at)}; "
                   f"roll back with: hostchaos rollback {record.id}", err=True)
    if wait:
        _wait_and_rollback(engine, record.id)


def _wait_and_rollback(engine: Any, fault_id: str) -> None:
    from hostchaos.errors import ConflictError, TargetNotFoundError

    def on_term(signum: int, frame: Any) -> None:
        raise _Terminated()

    previous = signal.signal(signal.SIGTERM, on_term)
    reason = "deadline reached (--wait)"
    code = 0
    try:
        while True:
            record = engine.journal.load(fault_id)
            if not record.is_open:
                return
            now = time.time()
            if now >= record.expires_at:
                break
            step = record.lease_seconds / 3 if record.lease_seconds else 1.0
            time.sleep(max(0.05, min(step, record.expires_at - now)))
            if record.lease_seconds:
                try:
                    engine.extend(fault_id)
                except (ConflictError, TargetNotFoundError):
                    return
    except (KeyboardInterrupt, _Terminated):
        reason, code = "interrupted while waiting (--wait)", 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    engine.rollback(fault_id, reason)
    click.echo(f"rolled back {fault_id}: {reason}", err=True)
    if code:
        raise click.exceptions.Exit(code)


@inject.command()
@network_target_options
@click.option("--ms", type=float, required=True, help="Delay in milliseconds.")
@click.option("--jitter", type=float, default=0.0, show_default=True,
              help="Random variation of the delay, in milliseconds.")
@click.option("--correlation", type=float, default=0.0, show_default=True,
              help="Percent correlation of successive delay variations (needs --jitter).")
@timing_options
def latency(iface: str, netns: str | None, ms: float, jitter: float, correlation: float,
            duration: float | None, lease: float | None, wait: bool, dry_run: bool,
            as_json: bool) -> None:
    """Delay IP packets leaving an interface (netem).

    ARP and other non-IP frames are not delayed. The interface's original root
    qdisc is put back on rollback.

    \b
    Example:
      sudo hostchaos inject latency --iface eth0 --ms 100 --jitter 10 --for 5m
    """
    from hostchaos.faults.network import LatencySpec

    run_inject(lambda: LatencySpec(iface=iface, netns=netns, ms=ms, jitter_ms=jitter,
                                   correlation=correlation),
               duration, lease, wait, dry_run, as_json)


@inject.command()
@network_target_options
@click.option("--percent", type=float, required=True, help="Share of packets to drop (0-100].")
@click.option("--correlation", type=float, default=0.0, show_default=True,
              help="Percent correlation with the previous packet's fate (bursty loss).")
@timing_options
def loss(iface: str, netns: str | None, percent: float, correlation: float,
         duration: float | None, lease: float | None, wait: bool, dry_run: bool,
         as_json: bool) -> None:
    """Drop a share of IP packets leaving an interface (netem).

    \b
    Example:
      sudo hostchaos inject loss --iface eth0 --percent 30 --for 2m
    """
    from hostchaos.faults.network import LossSpec

    run_inject(lambda: LossSpec(iface=iface, netns=netns, percent=percent,
                                correlation=correlation),
               duration, lease, wait, dry_run, as_json)
