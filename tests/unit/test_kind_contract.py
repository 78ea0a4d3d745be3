"""What every registered kind owes the rest of hostchaos, checked over the registry.

A new kind (its module plus one line in ``hostchaos.faults.KINDS``) gets all
of these for free or fails here: a spec that round-trips through its journal
dict, a describe line, a docstring with mechanism / rollback / example, a
generated `inject <kind>` command whose example parses, an entry in
`doctor`, and an up-to-date reference page.
"""

from __future__ import annotations

import importlib
import inspect
import shlex
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from hostchaos import faults, reference
from hostchaos.cli import cli
from hostchaos.cli.doctor import kind_table
from hostchaos.cli.inject import inject
from hostchaos.faults.base import Fault
from hostchaos.faults.from_options import spec_from_options
from hostchaos.faults.options import options_from_click, spec_options
from hostchaos.system import capabilities

DOCS = Path(__file__).resolve().parents[2] / "docs" / "faults"


def example_spec(kind: str) -> Any:
    """The spec of the kind's documented example, parsed by its generated command."""
    cls = faults.fault_class(kind)
    _, paragraphs = reference.sections(cls)
    example = next(p for p in paragraphs if p.startswith("Example"))
    line = example.partition(":")[2].strip().splitlines()[0].strip().strip("`")
    words = shlex.split(line)
    assert words[:4] == ["sudo", "hostchaos", "inject", kind], line
    command = inject.get_command(click.Context(inject), kind)
    assert command is not None
    with command.make_context(kind, words[4:]) as ctx:
        given = dict(ctx.params)
    for common in ("duration", "lease", "wait", "dry_run", "as_json"):
        given.pop(common)
    return spec_from_options(kind, options_from_click(cls.spec_type, given))


@pytest.mark.parametrize("kind", faults.KINDS)
def test_the_kind_is_its_module_and_spelled_once(kind: str) -> None:
    cls = faults.fault_class(kind)
    module = importlib.import_module(faults.module_name(kind))
    assert cls.__module__ == module.__name__
    assert cls.kind == kind and cls.spec_type.kind == kind
    defined = [c for _, c in inspect.getmembers(module, inspect.isclass)
               if issubclass(c, Fault) and c.__module__ == module.__name__]
    assert defined == [cls], "one fault class per kind module"
    source = inspect.getsource(module)
    assert f'kind = "{kind}"' not in source and f"kind: ClassVar[str] = \"{kind}\"" not in source


@pytest.mark.parametrize("kind", faults.KINDS)
def test_the_docstring_documents_mechanism_rollback_and_an_example(kind: str) -> None:
    summary, paragraphs = reference.sections(faults.fault_class(kind))
    assert summary and summary.endswith(".")
    for label in ("Mechanism:", "Rollback:", "Example:"):
        assert any(p.startswith(label) for p in paragraphs), f"{kind}: no {label} paragraph"


@pytest.mark.parametrize("kind", faults.KINDS)
def test_the_example_parses_and_the_spec_round_trips_through_the_journal(kind: str) -> None:
    spec = example_spec(kind)
    stored = spec.to_dict()
    again = type(spec).from_dict(stored)
    assert again == spec and again.to_dict() == stored
    line = faults.build(kind, stored).describe()
    assert line and "\n" not in line


@pytest.mark.parametrize("kind", faults.KINDS)
def test_the_generated_command_documents_every_option(kind: str) -> None:
    result = CliRunner().invoke(cli, ["inject", kind, "--help"])
    assert result.exit_code == 0, result.output
    for each in spec_options(faults.fault_class(kind).spec_type):
        assert each.option.flag in result.output
    assert "--for" in result.output and "--dry-run" in result.output
    listing = CliRunner().invoke(cli, ["inject", "--help"])
    assert kind in listing.output


def test_doctor_lists_every_kind_and_knows_every_need() -> None:
    table = kind_table()
    assert list(table) == list(faults.KINDS)
    for kind in faults.KINDS:
        cls = faults.fault_class(kind)
        for name in (*cls.needs, *(n for names in cls.needs_with.values() for n in names)):
            assert name in capabilities.CHECKS, f"{kind} needs unknown check {name}"


@pytest.mark.parametrize("name", [*(f"{k}.md" for k in faults.KINDS), "README.md"])
def test_the_reference_page_is_current(name: str) -> None:
    wanted = reference.pages()[name]
    path = DOCS / name
    assert path.exists() and path.read_text() == wanted, (
        f"docs/faults/{name} is stale: run `python -m hostchaos.reference docs/faults`")
