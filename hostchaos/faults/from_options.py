"""A kind's spec from an options mapping: the API's request body, a scenario's step.

The mapping is keyed by the kind's command-line option names without the
leading dashes, exactly as `hostchaos inject <kind> --help` spells them::

    spec_from_options("latency", {"iface": "eth0", "ms": 100, "dst": ["10.0.0.0/8"]})
    spec_from_options("disk-fill", {"path": "/var/tmp", "leave-free": "1G"})

Naming rule: ``--leave-free`` is ``"leave-free"``, ``--no-protect-ssh`` is
``"no-protect-ssh"``, ``--host`` (repeatable) is ``"host"``: the flag with its
``--`` removed, never the spec's field name. Values:

- an option taking a value: a string as on the command line (``"5m"``,
  ``"256M"``, ``"1mbit"``) or, for numeric options, a JSON number;
- a repeatable option: a list of such values (one value alone is a list of one);
- a flag: ``true`` (as if given) or ``false`` (as if left out);
- choices must be one of the listed words.

Every value goes through the same parser the command line uses
(:meth:`hostchaos.faults.options.SpecOption.convert`), and the generated
`inject <kind>` commands call :func:`spec_from_options` too, so the two cannot
drift apart. An unknown option, a missing required one or a bad value is a
:class:`~hostchaos.errors.SpecError` naming it.

``for`` and ``lease`` are not spec options: :func:`fault_request` takes them
from the same mapping (durations such as ``"5m"`` or a number of seconds).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from hostchaos.errors import SpecError
from hostchaos.faults.base import Spec
from hostchaos.faults.options import SpecOption, spec_options

#: keys of an options mapping that say when the fault ends rather than what it is
TIMING = ("for", "lease")


def known_options(kind: str, fault_class: Callable[[str], Any] | None = None
                  ) -> dict[str, SpecOption]:
    """The options of ``kind`` by name (SpecError for an unknown kind)."""
    from hostchaos import faults

    cls = (fault_class or faults.fault_class)(kind)
    return {each.name: each for each in spec_options(cls.spec_type)}


def spec_from_options(kind: str, options: Mapping[str, Any], *,
                      fault_class: Callable[[str], Any] | None = None) -> Spec:
    """The validated spec of ``kind`` from an options mapping (see the module docstring).

    ``fault_class`` looks a kind up (default: the registry; tests pass their fakes').
    """
    from hostchaos import faults

    lookup = fault_class or faults.fault_class
    if not isinstance(options, Mapping):
        raise SpecError(f"{kind} options must be a mapping of option name to value, "
                        f"not {type(options).__name__}")
    known = known_options(kind, lookup)
    unknown = sorted(str(name) for name in options if name not in known)
    if unknown:
        hint = " (for and lease go beside the options)" if set(unknown) & set(TIMING) else ""
        raise SpecError(f"unknown {kind} option(s): {', '.join(unknown)}{hint} "
                        f"(known: {', '.join(sorted(known))})")
    values: dict[str, Any] = {}
    for name, each in known.items():
        if name in options and options[name] is not None:
            values[each.field] = each.convert(options[name])
        elif each.required:
            raise SpecError(f"{kind}: missing option '{each.option.flag}' ({name})")
    spec_type = lookup(kind).spec_type
    try:
        spec: Spec = spec_type(**values)
    except TypeError as exc:  # a field without a default that is not marked required
        raise SpecError(f"{kind}: {exc}") from None
    return spec


@dataclass(frozen=True)
class FaultRequest:
    """What to inject: a validated spec and when it ends (None: the configured default)."""

    spec: Spec
    duration: float | None = None
    lease: float | None = None


def duration_value(raw: Any, what: str) -> float | None:
    """A duration from a mapping: ``"5m"``, ``"1h30m"`` or a number of seconds; None if absent."""
    from hostchaos.quantities import parse_duration

    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, str | int | float):
        raise SpecError(f"{what} must be a duration such as 30s or 5m, not {raw!r}"[:200])
    if isinstance(raw, str):
        return parse_duration(raw, what=what)
    if not math.isfinite(raw) or raw <= 0:  # a number of seconds, used as it is
        raise SpecError(f"{what} {str(raw)!r} must be greater than zero")
    return float(raw)


def fault_request(kind: str, options: Mapping[str, Any]) -> FaultRequest:
    """A spec plus ``for``/``lease`` from one mapping (a scenario step's form)."""
    if not isinstance(options, Mapping):
        raise SpecError(f"{kind} options must be a mapping, not {type(options).__name__}")
    rest = {k: v for k, v in options.items() if k not in TIMING}
    return FaultRequest(spec_from_options(kind, rest),
                        duration_value(options.get("for"), "--for"),
                        duration_value(options.get("lease"), "--lease"))
