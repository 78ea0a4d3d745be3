"""Quantities every kind reads from the command line: durations, sizes, rates, percentages.

One parser per quantity, used by every kind, so ``--max 1G``, ``--burst 32k``
and ``--size 2G`` mean the same thing, and a value that is not finite or is
out of range is one clear :class:`SpecError` naming the option.

- Durations: ``30s``, ``5m``, ``1h30m``, ``250ms``, or plain seconds.
- Sizes: binary units, any case, with or without ``B``/``iB``: ``512``,
  ``32k``, ``256M``, ``1.5GiB``, ``2g`` (K = 1024 bytes).
- Rates: bits per second with ``bit``/``kbit``/``mbit``/``gbit``/``tbit``, or
  bytes per second with ``bps``/``kbps``/``mbps``/``gbps`` (decimal, as tc
  reads them): ``1mbit``, ``500kbit``, ``10mbps``.
- Percentages: ``25`` or ``25%``.
"""

from __future__ import annotations

import math

from hostchaos.errors import SpecError

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (the CLI's fast path)

if TYPE_CHECKING:
    import re

_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SIZE_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40, "p": 2**50}
_RATE_UNITS = {"bit": 1, "kbit": 10**3, "mbit": 10**6, "gbit": 10**9, "tbit": 10**12, "bps": 8,
               "kbps": 8 * 10**3, "mbps": 8 * 10**6, "gbps": 8 * 10**9, "tbps": 8 * 10**12}

#: the parsers' patterns, compiled on first use: `import re` (and the enum it loads) is ~8 ms
#: of a CLI command that, like `inject ... --for 5m` through the agent, needs none of them
_PATTERNS = {
    "duration_part": (r"(\d+(?:\.\d+)?)(ms|s|m|h|d)", False),
    "number": (r"\d+(?:\.\d+)?", False),
    "zero": (r"0+(?:\.0+)?(?:ms|s|m|h|d)?", False),
    "size": (r"(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?b?)", True),
    "rate": (r"(\d+(?:\.\d+)?)\s*(bit|kbit|mbit|gbit|tbit|bps|kbps|mbps|gbps|tbps)?", True),
    "percent": (r"(\d+(?:\.\d+)?)\s*%?", False),
}
_compiled: dict[str, re.Pattern[str]] = {}


def _pattern(name: str) -> re.Pattern[str]:
    found = _compiled.get(name)
    if found is None:
        import re

        source, any_case = _PATTERNS[name]
        found = _compiled[name] = re.compile(source, re.IGNORECASE if any_case else 0)
    return found

#: the largest size any kind accepts (2^62 bytes: beyond every kernel field hostchaos writes)
MAX_BYTES = 2**62


# -- durations -------------------------------------------------------------------------


def parse_duration(text: str, *, what: str = "duration") -> float:
    """Seconds for ``text``; plain numbers are seconds. Must be > 0."""
    raw = text.strip().lower()
    seconds = _one_part_duration(raw)
    if seconds is None and _pattern("number").fullmatch(raw):  # digits of other scripts
        seconds = float(raw)
    if seconds is None:
        parts = _pattern("duration_part").findall(raw)
        if not parts or "".join(n + u for n, u in parts) != raw:
            raise SpecError(
                f"{what} {text!r} is not a duration (use e.g. 30s, 5m, 1h, 1h30m or seconds)")
        seconds = sum(float(n) * _DURATION_UNITS[u] for n, u in parts)
    if not math.isfinite(seconds) or seconds <= 0:
        raise SpecError(f"{what} {text!r} must be greater than zero")
    return seconds


def _one_part_duration(raw: str) -> float | None:
    """Seconds of ``30``, ``1.5s``, ``250ms``, ``5m``, ``2h``, ``1d`` (ASCII digits, lower
    case) without a regular expression; None for anything else, which the patterns read."""
    number, factor = raw, 1.0
    for unit in ("ms", "s", "m", "h", "d"):  # "ms" before "s" and "m"
        if raw.endswith(unit):
            number, factor = raw[:-len(unit)], _DURATION_UNITS[unit]
            break
    whole, dot, fraction = number.partition(".")
    if not (whole.isascii() and whole.isdigit()):
        return None
    if dot and not (fraction.isascii() and fraction.isdigit()):
        return None
    return float(number) * factor


