"""When a fault must end, and what a sweep did: the rules sweep and the warden share.

Deadlines and leases are judged on CLOCK_BOOTTIME (:func:`hostchaos.records.boottime`),
which no clock fault, NTP step or ``date -s`` moves.
"""

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


def why_end(record: FaultRecord, boot_now: float, *, judge_holder: bool) -> str | None:
    """The reason ``record`` must be rolled back now, or None if it may stay.

    ``boot_now`` is the time on CLOCK_BOOTTIME (the record must be of this boot).
    """
    if record.state == ROLLBACK_FAILED:
        return "retrying a failed rollback"
    if boot_now >= record.expires_boottime:
        return "deadline reached"
    if record.lease_expires_boottime is not None and boot_now >= record.lease_expires_boottime:
        return "lease expired without renewal"
    actor = record.actor or record.applier
    if record.state in (PENDING, APPLYING) and (actor is None or not actor.alive()):
        return "the injecting process died during apply"
    if record.state == ROLLING_BACK and (record.actor is None or not record.actor.alive()):
        return "the process rolling it back died"
    if judge_holder and record.state == ACTIVE and (
        record.holder is None or not record.holder.alive()
    ):
        return "its warden is gone"
    return None


def next_due(record: FaultRecord) -> float:
    """When (on CLOCK_BOOTTIME) ``record`` must end at the latest: its deadline or its lease."""
    if record.lease_expires_boottime is None:
        return record.expires_boottime
    return min(record.expires_boottime, record.lease_expires_boottime)
