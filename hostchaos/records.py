"""A fault's journal record: what it is, where it stands, and how to take it back out.

A record is stored as one JSON object (see :mod:`hostchaos.journal`). It holds
the kind and spec as asked (plus what resolving the target found), the
deadline and lease, the undo notes the fault wrote before each change, who is
acting on it, and a history of state changes. ``from_dict`` checks every field
it relies on, so a damaged or foreign record is reported as unreadable rather
than half-understood.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

from hostchaos.system.procs import ProcessRef

FORMAT_VERSION = 3
#: formats this version reads: 1 had no ``actor``; 1 and 2 had no boottime deadlines
#: (derived from the wall-clock ones when read) and called the holder ``guardian``
READABLE_FORMATS = (1, 2, 3)

PENDING = "pending"
APPLYING = "applying"
ACTIVE = "active"
ROLLING_BACK = "rolling-back"
ROLLED_BACK = "rolled-back"
ROLLBACK_FAILED = "rollback-failed"
FAILED = "failed"  # apply failed and its partial work was rolled back

OPEN_STATES = (PENDING, APPLYING, ACTIVE, ROLLING_BACK, ROLLBACK_FAILED)
ENDED_STATES = (ROLLED_BACK, FAILED)
STATES = OPEN_STATES + ENDED_STATES

#: what a fault id may look like (hc-<kind>-<8 hex> in practice); anything else is not a fault
FAULT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def boottime() -> float:
    """Seconds on CLOCK_BOOTTIME: the clock deadlines are judged on.

    It counts from boot (suspend included) and no clock fault, NTP step or
    ``date -s`` moves it; its values mean something only within the boot the
    record's ``boot_id`` names.
    """
    return time.clock_gettime(time.CLOCK_BOOTTIME)


@dataclass
class FaultRecord:
    """Everything needed to judge and roll back one fault, as stored on disk."""

    id: str
    kind: str
    spec: dict[str, Any]
    boot_id: str
    created_at: float
    expires_at: float
    survives_reboot: bool
    #: the deadline on CLOCK_BOOTTIME (see :func:`boottime`); ``expires_at`` is for display.
    #: None when made (or read from an old format) with wall-clock times only: then derived
    #: from them once, on creation, for this boot
    expires_boottime: float = None  # type: ignore[assignment]
    #: when it was created, on CLOCK_BOOTTIME (the max_duration cap counts from here)
    created_boottime: float = None  # type: ignore[assignment]
    state: str = PENDING
    #: the fault's one-line description, as it was when applied
    summary: str | None = None
    lease_seconds: float | None = None
    lease_expires_at: float | None = None
    lease_expires_boottime: float | None = None
    undo: list[dict[str, Any]] = field(default_factory=list)
    #: the process enforcing its deadline and lease (the warden, or the agent hosting it)
    holder: ProcessRef | None = None
    applier: ProcessRef | None = None
    #: the process changing the host for this fault right now (applying or rolling back)
    actor: ProcessRef | None = None
    error: str | None = None
    ended_at: float | None = None
    end_reason: str | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    #: not stored: the record was read from its copy because the file itself was damaged
    salvaged: bool = field(default=False, compare=False)

    def __post_init__(self) -> None:
        if self.expires_boottime is None or self.created_boottime is None:
            offset = boottime() - time.time()
            self.created_boottime = self.created_at + offset
            self.expires_boottime = self.expires_at + offset
            if self.lease_expires_at is not None:
                self.lease_expires_boottime = self.lease_expires_at + offset

    @property
    def is_open(self) -> bool:
        return self.state in OPEN_STATES

    def transition(self, state: str, reason: str | None = None) -> None:
        self.state = state
        event: dict[str, Any] = {"at": round(time.time(), 3), "state": state}
        if reason:
            event["reason"] = reason
        self.events.append(event)

    def remark(self, text: str) -> None:
        """Tell the operator something the fault had to do differently (`status`, `list` show it).

        Kept as an event (in the current state) and saved with the record's next write.
        """
        if text not in self.remarks:
            self.events.append({"at": round(time.time(), 3), "state": self.state,
                                "remark": text})

    @property
    def remarks(self) -> list[str]:
        return [str(e["remark"]) for e in self.events if e.get("remark")]

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT_VERSION,
            "id": self.id,
            "kind": self.kind,
            "state": self.state,
            "spec": self.spec,
            "summary": self.summary,
            "boot_id": self.boot_id,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "lease_seconds": self.lease_seconds,
            "lease_expires_at": self.lease_expires_at,
            "created_boottime": self.created_boottime,
            "expires_boottime": self.expires_boottime,
            "lease_expires_boottime": self.lease_expires_boottime,
            "survives_reboot": self.survives_reboot,
            "undo": self.undo,
            "holder": self.holder.to_dict() if self.holder else None,
            "applier": self.applier.to_dict() if self.applier else None,
            "actor": self.actor.to_dict() if self.actor else None,
            "error": self.error,
            "ended_at": self.ended_at,
            "end_reason": self.end_reason,
            "events": self.events,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FaultRecord:
        """A record from its stored form; ValueError/KeyError/TypeError if it is not one."""
        version = data.get("format", 1)
        if version not in READABLE_FORMATS:
            raise ValueError(f"format {version!r} is not one this hostchaos reads "
                             f"({', '.join(map(str, READABLE_FORMATS))}): written by a newer "
                             "version?")
        state = _typed(data, "state", str)
        if state not in STATES:
            raise ValueError(f"unknown state {state!r}")
        undo = data.get("undo") or []
        if not isinstance(undo, list) or not all(isinstance(n, dict) for n in undo):
            raise TypeError("undo is not a list of notes")
        fault_id = _typed(data, "id", str)
        if not FAULT_ID.fullmatch(fault_id):
            raise ValueError(f"bad fault id {fault_id!r}")
        created_at, expires_at = float(data["created_at"]), float(data["expires_at"])
        lease_expires_at = _opt_float(data.get("lease_expires_at"))
        created_boot: float | None = None  # older formats: derived from the wall clock
        expires_boot: float | None = None
        lease_boot: float | None = None
        if version >= 3:
            created_boot = float(data["created_boottime"])
            expires_boot = float(data["expires_boottime"])
            lease_boot = _opt_float(data.get("lease_expires_boottime"))
        return cls(
            id=fault_id,
            kind=_typed(data, "kind", str),
            spec=_typed(data, "spec", dict),
            boot_id=_typed(data, "boot_id", str),
            created_at=created_at,
            expires_at=expires_at,
            survives_reboot=bool(data["survives_reboot"]),
            expires_boottime=expires_boot,  # type: ignore[arg-type]
            created_boottime=created_boot,  # type: ignore[arg-type]
            state=state,
            summary=data["summary"] if isinstance(data.get("summary"), str) else None,
            lease_seconds=_opt_float(data.get("lease_seconds")),
            lease_expires_at=lease_expires_at,
            lease_expires_boottime=lease_boot,
            undo=undo,
            holder=ProcessRef.from_dict(data.get("holder", data.get("guardian"))),
            applier=ProcessRef.from_dict(data.get("applier")),
            actor=ProcessRef.from_dict(data.get("actor")),
            error=data.get("error"),
            ended_at=_opt_float(data.get("ended_at")),
            end_reason=data.get("end_reason"),
            events=list(data.get("events") or []),
        )


def _typed(data: dict[str, Any], key: str, kind: type) -> Any:
    value = data[key]
    if not isinstance(value, kind):
        raise TypeError(f"{key} is {type(value).__name__}, not {kind.__name__}")
    return value


def _opt_float(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]
