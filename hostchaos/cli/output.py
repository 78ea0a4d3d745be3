"""Printing for the CLI: one shape for text and JSON."""

from __future__ import annotations

import time
from typing import Any

import click

from hostchaos.quantities import format_duration
from hostchaos.rendering import EXTRA_KEYS as EXTRA_KEYS
from hostchaos.rendering import clock_time as clock_time
from hostchaos.rendering import json_text
from hostchaos.rendering import printable as printable
from hostchaos.rendering import record_summary as record_summary
from hostchaos.rendering import seconds_left as seconds_left
from hostchaos.rendering import timestamp as timestamp


def emit_json(data: Any) -> None:
    click.echo(json_text(data))


def is_open(view: dict[str, Any]) -> bool:
    from hostchaos.records import OPEN_STATES

    return view["state"] in OPEN_STATES


def remaining(view: dict[str, Any]) -> str:
    """Time left of a fault's view, as `list` and `status` show it."""
    if not is_open(view):
        return "-"
    left = view.get("seconds_left")
    if left is None:
        left = timestamp(view["expires_at"]) - time.time()
    return format_duration(left) if left > 0 else "due"


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
             for r in [header, *rows]]
    return "\n".join(lines)
