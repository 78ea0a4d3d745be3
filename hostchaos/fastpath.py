"""The `hostchaos` program's entry point, and its fast path past click.

`inject KIND ...`, `extend ID` and `rollback ID|--all` are the commands an
operator (or a script, a thousand times) runs most. When the agent answers
they are only a request to it; when it does not they are one call of the
engine. Loading click and building the command tree (about 35 ms on the build
machine, measured) would be most of the first and a fifth of the second. So
:func:`main` first tries to read the command line itself, from a table of the
kinds' options that is generated from their specs (:mod:`hostchaos.fastpath_options`,
checked current by the unit tests), and to do it through the same backend the
click commands use (:mod:`hostchaos.backend`: the agent if it answers for this
state directory, else the engine in this process). It prints through
:mod:`hostchaos.rendering`, the same lines the click commands build.

The rule that keeps the two paths' output identical: the fast path handles
only what it understands completely. Anything else (``--help``, a global
option, ``--wait``, an unknown or repeated option, a value click would
refuse, a kind that is not in the table, a configuration file it cannot read)
goes to click untouched, which prints the usual answer or error. Errors of
the command itself are printed as click's commands print them: one line on
stderr (and the error object with ``--json``), with the error's exit code.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (the fast path)

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

#: the options every `inject KIND` takes: flag -> (name, type); see hostchaos.cli.inject
TIMING = {"--for": ("duration", "duration"), "--lease": ("lease", "duration"),
          "--dry-run": ("dry_run", "flag"), "--json": ("as_json", "flag")}


class Unhandled(Exception):
    """The command line is not one the fast path reads: click takes it as it is."""


def main() -> None:
    """`hostchaos`: the fast path when it applies, else the click command line."""
    code = run(sys.argv[1:])
    if code is not None:
        sys.exit(code)
    from hostchaos.cli import main as click_main

    click_main()


def run(argv: list[str]) -> int | None:
    """The command's exit code if the fast path did it; None: click must run it."""
    try:
        call = parse(argv)
    except Unhandled:
        return None
    from hostchaos.backend import LocalBackend, agent_backend
    from hostchaos.errors import HostchaosError

    try:
        backend = agent_backend()
    except HostchaosError:
        return None  # an unreadable config file: click reports it in its own words
    try:
        return call(backend or LocalBackend())
    except HostchaosError as exc:
        return _failed(argv, exc.to_dict(), str(exc), exc.exit_code)
    except KeyboardInterrupt:
        return _failed(argv, {"type": "interrupted", "message": "interrupted"}, "interrupted",
                       130)
    except Exception as exc:  # a bug: one line, as the click group says it
        return _failed(argv, {"type": "internal", "message": str(exc)},
                       f"internal error: {type(exc).__name__}: {exc} (rerun with --debug)", 1)


def _failed(argv: list[str], data: dict[str, Any], message: str, code: int) -> int:
    from hostchaos.errors import one_line
    from hostchaos.rendering import json_text

    if "--json" in argv:
        _out(json_text({"error": data}))
    _err(f"hostchaos: {one_line(message)}")
    return code


