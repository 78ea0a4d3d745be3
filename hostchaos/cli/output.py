"""Printing for the CLI: one shape for text and JSON."""

from __future__ import annotations

import datetime as dt
import time
from typing import TYPE_CHECKING, Any

import click

from hostchaos.quantities import format_duration
from hostchaos.rendering import EXTRA_KEYS as EXTRA_KEYS
from hostchaos.rendering import clock_time as clock_time
from hostchaos.rendering import json_text
from hostchaos.rendering import printable as printable
from hostchaos.rendering import timestamp as timestamp

if TYPE_CHECKING:
    from hostchaos.records import FaultRecord


def emit_json(data: Any) -> None:
    click.echo(json_text(data))


def record_summary(record: FaultRecord) -> dict[str, Any]:
    """The public view of a fault (what --json prints)."""
    from hostchaos import faults

    try:
        target = faults.fault_class(record.kind).spec_type.from_dict(record.spec).target_label()
    except Exception:
        target = "?"
    return {
        "id": record.id,
        "kind": record.kind,
        "state": record.state,
        "target": target,
        "summary": record.summary,
        "spec": record.spec,
        "created_at": _iso(record.created_at),
        "expires_at": _iso(record.expires_at),
        "lease_seconds": record.lease_seconds,
        "lease_expires_at": _iso(record.lease_expires_at),
        "holder_pid": record.holder.pid if record.holder else None,
        "error": record.error,
        "ended_at": _iso(record.ended_at),
        "end_reason": record.end_reason,
        "remarks": record.remarks,
    }


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds")


def is_open(view: dict[str, Any]) -> bool:
    from hostchaos.records import OPEN_STATES

    return view["state"] in OPEN_STATES


def seconds_left(record: FaultRecord) -> float | None:
    """Seconds until the deadline, on the deadline clock as the warden judges it."""
    from hostchaos.records import boottime
    from hostchaos.system.procs import boot_id

    if not record.is_open:
        return None
    if record.boot_id == boot_id():
        return record.expires_boottime - boottime()
    return record.expires_at - time.time()


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
