"""`hostchaos demo`: a tour of every kind this host can run, each on a sandbox of its own."""

from __future__ import annotations

from typing import Any

import click

from hostchaos.backend import make_engine
from hostchaos.cli.common import json_option


@click.command()
@click.option("--kind", "kinds", multiple=True, metavar="KIND",
              help="Show only this kind (repeatable). Default: every kind.")
@json_option
def demo(kinds: tuple[str, ...], as_json: bool) -> None:
    """Show every fault kind biting a throwaway sandbox, then taken back out.

    For each kind this host can run, builds what the kind needs (two network
    namespaces joined by a veth pair, a child process, a 32 MiB tmpfs, a child
    cgroup, a clock-ready child), measures it, injects the fault through the
    normal engine (journal, deadline, warden), measures again, rolls back,
    measures once more and checks the sandbox is as it was. Kinds this host
    cannot run are listed with the reason and the fix. Needs root; nothing
    outside the sandboxes changes. On a kernel without sch_netem, `make demo`
    runs this inside a Debian kernel under QEMU.
    """
    from hostchaos import faults, tour
    from hostchaos.cli.output import emit_json, table
    from hostchaos.errors import HostchaosError, SpecError

    chosen = list(kinds) or [k for k in faults.KINDS if k in tour.STOPS]
    unknown = [k for k in chosen if k not in tour.STOPS]
    if unknown:
        raise SpecError(f"no demo for {', '.join(unknown)} (kinds: {', '.join(tour.STOPS)})")
    engine = make_engine()
    stops: list[tour.Stop] = []
    import sys

    progress = not as_json and sys.stdout.isatty()
    echo = (lambda text: None) if as_json else click.echo
    with tour.Tour(engine, echo) as running:
        for kind in chosen:
            reason = tour.cannot_run(kind)
            if reason:
                stops.append(tour.Stop(kind, "", skipped=reason))
                continue
            if progress:
                click.echo(f"{kind}: ...", nl=False)
            try:
                stop = tour.STOPS[kind](running)
            except HostchaosError as exc:
                stop = tour.Stop(kind, "", skipped=f"failed: {exc}")
            stops.append(stop)
            if progress:
                click.echo("\r" + " " * (len(kind) + 5) + "\r", nl=False)
    records, _ = engine.listing()
    left = [r.id for r in records]
    if as_json:
        emit_json({"stops": [vars(s) for s in stops], "open_faults": left,
                   "host_as_before": not left and all(s.restored is not False for s in stops)})
        return
    rows: list[list[Any]] = []
    for s in stops:
        if s.skipped:
            continue
        rows.append([s.kind, s.what, s.before, s.during, s.after,
                     "yes" if s.restored else "NO"])
    if rows:
        click.echo(table(rows, ["KIND", "SANDBOX", "BEFORE", "DURING", "AFTER", "AS BEFORE"]))
    for s in stops:
        if s.skipped:
            click.echo(f"{s.kind}: not shown: {s.skipped}")
    ok = not left and all(s.restored is not False for s in stops)
    click.echo("every sandbox removed; no fault left open" if ok else
               f"WARNING: open faults {left} or a sandbox not as before")
    if not ok:
        raise click.exceptions.Exit(1)
