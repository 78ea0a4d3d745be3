"""`hostchaos doctor`: which fault kinds this host can run, and how to fix the rest."""

from __future__ import annotations

from typing import Any

import click

from hostchaos.cli.common import json_option
from hostchaos.errors import PreconditionError


def kind_table() -> dict[str, dict[str, Any]]:
    """For each registered kind: usable or not, what is missing, and what some options add."""
    from hostchaos import faults
    from hostchaos.system import capabilities

    results: dict[str, capabilities.Capability] = {}

    def missing(names: tuple[str, ...]) -> list[dict[str, str]]:
        for name in names:
            if name not in results:
                results[name] = capabilities.check(name)
        return [{"name": n, "fix": results[n].fix} for n in names if not results[n].ok]

    table = {}
    for kind in faults.KINDS:
        cls = faults.fault_class(kind)
        lacking = missing(cls.needs)
        table[kind] = {
            "usable": not lacking,
            "needs": list(cls.needs),
            "missing": lacking,
            "with": {when: {"needs": list(names), "missing": missing(names)}
                     for when, names in cls.needs_with.items()},
        }
    return table


@click.command()
@json_option
def doctor(as_json: bool) -> None:
    """Check root, kernel modules, cgroups, libfaketime and container runtimes.

    Lists every check, then every fault kind with what it lacks here. Exits 3
    when a kind is unusable, naming it and the first fix.
    """
    from hostchaos.cli.output import emit_json
    from hostchaos.system import capabilities

    checks = capabilities.all_checks()
    kinds = kind_table()
    if as_json:
        emit_json({"checks": [c.to_dict() for c in checks], "kinds": kinds})
    else:
        for check in checks:
            mark = "ok  " if check.ok else "MISSING"
            click.echo(f"{mark:8} {check.name:18} {check.detail}"
                       + (f"\n{'':8} {'':18} fix: {check.fix}" if check.fix else ""))
        click.echo("")
        for kind, state in kinds.items():
            line = "usable" if state["usable"] else \
                f"UNUSABLE (missing {', '.join(m['name'] for m in state['missing'])})"
            for when, extra in state["with"].items():
                if extra["missing"]:
                    line += f"; {when} needs {', '.join(m['name'] for m in extra['missing'])}"
            click.echo(f"{kind:12} {line}")
    unusable = [k for k, s in kinds.items() if not s["usable"]]
    if unusable:
        first = kinds[unusable[0]]["missing"][0]
        raise PreconditionError(f"fault kinds unusable here: {', '.join(unusable)} "
                                f"(first fix: {first['fix']})")
