"""What the commands print for a fault: the same text whoever prints it.

The click commands (:mod:`hostchaos.cli`) and the agent fast path
(:mod:`hostchaos.fastpath`) both build their lines here, so `hostchaos
inject ...` prints the same bytes whether click parsed it or not. Standard
library only at import (the fast path must not import click); the views'
builders import the kinds when they are called.
"""

from __future__ import annotations

import datetime as dt
import time

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (the fast path)

if TYPE_CHECKING:
    from typing import Any

    from hostchaos.records import FaultRecord

#: fields of a fault's view (hostchaos.agent.service) that --json leaves out: the text needs them
EXTRA_KEYS = ("salvaged", "holder_alive", "drift", "seconds_left")


def json_text(data: Any) -> str:
    """``data`` as every --json output prints it (indented, keys sorted)."""
    import json  # here: it loads re and enum, which the text output does without

    return json.dumps(data, indent=2, sort_keys=True, default=str)


def clock_time(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts).astimezone().strftime("%H:%M:%S")


def timestamp(iso: str) -> float:
    """The epoch seconds of a time as a view holds it (ISO 8601, UTC)."""
    return dt.datetime.fromisoformat(iso).timestamp()


def printable(view: dict[str, Any]) -> dict[str, Any]:
    """A view as --json prints it (without the fields only the text output uses)."""
    return {k: v for k, v in view.items() if k not in EXTRA_KEYS}


def injected_lines(view: dict[str, Any]) -> tuple[str, str]:
    """`inject`'s two lines: the id (stdout) and what was done (stderr)."""
    return view["id"], (f"{view['kind']}: {view['summary']}, "
                        f"until {clock_time(timestamp(view['expires_at']))}; "
                        f"roll back with: hostchaos rollback {view['id']}")


def plan_line(plan: dict[str, Any], lease: float | None) -> str:
    """`inject --dry-run`'s line."""
    from hostchaos.quantities import format_duration

    return (f"would {plan['plan']} for {format_duration(plan['duration'])}"
            + (f" (lease {format_duration(lease)})" if lease else "")
            + "; nothing was changed")


def extended_line(view: dict[str, Any]) -> str:
    """`extend`'s line."""
    line = f"{view['id']} until {clock_time(timestamp(view['expires_at']))}"
    if view["lease_expires_at"]:
        line += f", lease renewed until {clock_time(timestamp(view['lease_expires_at']))}"
    return line


def ended_lines(view: dict[str, Any]) -> list[str]:
    """`rollback`'s lines for one fault."""
    return [f"{view['id']} {view['state']}", *(f"  remark: {r}" for r in view["remarks"])]


def record_summary(record: FaultRecord) -> dict[str, Any]:
    """The public view of a fault (what --json prints): the base of every view."""
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


def seconds_left(record: FaultRecord) -> float | None:
    """Seconds until the deadline, on the deadline clock as the warden judges it."""
    from hostchaos.records import boottime
    from hostchaos.system.procs import boot_id

    if not record.is_open:
        return None
    if record.boot_id == boot_id():
        return record.expires_boottime - boottime()
    return record.expires_at - time.time()
