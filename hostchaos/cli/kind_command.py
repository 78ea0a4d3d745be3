"""`hostchaos inject <kind>`: a click command made from a kind's spec and docstring.

Nothing here knows any kind: the options come from the spec's fields
(:mod:`hostchaos.faults.options`), the help from the fault class's docstring,
and the work is done by ``run`` (parse -> engine -> print).
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from hostchaos.faults.options import SpecOption, spec_options

if TYPE_CHECKING:
    from hostchaos.faults.base import Fault

_CLICK_TYPES: dict[type, click.ParamType[Any, Any]] = {int: click.INT, float: click.FLOAT,
                                             str: click.STRING}


def help_text(doc: str | None) -> tuple[str, str]:
    """(short help, full help) from a fault class docstring, for click.

    Paragraphs are re-wrapped by click; lines that begin with ``Example`` and
    the lines after them are kept as written (``\\b``), and reST ``code``
    marks are dropped.
    """
    text = textwrap.dedent(doc or "").strip().replace("``", "")
    if not text:
        return "", ""
    first, _, rest = text.partition("\n")
    paragraphs = []
    for paragraph in textwrap.dedent(rest).strip().split("\n\n"):
        if paragraph.lstrip().startswith(("Example", "Examples")):
            paragraph = "\b\n" + paragraph
        paragraphs.append(paragraph)
    return first.strip(), "\n\n".join([first.strip(), *paragraphs])


def click_option(each: SpecOption) -> click.Option:
    """The click option for one spec field; its value arrives under ``each.dest``."""
    opt = each.option
    if each.is_flag:
        return click.Option([opt.flag, each.dest], is_flag=True, default=False, help=opt.help)
    if opt.choices:
        kind: click.ParamType[Any, Any] = click.Choice(list(opt.choices))
    elif opt.parse is not None:
        kind = click.STRING
    else:
        kind = _CLICK_TYPES.get(each.value_type(), click.STRING)
    shown = each.has_default and each.default not in (None, (), "") and not opt.multiple
    settings: dict[str, Any] = {"required": True} if opt.required else {
        "default": () if opt.multiple else None}  # click 8.2+: any default satisfies required
    return click.Option([opt.flag, each.dest], type=kind, multiple=opt.multiple,
                        metavar=opt.metavar, help=opt.help + (
                            f" [default: {each.default}]" if shown else ""), **settings)


def kind_command(name: str, fault_class: type[Fault], run: Callable[..., None],
                 common: list[click.Parameter], epilog: str = "") -> click.Command:
    """The `inject <name>` command: the spec's options, then ``common`` (timing, output)."""
    short, full = help_text(fault_class.__doc__)
    params: list[click.Parameter] = [click_option(each)
                                     for each in spec_options(fault_class.spec_type)]
    params.extend(common)

    def callback(**given: Any) -> None:
        run(name, fault_class, given)

    epilogs = [text for text in (fault_class.help_epilog, epilog) if text]
    return click.Command(name, params=params, callback=callback, help=full, short_help=short,
                         epilog="\n\n".join(epilogs) or None)
