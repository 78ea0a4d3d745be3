"""What the commands print for a fault: the same text whoever prints it.

The click commands (:mod:`hostchaos.cli`) and the agent fast path
(:mod:`hostchaos.fastpath`) both build their lines here, so `hostchaos
inject ...` prints the same bytes whether click parsed it or not. Standard
library only: the fast path must not import click.
"""

from __future__ import annotations

import datetime as dt
import json

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (the fast path)

if TYPE_CHECKING:
    from typing import Any

#: fields of a fault's view (hostchaos.agent.service) that --json leaves out: the text needs them
EXTRA_KEYS = ("salvaged", "holder_alive", "drift", "seconds_left")


def json_text(data: Any) -> str:
    """``data`` as every --json output prints it (indented, keys sorted)."""
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
