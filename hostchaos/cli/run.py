"""`hostchaos run FILE.yaml`: play a scenario and report detection and recovery."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from hostchaos.cli.common import json_option

RUN_HELP = """Play the scenario in FILE: steady state, faults, recovery; report what probes saw.

The whole file is checked first (a mistake is one line, FILE:LINE: KEY:
reason, exit 2, nothing injected). Nothing is injected until every probe
that watches `before` passes; each fault is held for its `for:` under a lease
the runner renews, so a killed runner leaves nothing behind for longer than
the lease (settings: lease, default 5s). A probe with `abort: true` that
fails during a fault, Ctrl-C and SIGTERM roll everything back at once.

\b
Exit status: 0 every run recovered; 10 a run deviated (probes did not
recover within recovery-timeout); 11 a run was aborted (steady state not
met, a fault could not be injected, an abort probe failed); 130 interrupted;
2 the file is not a valid scenario.
\b
Examples:
  sudo hostchaos run scenarios/slow-dependency.yaml --set iface=eth0 --set dependency=10.0.0.5/32
  sudo hostchaos run my.yaml --repeat 3 --seed 7 --html report.html
  hostchaos run my.yaml --dry-run
"""

EXIT_BY_OUTCOME = {"recovered": 0, "deviated": 10, "aborted": 11, "interrupted": 130}


def _parse_sets(values: tuple[str, ...]) -> dict[str, str]:
    from hostchaos.errors import SpecError

    out = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise SpecError(f"--set {item!r}: use NAME=VALUE")
        out[name] = value
    return out


@click.command(name="run", help=RUN_HELP)
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--dry-run", is_flag=True, help="Check the file and print the plan; change "
                                             "nothing (targets are not looked up).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of random: steps (run N uses SEED+N).")
@click.option("--repeat", type=click.IntRange(1, 1000), default=1, show_default=True,
              help="Play the scenario this many times; the report gives MTTR and recovery rate.")
@click.option("--set", "sets", multiple=True, metavar="NAME=VALUE",
              help="Give a parameter of the scenario (params:).")
@click.option("--html", "html_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write a self-contained HTML report with a timeline.")
@json_option
def run(file: Path, dry_run: bool, seed: int, repeat: int, sets: tuple[str, ...],
        html_path: Path | None, as_json: bool) -> None:
    from hostchaos.cli.output import emit_json
    from hostchaos.scenario import loader

    scenario = loader.load(file, _parse_sets(sets))
    if dry_run:
        plan = _plan(scenario)
        if as_json:
            emit_json(plan)
        else:
            click.echo(f"scenario {scenario.name}: {len(plan['probes'])} probe(s), "
                       f"{len(plan['faults'])} fault(s); nothing was changed")
            for line in plan["lines"]:
                click.echo(f"  {line}")
        return
    from hostchaos.backend import make_engine
    from hostchaos.scenario import report
    from hostchaos.scenario.runner import Interrupted, Runner

    runner = Runner(scenario, make_engine(), seed=seed)
    results = []
    try:
        for index in range(repeat):
            results.append(runner.run(index))
            if results[-1].outcome == "aborted":
                break
    except Interrupted:
        click.echo("hostchaos: interrupted: every fault was rolled back", err=True)
        sys.exit(130)
    data = report.build(scenario, results)
    if html_path is not None:
        html_path.write_text(report.html_page(data))
    if as_json:
        emit_json(data)
    else:
        click.echo(report.text(data))
    worst = max((EXIT_BY_OUTCOME.get(r.outcome, 11) for r in results), default=0)
    if worst:
        sys.exit(worst)


def _plan(scenario: object) -> dict[str, Any]:
    from hostchaos.scenario.model import (
        FaultStep,
        ParallelStep,
        RandomStep,
        Scenario,
        Step,
        WaitStep,
    )

    assert isinstance(scenario, Scenario)
    lines: list[str] = []
    faults: list[dict[str, Any]] = []

    def walk(steps: tuple[Step, ...], depth: int) -> None:
        pad = "  " * depth
        for step in steps:
            if isinstance(step, WaitStep):
                lines.append(f"{pad}wait {step.seconds:g}s")
            elif isinstance(step, ParallelStep):
                lines.append(f"{pad}at once:")
                walk(step.steps, depth + 1)
            elif isinstance(step, RandomStep):
                lines.append(f"{pad}one of (seeded):")
                walk(step.choices, depth + 1)
            elif isinstance(step, FaultStep):
                lines.append(f"{pad}{step.kind} for {step.duration:g}s: {step.describe()}")
                faults.append({"kind": step.kind, "for": step.duration, "where": step.where,
                               "plan": step.describe(), "spec": step.spec.to_dict()})

    walk(scenario.steps, 0)
    probes: list[dict[str, Any]] = [
        {"name": p.name, "kind": p.kind, "every": p.every, "when": list(p.phases),
         "abort": p.abort, **({"netns": p.netns} if p.netns else {})}
        for p in scenario.probes]
    lines[:0] = [f"probe {p['name']} ({p['kind']}, every {p['every']:g}s, "
                 f"{'/'.join(p['when'])}{', abort' if p['abort'] else ''})"
                 for p in probes]
    return {"dry_run": True, "scenario": scenario.name, "file": scenario.path,
            "probes": probes, "faults": faults, "lines": lines}
