"""When a fault must end, and what a sweep did: the rules sweep and the guardian share."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hostchaos.records import ACTIVE, APPLYING, PENDING, ROLLBACK_FAILED, ROLLING_BACK, FaultRecord


@dataclass
class SweepReport:
    """What one sweep did."""

    rolled_back: list[dict[str, str]] = field(default_factory=list)
    closed_by_reboot: list[str] = field(default_factory=list)
    failed: list[dict[str, str]] = field(default_factory=list)
    unreadable: list[dict[str, str]] = field(default_factory=list)
    still_active: list[str] = field(default_factory=list)
    pruned: int = 0
    #: leftovers of closed faults removed from the state directory (e.g. namespace handles)
    leftovers: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rolled_back": self.rolled_back,
            "closed_by_reboot": self.closed_by_reboot,
            "failed": self.failed,
            "unreadable": self.unreadable,
            "still_active": self.still_active,
            "pruned": self.pruned,
            "leftovers": self.leftovers,
        }


def why_end(record: FaultRecord, now: float, *, judge_guardian: bool) -> str | None:
    """The reason ``record`` must be rolled back now, or None if it may stay."""
    if record.state == ROLLBACK_FAILED:
        return "retrying a failed rollback"
    if now >= record.expires_at:
        return "deadline reached"
    if record.lease_expires_at is not None and now >= record.lease_expires_at:
        return "lease expired without renewal"
    actor = record.actor or record.applier
    if record.state in (PENDING, APPLYING) and (actor is None or not actor.alive()):
        return "the injecting process died during apply"
    if record.state == ROLLING_BACK and (record.actor is None or not record.actor.alive()):
        return "the process rolling it back died"
    if judge_guardian and record.state == ACTIVE and (
        record.guardian is None or not record.guardian.alive()
    ):
        return "its guardian is gone"
    return None
