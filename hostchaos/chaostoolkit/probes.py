"""Chaos Toolkit probes: what hostchaos has open on this host, and one fault's state."""

from __future__ import annotations

from typing import Any

__all__ = ["fault_state", "open_faults"]


def open_faults(kind: str | None = None) -> list[dict[str, Any]]:
    """The open faults (of ``kind``, if given), as `hostchaos list --json` shows them."""
    from hostchaos.backend import make_engine
    from hostchaos.cli.output import record_summary

    records, _ = make_engine().listing()
    return [dict(record_summary(r)) for r in records if kind is None or r.kind == kind]


def fault_state(fault_id: str) -> str:
    """The state of one fault: active, rolled-back, failed ..."""
    from hostchaos.backend import make_engine

    record, _ = make_engine().status(fault_id)
    return str(record.state)