def parse_signed_duration(text: str, *, what: str = "offset") -> float:
    """Seconds for ``+5m``, ``-90s``, ``1h30m`` or ``-2.5``: a duration with an optional sign.

    Zero (``0``, ``+0s``) is allowed: an offset of nothing.
    """
    raw = str(text).strip()
    sign = -1.0 if raw.startswith("-") else 1.0
    body = raw[1:] if raw[:1] in ("+", "-") else raw
    if _pattern("zero").fullmatch(body):
        return 0.0
    try:
        return sign * parse_duration(body, what=what)
    except SpecError:
        raise SpecError(f"{what} {text!r} is not a duration with an optional sign "
                        "(use e.g. +5m, -90s, 1h30m or seconds)") from None


def format_duration(seconds: float) -> str:
    """Short human form: ``59s``, ``5m``, ``1h2m``."""
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    out = ""
    if hours:
        out += f"{hours}h"
    if minutes:
        out += f"{minutes}m"
    if secs or not out:
        out += f"{secs}s"
    return out


# -- sizes -----------------------------------------------------------------------------


def parse_size(text: str, *, what: str = "size", maximum: int = MAX_BYTES) -> int:
    """Bytes for ``256M``, ``1G``, ``1.5GiB``, ``32k`` or ``4096`` (binary units, any case)."""
    match = _pattern("size").fullmatch(str(text).strip())
    if not match:
        raise SpecError(f"{what} {text!r} is not a size (use e.g. 4096, 32k, 256M, 1G)")
    number, unit, _ = match.groups()
    value = float(number) * _SIZE_UNITS[unit.lower()]
    if not math.isfinite(value) or value > maximum:
        raise SpecError(f"{what} {text!r} is too large (at most {format_size(maximum)})")
    return int(value)


def format_size(n: int) -> str:
    """``256M``, ``1G``, ``1.5G``, ``100B``: exact where the number allows."""
    for suffix, scale in (("T", 2**40), ("G", 2**30), ("M", 2**20), ("K", 2**10)):
        if n >= scale and n % scale == 0:
            return f"{n // scale}{suffix}"
    for suffix, scale in (("T", 2**40), ("G", 2**30), ("M", 2**20), ("K", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f}{suffix}"
    return f"{n}B"


# -- rates -----------------------------------------------------------------------------


def parse_rate(text: str, *, what: str = "--rate", minimum: int = 8000,
               maximum: int = 10**13, limits: str | None = None) -> int:
    """Bits per second from ``1mbit``, ``500kbit``, ``10mbps`` (bytes/s) or plain bits.

    Parsed exactly (never through a float), so a rate at the edge of a kernel
    field is judged right; ``limits`` says in words what the range is.
    """
    raw = str(text).strip()
    found = _pattern("rate").fullmatch(raw)
    if found is None:
        raise SpecError(f"{what} {raw[:40]!r} is not a rate (e.g. 1mbit, 500kbit, 10mbps)")
    from fractions import Fraction  # exact, e.g. 1.1mbit; imported only when asked

    bits = int(Fraction(found.group(1)) * _RATE_UNITS[(found.group(2) or "bit").lower()])
    if not minimum <= bits <= maximum:
        span = limits or f"{format_rate(minimum)} to {format_rate(maximum)}"
        raise SpecError(f"{what} {raw[:40]!r} is out of range: {span}")
    return bits


def format_rate(bits: float) -> str:
    for suffix, scale in (("tbit", 1e12), ("gbit", 1e9), ("mbit", 1e6), ("kbit", 1e3)):
        if bits >= scale:
            return f"{bits / scale:g}{suffix}"
    return f"{bits:g}bit"


# -- percentages -----------------------------------------------------------------------


def parse_percent(text: str, *, what: str = "percentage") -> float:
    """``25%`` or ``25`` -> 25.0."""
    match = _pattern("percent").fullmatch(str(text).strip())
    if not match or not math.isfinite(float(match.group(1))):
        raise SpecError(f"{what} {text!r} is not a percentage (use e.g. 25% or 150%)")
    return float(match.group(1))


def check_percent(value: float, what: str, *, allow_zero: bool = False,
                  maximum: float = 100.0) -> None:
    """SpecError unless ``value`` is in (0, maximum], or [0, maximum] with ``allow_zero``."""
    low_ok = value >= 0 if allow_zero else value > 0
    if not (math.isfinite(value) and low_ok and value <= maximum):
        low = "between 0 and" if allow_zero else "above 0 and at most"
        raise SpecError(f"{what} must be {low} {maximum:g}, got {value:g}")


def parse_byte_rate(text: str, *, what: str = "--rate") -> int:
    """Bytes per second from ``50M/s``, ``1G/s`` or ``4096`` (binary units, like sizes)."""
    raw = str(text).strip()
    return parse_size(raw[:-2] if raw.lower().endswith("/s") else raw, what=what)
