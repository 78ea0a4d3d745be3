"""Spec fields that are also command-line options.

A kind declares each option once, on its spec::

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class LatencySpec(TrafficSpec):
        ms: float = option("--ms", "Delay in milliseconds.", required=True)
        jitter_ms: float = option("--jitter", "Random variation of the delay, in ms.",
                                  default=0.0)

and the `hostchaos inject <kind>` command, its ``--help``, the API's request
body and the kind's reference page are all made from that. A field without
``option(...)`` is internal (filled in by ``resolve()``, e.g. a container's PID).
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from hostchaos.errors import SpecError

_MISSING: Any = dataclasses.MISSING


@dataclass(frozen=True)
class Option:
    """How one spec field appears on the command line."""

    flag: str
    help: str
    metavar: str | None = None
    #: text -> stored value (a quantity parser); None: the field's own type (int, float, str)
    parse: Callable[[str], Any] | None = None
    choices: tuple[str, ...] | None = None
    #: the option may be given several times (a tuple field)
    multiple: bool = False
    #: a flag that sets a bool field to the opposite of its default (--no-protect-ssh)
    flag_negates: bool = False
    required: bool = False


def option(flag: str, help: str, *, default: Any = _MISSING, **settings: Any) -> Any:
    """A spec field that is also the command-line option ``flag`` (see :class:`Option`)."""
    meta = {"option": Option(flag, help, **settings)}
    if isinstance(default, list | dict | set):
        raise TypeError("use a tuple default for a repeatable option")
    return dataclasses.field(default=default, metadata=meta)


@dataclass(frozen=True)
class SpecOption:
    """A spec field together with its command-line option."""

    field: str
    option: Option
    type: Any
    default: Any

    @property
    def has_default(self) -> bool:
        return self.default is not _MISSING

    @property
    def is_flag(self) -> bool:
        return self.value_type() is bool

    @property
    def dest(self) -> str:
        """The keyword click passes the value under (a valid identifier, unique per spec)."""
        return "opt_" + self.field

    def value_type(self) -> type:
        """int, float, str or bool: what one value of the option is, before ``parse``."""
        hint = self.type
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if typing.get_origin(hint) is tuple:
            args = [args[0]]
        inner = args[0] if args else hint
        return inner if inner in (int, float, str, bool) else str

    @property
    def name(self) -> str:
        """The option's name in an options mapping (API, scenarios): its flag without ``--``."""
        return self.option.flag.removeprefix("--")

    @property
    def required(self) -> bool:
        return self.option.required or not self.has_default

    def convert(self, raw: Any) -> Any:
        """One given value -> the value stored in the spec (the one parsing path).

        ``raw`` is what click hands over (already an int, float or choice) or
        what a JSON/YAML mapping holds: a number or text for a value, a list
        (or one value) for a repeatable option, a boolean for a flag.
        """
        if self.option.multiple:
            items = list(raw) if isinstance(raw, list | tuple) else [raw]
            return tuple(self._one(v) for v in items)
        if self.is_flag:
            if not isinstance(raw, bool):
                raise SpecError(f"{self.option.flag} is a flag: give true or false, "
                                f"not {_shown(raw)}")
            if not raw:
                return self.default
            return not self.default if self.option.flag_negates else True
        return self._one(raw)

    def _one(self, raw: Any) -> Any:
        flag = self.option.flag
        if isinstance(raw, bool) or not isinstance(raw, str | int | float):
            raise SpecError(f"{flag} takes one value, not {_shown(raw)}")
        if self.option.choices:
            if raw not in self.option.choices:
                raise SpecError(f"{flag} {_shown(raw)} is not one of: "
                                f"{', '.join(self.option.choices)}")
            return raw
        if self.option.parse is not None:
            try:
                return self.option.parse(str(raw))
            except SpecError:
                raise
            except (ValueError, ArithmeticError) as exc:
                raise SpecError(f"{flag} {raw!r}: {exc}") from None
        kind = self.value_type()
        if kind is str:
            return str(raw)
        try:
            if kind is int:
                if isinstance(raw, float):
                    if not raw.is_integer():
                        raise ValueError(raw)
                    return int(raw)
                return int(raw)
            return float(raw)
        except (ValueError, OverflowError):
            raise SpecError(f"{flag} {_shown(raw)} is not a valid "
                            f"{'integer' if kind is int else 'number'}") from None


def _shown(raw: Any) -> str:
    text = repr(raw)
    return text if len(text) <= 60 else text[:57] + "..."


def spec_options(spec_type: type) -> Iterator[SpecOption]:
    """The command-line options of a spec class, in field order."""
    hints = typing.get_type_hints(spec_type)
    for f in dataclasses.fields(spec_type):
        opt = f.metadata.get("option")
        if opt is not None:
            yield SpecOption(f.name, opt, hints[f.name], f.default)


def options_from_click(spec_type: type, given: dict[str, Any]) -> dict[str, Any]:
    """Click's values (keyed by ``dest``) -> an options mapping keyed by option name.

    Options the operator left out (None, an empty repeat, an unset flag) are
    left out of the mapping, so they take the spec's defaults.
    """
    out: dict[str, Any] = {}
    for each in spec_options(spec_type):
        raw = given.get(each.dest)
        if raw is None or raw == () or raw is False:
            continue
        out[each.name] = list(raw) if each.option.multiple else raw
    return out
