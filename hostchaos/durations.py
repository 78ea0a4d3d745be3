"""Parsing and printing of durations such as ``30s``, ``5m``, ``1h30m`` or ``90``."""

from __future__ import annotations

import math
import re

from hostchaos.errors import SpecError

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")


def parse_duration(text: str, *, what: str = "duration") -> float:
    """Return seconds for ``text``; plain numbers are seconds. Must be > 0."""
    raw = text.strip().lower()
    seconds: float
    if re.fullmatch(r"\d+(?:\.\d+)?", raw):
        seconds = float(raw)
    else:
        parts = _PART.findall(raw)
        if not parts or "".join(n + u for n, u in parts) != raw:
            raise SpecError(
                f"{what} {text!r} is not a duration (use e.g. 30s, 5m, 1h, 1h30m or seconds)"
            )
        seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if not math.isfinite(seconds) or seconds <= 0:
        raise SpecError(f"{what} {text!r} must be greater than zero")
    return seconds


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