def _out(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _err(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


# -- reading the command line -----------------------------------------------------------------

def parse(argv: list[str]) -> Callable[[Any], int]:
    """A callable that does the command with a backend; Unhandled if it is not ours."""
    if len(argv) < 2 or any(word in ("-h", "--help", "--") for word in argv):
        raise Unhandled
    verb = argv[0]
    if verb == "inject":
        return _inject(argv[1], argv[2:])
    if verb == "extend":
        return _extend(argv[1:])
    if verb == "rollback":
        return _rollback(argv[1:])
    raise Unhandled


def _split(words: list[str], takes_value: dict[str, bool]) -> tuple[list[tuple[str, Any]],
                                                                    list[str]]:
    """(option, value) pairs in order and the positional words; click's rules, or Unhandled.

    A value may start with ``-`` (``--offset -5m``), as click allows; a value
    given as ``--opt=VALUE`` is split the same way click does it.
    """
    pairs: list[tuple[str, Any]] = []
    positional: list[str] = []
    index = 0
    while index < len(words):
        word = words[index]
        index += 1
        if not word.startswith("-") or word == "-":
            positional.append(word)
            continue
        flag, equals, inline = word.partition("=")
        if flag not in takes_value:
            raise Unhandled
        if not takes_value[flag]:
            if equals:
                raise Unhandled
            pairs.append((flag, True))
        elif equals:
            pairs.append((flag, inline))
        else:
            if index >= len(words):
                raise Unhandled
            pairs.append((flag, words[index]))
            index += 1
    return pairs, positional


def _inject(kind: str, words: list[str]) -> Callable[[Any], int]:
    from hostchaos.fastpath_options import KINDS

    table = KINDS.get(kind)
    if table is None:
        raise Unhandled
    takes_value = {flag: spec_type != "flag" for flag, _, spec_type, _, _, _ in table}
    takes_value.update((flag, kind_ != "flag") for flag, (_, kind_) in TIMING.items())
    pairs, positional = _split(words, takes_value)
    if positional:
        raise Unhandled
    given: dict[str, list[Any]] = {}
    for flag, value in pairs:
        given.setdefault(flag, []).append(value)
    timing: dict[str, Any] = {"duration": None, "lease": None, "dry_run": False,
                              "as_json": False}
    for flag, (name, kind_) in TIMING.items():
        values = given.pop(flag, [])
        if len(values) > 1:
            raise Unhandled  # click keeps the last one; not worth copying
        if values:
            timing[name] = _duration(flag, values[0]) if kind_ == "duration" else True
    options: dict[str, Any] = {}
    for flag, name, value_type, multiple, choices, required in table:
        values = given.pop(flag, [])
        if not values:
            if required:
                raise Unhandled  # click says which option is missing
            continue
        if not multiple and len(values) > 1:
            raise Unhandled
        converted = [_value(value, value_type, choices) for value in values]
        if value_type == "flag":
            options[name] = True
        else:
            options[name] = converted if multiple else converted[0]
    duration, lease = timing["duration"], timing["lease"]

    def call(backend: Any) -> int:
        from hostchaos.rendering import injected_lines, json_text, plan_line, printable

        if timing["dry_run"]:
            plan = backend.plan(kind, options, duration, lease)
            _out(json_text(plan) if timing["as_json"] else plan_line(plan, lease))
            return 0
        view = backend.inject(kind, options, duration, lease)
        if timing["as_json"]:
            _out(json_text(printable(view)))
        else:
            out, err = injected_lines(view)
            _out(out)
            _err(err)
        return 0

    return call


def _value(raw: Any, value_type: str, choices: list[str] | None) -> Any:
    """One option value as click would hand it over (int, float, choice, text)."""
    if value_type == "flag":
        return True
    if choices is not None:
        if raw not in choices:
            raise Unhandled
        return raw
    try:
        if value_type == "int":
            return int(raw)
        if value_type == "float":
            return float(raw)
    except ValueError:
        raise Unhandled from None
    return raw


def _duration(flag: str, raw: str) -> float:
    from hostchaos.errors import SpecError
    from hostchaos.quantities import parse_duration

    try:
        return parse_duration(raw, what=flag)
    except SpecError:
        raise Unhandled from None  # click says what is wrong with it


def _extend(words: list[str]) -> Callable[[Any], int]:
    pairs, positional = _split(words, {"--for": True, "--json": False})
    flags = [flag for flag, _ in pairs]
    if len(positional) != 1 or len(set(flags)) != len(flags) or not positional[0].isascii():
        raise Unhandled
    fault_id = positional[0]
    values = dict(pairs)
    as_json = "--json" in values
    duration = _duration("--for", values["--for"]) if "--for" in values else None

    def call(backend: Any) -> int:
        from hostchaos.rendering import extended_line, json_text, printable

        view = backend.extend(fault_id, duration)
        _out(json_text(printable(view)) if as_json else extended_line(view))
        return 0

    return call


def _rollback(words: list[str]) -> Callable[[Any], int]:
    pairs, positional = _split(words, {"--all": False, "--json": False})
    flags = [flag for flag, _ in pairs]
    everything = "--all" in flags
    if len(set(flags)) != len(flags) or len(positional) > 1 \
            or bool(positional and positional[0]) == everything \
            or not all(word.isascii() for word in positional):
        raise Unhandled  # click's command says what is wrong
    as_json = "--json" in flags

    def one(backend: Any) -> int:
        from hostchaos.rendering import ended_lines, json_text, printable

        view = backend.rollback(positional[0])
        if as_json:
            _out(json_text(printable(view)))
        else:
            for line in ended_lines(view):
                _out(line)
        return 0

    def every(backend: Any) -> int:
        from hostchaos.errors import RollbackError
        from hostchaos.rendering import ended_lines, json_text

        data = backend.rollback_all()
        done, errors = data["rolled_back"], data["errors"]
        if as_json:
            _out(json_text({"rolled_back": [v["id"] for v in done], "errors": errors}))
        else:
            for view in done:
                for line in ended_lines(view):
                    _out(line)
            if not done and not errors:
                _out("no open faults")
        if errors:
            raise RollbackError("; ".join(errors))
        return 0

    return every if everything else one


# -- the table ------------------------------------------------------------------------------

def option_table() -> dict[str, list[tuple[str, str, str, bool, list[str] | None, bool]]]:
    """Every kind's options as the fast path reads them, made from the specs.

    One row per option: (flag, name in the API's options, value type as click
    converts it: "int", "float", "str" or "flag", repeatable, choices, required).
    """
    from hostchaos import faults
    from hostchaos.faults.options import spec_options

    table = {}
    for kind in faults.KINDS:
        rows = []
        for each in spec_options(faults.fault_class(kind).spec_type):
            opt = each.option
            if each.is_flag:
                value_type = "flag"
            elif opt.choices or opt.parse is not None:
                value_type = "str"
            else:
                value_type = {int: "int", float: "float"}.get(each.value_type(), "str")
            rows.append((opt.flag, each.name, value_type, opt.multiple,
                         list(opt.choices) if opt.choices else None, opt.required))
        table[kind] = rows
    return table


def table_source() -> str:
    """The text of :mod:`hostchaos.fastpath_options` for the kinds of this version."""
    lines = ['"""The kinds\' command-line options for the fast path (hostchaos.fastpath).',
             "",
             "Generated from the specs: `python -m hostchaos.fastpath > "
             "hostchaos/fastpath_options.py`;",
             "tests/unit/test_fastpath.py fails when it is not current.",
             '"""',
             "# ruff: noqa: E501",
             "",
             "Row = tuple[str, str, str, bool, list[str] | None, bool]",
             "",
             "KINDS: dict[str, list[Row]] = {"]
    for kind, rows in option_table().items():
        lines.append(f"    {kind!r}: [")
        lines.extend(f"        {row!r}," for row in rows)
        lines.append("    ],")
    lines.append("}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(table_source())
