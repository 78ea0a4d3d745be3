"""`hostchaos doctor`: which fault families this host can run, and how to fix the rest."""

from __future__ import annotations

import click

from hostchaos.cli.common import json_option
from hostchaos.errors import PreconditionError


@click.command()
@json_option
def doctor(as_json: bool) -> None:
    """Check root, kernel modules, cgroups, libfaketime and container runtimes.

    Exits 3 when a fault family is unusable, naming it and the fix.
    """
    from hostchaos.cli.output import emit_json
    from hostchaos.system import capabilities

    checks = {c.name: c for c in capabilities.all_checks()}
    families = {}
    for family, needs in capabilities.FAMILY_NEEDS.items():
        missing = [checks[n] for n in needs if not checks[n].ok]
        families[family] = {"usable": not missing,
                            "missing": [{"name": m.name, "fix": m.fix} for m in missing]}
    if as_json:
        emit_json({"checks": [c.to_dict() for c in checks.values()], "families": families})
    else:
        for check in checks.values():
            mark = "ok  " if check.ok else "MISSING"
            click.echo(f"{mark:8} {check.name:18} {check.detail}"
                       + (f"\n{'':8} {'':18} fix: {check.fix}" if check.fix else ""))
        click.echo("")
        for family, state in families.items():
            if state["usable"]:
                click.echo(f"{family}: usable")
            else:
                names = ", ".join(str(m["name"]) for m in state["missing"])  # type: ignore[attr-defined]
                click.echo(f"{family}: UNUSABLE (missing {names})")
    unusable = [f for f, s in families.items() if not s["usable"]]
    if unusable:
        first = next(iter(families[unusable[0]]["missing"]))  # type: ignore[call-overload]
        raise PreconditionError(
            f"fault families unusable here: {', '.join(unusable)} "
            f"(first fix: {first['fix']})"
        )
