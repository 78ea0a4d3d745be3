"""The engine: the only caller of ``apply`` and ``rollback``.

It owns the state machine of every fault::

    pending -> applying -> active -> rolling-back -> rolled-back
                  |                       |
                  +-> (apply failed) -> failed      +-> rollback-failed (sticky, retried by sweep)

and the dead-man's switch: each fault gets a deadline (and optionally a lease)
that a guardian process, not the injecting one, enforces.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hostchaos import faults
from hostchaos.config import Config
from hostchaos.durations import format_duration
from hostchaos.errors import (
    ApplyError,
    ConflictError,
    HostchaosError,
    RollbackError,
    SpecError,
)
from hostchaos.faults.base import Fault, Spec
from hostchaos.journal import (
    ACTIVE,
    APPLYING,
    FAILED,
    PENDING,
    ROLLBACK_FAILED,
    ROLLED_BACK,
    ROLLING_BACK,
    FaultRecord,
    Journal,
    UndoLog,
)
from hostchaos.system.procs import ProcessRef, boot_id

FaultFactory = Callable[[str, dict[str, Any]], Fault]
GuardianSpawner = Callable[[str, str], ProcessRef]

#: ended records are kept this long for `list --all` and `status`, then pruned by sweep
KEEP_ENDED_SECONDS = 7 * 86400


def new_fault_id(kind: str) -> str:
    return f"hc-{kind}-{secrets.token_hex(4)}"


@dataclass
class SweepReport:
    """What one sweep did."""

    rolled_back: list[dict[str, str]] = field(default_factory=list)
    closed_by_reboot: list[str] = field(default_factory=list)
    failed: list[dict[str, str]] = field(default_factory=list)
    quarantined: list[dict[str, str]] = field(default_factory=list)
    still_active: list[str] = field(default_factory=list)
    pruned: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "rolled_back": self.rolled_back,
            "closed_by_reboot": self.closed_by_reboot,
            "failed": self.failed,
            "quarantined": self.quarantined,
            "still_active": self.still_active,
            "pruned": self.pruned,
        }


def why_end(record: FaultRecord, now: float, *, judge_guardian: bool) -> str | None:
    """The reason ``record`` must be rolled back now, or None if it may stay."""
    if record.state == ROLLBACK_FAILED:
        return "retrying a failed rollback"
    if now >= record.expires_at:
        return "deadline reached"
    if record.lease_expires_at is not None and now >= record.lease_expires_at:
        return "lease expired without renewal"
    if record.state in (PENDING, APPLYING) and (
        record.applier is None or not record.applier.alive()
    ):
        return "the injecting process died during apply"
    if judge_guardian and record.state == ACTIVE and (
        record.guardian is None or not record.guardian.alive()
    ):
        return "its guardian is gone"
    return None


class Engine:
    """Applies, tracks and rolls back faults, with a journal record for each."""

    def __init__(
        self,
        config: Config,
        *,
        journal: Journal | None = None,
        fault_factory: FaultFactory = faults.build,
        spawn_guardian: GuardianSpawner | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.journal = journal or Journal(config.state_dir)
        self.fault_factory = fault_factory
        self.spawn_guardian = spawn_guardian
        self.clock = clock

    # -- validation shared by inject and dry-run -----------------------------
    def check_timing(self, duration: float | None, lease: float | None) -> float:
        duration = self.config.default_duration if duration is None else duration
        if duration > self.config.max_duration:
            raise SpecError(
                f"--for {format_duration(duration)} is above the cap max_duration="
                f"{format_duration(self.config.max_duration)} "
                "(raise it in /etc/hostchaos/config.toml)"
            )
        if lease is not None and lease > duration:
            raise SpecError(f"--lease {format_duration(lease)} is longer than the fault's "
                            f"duration {format_duration(duration)}")
        return duration

    def plan(self, spec: Spec, duration: float | None, lease: float | None) -> dict[str, Any]:
        """What ``inject`` would do, checked against the host, changing nothing."""
        total = self.check_timing(duration, lease)
        fault = self.fault_factory(spec.kind, spec.to_dict())
        fault.preflight()
        return {
            "dry_run": True,
            "kind": spec.kind,
            "target": spec.target_label(),
            "plan": fault.describe(),
            "duration": total,
            "lease": lease,
            "spec": spec.to_dict(),
        }

    # -- inject --------------------------------------------------------------
    def inject(self, spec: Spec, duration: float | None = None,
               lease: float | None = None) -> FaultRecord:
        total = self.check_timing(duration, lease)
        fault = self.fault_factory(spec.kind, spec.to_dict())
        self.journal.ensure_writable()
        fault_id = new_fault_id(spec.kind)
        # The guardian starts first, so it is warm (imports done) by the time the
        # fault exists; it waits for the record and leaves if none ever appears.
        guardian = self.spawn_guardian(fault_id, spec.kind) if self.spawn_guardian else None
        saved = False
        try:
            with self.journal.locked():
                self._refuse_overlap(fault)
                fault.preflight()
                now = self.clock()
                record = FaultRecord(
                    id=fault_id, kind=spec.kind, spec=spec.to_dict(),
                    boot_id=boot_id(), created_at=now, expires_at=now + total,
                    survives_reboot=fault.survives_reboot, lease_seconds=lease,
                    lease_expires_at=now + lease if lease else None,
                    applier=ProcessRef.current(), guardian=guardian,
                )
                record.transition(PENDING)
                record.transition(APPLYING)  # one write: the guardian already runs
                self.journal.save(record)
                saved = True
                undo = UndoLog(record, self.journal)
                try:
                    fault.apply(undo)
                except BaseException as exc:
                    self._abort_apply(fault, record, undo, exc)
                    if isinstance(exc, HostchaosError | KeyboardInterrupt | SystemExit):
                        raise
                    raise ApplyError(f"applying {record.id} failed: {exc}; "
                                     "its partial work was rolled back") from exc
                record.transition(ACTIVE)
                self.journal.save(record)
                return record
        finally:
            if guardian is not None and not saved:
                guardian.terminate()

    def _refuse_overlap(self, fault: Fault) -> None:
        peers = [r for r in self.journal.scan()[0] if r.is_open]
        for peer in peers:
            overlap = fault.conflicts(self.fault_factory(peer.kind, peer.spec).spec)
            if overlap:
                raise ConflictError(f"{overlap} already carries fault {peer.id} "
                                    f"(roll it back first: hostchaos rollback {peer.id})")
        if hasattr(fault, "peers"):
            fault.peers = [note for peer in peers for note in peer.undo]

    def _abort_apply(self, fault: Fault, record: FaultRecord, undo: UndoLog,
                     cause: BaseException) -> None:
        record.error = str(cause) or type(cause).__name__
        record.transition(ROLLING_BACK, f"apply failed: {record.error}")
        self.journal.save(record)
        try:
            fault.rollback(undo)
        except Exception as exc:
            record.transition(ROLLBACK_FAILED, str(exc))
            self.journal.save(record)
            raise RollbackError(
                f"applying {record.id} failed ({record.error}) and so did rolling back its "
                f"partial work ({exc}); retry with `hostchaos rollback {record.id}`"
            ) from exc
        record.transition(FAILED)
        record.ended_at = self.clock()
        record.end_reason = "apply failed"
        self.journal.save(record)

    # -- rollback --------------------------------------------------------------
    def rollback(self, fault_id: str, reason: str = "requested") -> FaultRecord:
        with self.journal.locked():
            record = self.journal.load(fault_id)
            if record.is_open:
                self._rollback_locked(record, reason)
            return record

    def rollback_all(self, reason: str = "requested") -> tuple[list[FaultRecord], list[str]]:
        done: list[FaultRecord] = []
        errors: list[str] = []
        with self.journal.locked():
            for record in self.journal.scan()[0]:
                if not record.is_open:
                    continue
                try:
                    self._rollback_locked(record, reason)
                    done.append(record)
                except RollbackError as exc:
                    errors.append(str(exc))
        return done, errors

    def _rollback_locked(self, record: FaultRecord, reason: str) -> None:
        fault = self.fault_factory(record.kind, record.spec)
        record.transition(ROLLING_BACK, reason)
        self.journal.save(record)
        try:
            fault.rollback(UndoLog(record, self.journal))
        except Exception as exc:
            record.error = str(exc)
            record.transition(ROLLBACK_FAILED, str(exc))
            self.journal.save(record)
            raise RollbackError(
                f"rollback of {record.id} failed: {exc}; the host may still carry it and its "
                f"record is kept: retry with `hostchaos rollback {record.id}` or `hostchaos sweep`"
            ) from exc
        record.transition(ROLLED_BACK, reason)
        record.ended_at = self.clock()
        record.end_reason = reason
        self.journal.save(record)

    # -- leases and deadlines -------------------------------------------------------
    def extend(self, fault_id: str, duration: float | None = None) -> FaultRecord:
        """Renew the lease; with ``duration``, also move the deadline to now + duration."""
        with self.journal.locked():
            record = self.journal.load(fault_id)
            if not record.is_open or record.state == ROLLBACK_FAILED:
                raise ConflictError(f"fault {fault_id} is {record.state}; nothing to extend")
            now = self.clock()
            if duration is not None:
                limit = record.created_at + self.config.max_duration
                if now + duration > limit + 1e-6:
                    raise SpecError(
                        f"--for {format_duration(duration)} would keep {fault_id} past the cap "
                        f"max_duration={format_duration(self.config.max_duration)} "
                        f"(at most {format_duration(max(limit - now, 0))} more)"
                    )
                record.expires_at = now + duration
            if record.lease_seconds is not None:
                record.lease_expires_at = min(now + record.lease_seconds, record.expires_at)
            self.journal.save(record)
            return record

    # -- reading --------------------------------------------------------------------
    def list(self, *, include_ended: bool = False) -> list[FaultRecord]:
        records = self.journal.scan(include_ended=include_ended)[0]
        return [r for r in records if include_ended or r.is_open]

    def status(self, fault_id: str) -> tuple[FaultRecord, dict[str, Any]]:
        record = self.journal.load(fault_id)
        observed: dict[str, Any] = {}
        if record.is_open:
            fault = self.fault_factory(record.kind, record.spec)
            try:
                observed = fault.observe(UndoLog(record, None))
            except HostchaosError as exc:
                observed = {"problem": str(exc)}
        return record, observed

    # -- sweep ----------------------------------------------------------------------
    def sweep(self) -> SweepReport:
        """Roll back every fault whose deadline, lease or holder is gone; close reboot leftovers."""
        report = SweepReport()
        self.journal.ensure_writable()
        with self.journal.locked():
            records, unreadable = self.journal.scan(include_ended=True)
            for bad in unreadable:
                moved = self.journal.quarantine(bad)
                report.quarantined.append({"path": str(bad.path), "moved_to": str(moved),
                                           "problem": bad.problem})
            for tmp in self.journal.stale_temp_files():
                tmp.unlink(missing_ok=True)
            this_boot = boot_id()
            now = self.clock()
            for record in records:
                if not record.is_open:
                    if record.ended_at and now - record.ended_at > KEEP_ENDED_SECONDS:
                        self.journal.remove(record.id)
                        report.pruned += 1
                    continue
                if record.boot_id != this_boot and not record.survives_reboot:
                    record.transition(ROLLED_BACK, "the reboot removed it")
                    record.ended_at = now
                    record.end_reason = "the reboot removed it"
                    self.journal.save(record)
                    report.closed_by_reboot.append(record.id)
                    continue
                reason = why_end(record, now, judge_guardian=True)
                if reason is None:
                    report.still_active.append(record.id)
                    continue
                try:
                    self._rollback_locked(record, reason)
                    report.rolled_back.append({"id": record.id, "reason": reason})
                except RollbackError as exc:
                    report.failed.append({"id": record.id, "error": str(exc)})
        return report
