"""The engine: the only caller of ``apply`` and ``rollback``.

It owns the state machine of every fault::

    pending -> applying -> active -> rolling-back -> rolled-back
                  |                       |
                  +-> (apply failed) -> failed      +-> rollback-failed (sticky, retried by sweep)

and the dead-man's switch: each fault gets a deadline (and optionally a lease)
that the warden (:mod:`hostchaos.warden`), not the injecting process, enforces;
deadlines are judged on CLOCK_BOOTTIME, which no clock fault moves.

Two rules keep a fault from being lost:

- Rollback puts the host back *first* and journals after, best effort: a full
  or read-only state directory, or a record this version cannot fully parse,
  never stands between a fault and its removal. Rollback needs only the undo
  notes, not a spec that still validates.
- Every record is handled on its own: one record that cannot be read or rolled
  back is reported, and the others proceed.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Protocol

from hostchaos import faults
from hostchaos.config import Config
from hostchaos.deadlines import SweepReport, why_end
from hostchaos.errors import (
    ApplyError,
    ConflictError,
    HostchaosError,
    JournalError,
    RollbackError,
    SpecError,
)
from hostchaos.faults.base import Fault, Peer, Spec
from hostchaos.journal import Journal, UndoLog, UnreadableRecord, crash_hook_in_rollback
from hostchaos.open_records import OpenRecordCache
from hostchaos.quantities import format_duration
from hostchaos.records import (
    ACTIVE,
    APPLYING,
    FAILED,
    PENDING,
    ROLLBACK_FAILED,
    ROLLED_BACK,
    ROLLING_BACK,
    FaultRecord,
)
from hostchaos.records import boottime as records_boottime
from hostchaos.system.procs import ProcessRef, boot_id

FaultFactory = Callable[[str, dict[str, Any]], Fault]
FaultClassLookup = Callable[[str], type[Fault]]


class WardenStarter(Protocol):
    """How the engine makes sure a warden guards the state directory (see hostchaos.warden)."""

    def prestart(self, kind: str | None = None) -> None:
        """Start one early if none runs (before the state lock), warm for ``kind``."""

    def ensure(self) -> ProcessRef:
        """The live warden (started if needed; called under the state lock); ApplyError if none."""
        ...


#: ended records are kept this long for `list --all` and `status`, then pruned by sweep
KEEP_ENDED_SECONDS = 7 * 86400


def new_fault_id(kind: str) -> str:
    return f"hc-{kind}-{os.urandom(4).hex()}"  # secrets.token_hex, without its imports


class Engine:
    """Applies, tracks and rolls back faults, with a journal record for each."""

    def __init__(
        self,
        config: Config,
        *,
        journal: Journal | None = None,
        fault_factory: FaultFactory = faults.build,
        fault_class: FaultClassLookup = faults.fault_class,
        warden: WardenStarter | None = None,
        clock: Callable[[], float] = time.time,
        boottime: Callable[[], float] = records_boottime,
    ) -> None:
        self.config = config
        self.journal = journal or Journal(config.state_dir)
        self.fault_factory = fault_factory
        self.fault_class = fault_class
        #: starts the warden on demand; None: whoever made the engine guards its faults
        self.warden = warden
        #: the open faults as last read, each read again only once it changed
        self._open_records = OpenRecordCache(self.journal, self._peer_of)
        #: wall clock: for display and record keeping only
        self.clock = clock
        #: CLOCK_BOOTTIME: what deadlines and leases are judged on
        self.boottime = boottime

    def _locked(self, purpose: str) -> AbstractContextManager[None]:
        return self.journal.locked(purpose=purpose, timeout=self.config.lock_timeout)

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
        fault = self.fault_class(spec.kind)(spec)
        fault.resolve()
        spec = fault.spec  # as resolved: a container's pid, a host's addresses ...
        peers = self.peers()
        self._refuse_overlap(fault, peers)
        fault.peers, fault.state_dir = peers, self.journal.state_dir
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
        fault = self.fault_class(spec.kind)(spec)
        fault.resolve()  # slow lookups happen here, never under the lock
        spec = fault.spec  # as resolved: a container's pid, a host's addresses ...
        self.journal.prepare()
        fault_id = new_fault_id(spec.kind)
        if self.warden is not None:
            self.warden.prestart(spec.kind)  # warm by the time it is needed, if none runs
        with self._locked(f"inject {spec.kind} {fault_id}"):
            peers = self.peers()
            self._refuse_overlap(fault, peers)
            fault.peers, fault.state_dir = peers, self.journal.state_dir
            fault.preflight()
            # under the state lock: a warden deciding to exit does so before or after this
            # fault exists, never while it is being written
            holder = self.warden.ensure() if self.warden is not None else None
            now, boot_now = self.clock(), self.boottime()
            me = ProcessRef.current()
            record = FaultRecord(
                id=fault_id, kind=spec.kind, spec=spec.to_dict(), summary=fault.describe(),
                boot_id=boot_id(), created_at=now, expires_at=now + total,
                created_boottime=boot_now, expires_boottime=boot_now + total,
                survives_reboot=fault.survives_reboot, lease_seconds=lease,
                lease_expires_at=now + lease if lease else None,
                lease_expires_boottime=boot_now + lease if lease else None,
                applier=me, actor=me, holder=holder,
            )
            record.transition(PENDING)
            record.transition(APPLYING)  # one write: the warden already runs
            if not fault.notes_first:  # otherwise its first note writes the record
                self.journal.save(record)
            undo = UndoLog(record, self.journal)
            try:
                fault.apply(undo)
            except BaseException as exc:
                self._abort_apply(fault, record, exc)
                if isinstance(exc, HostchaosError | KeyboardInterrupt | SystemExit):
                    raise
                raise ApplyError(f"applying {record.id} failed: {exc}; "
                                 "its partial work was rolled back") from exc
            record.transition(ACTIVE)
            record.actor = None
            try:
                # the copy keeps the notes as applying wrote them: a fault salvaged from it
                # reads as applying and is rolled back when its actor is gone, or at its deadline
                self.journal.save(record, with_copy=False)
            except JournalError as exc:  # the fault is on the host but not marked active
                self._abort_apply(fault, record, exc)
                raise
        if holder is not None and self.warden is not None and not holder.alive():
            self.warden.ensure()  # the warden died meanwhile: its successor adopts the fault
        return record

    def revive_warden(self) -> ProcessRef | None:
        """Start a warden if open records exist and none guards them (every command does this).

        The new warden rolls back at once whatever became overdue meanwhile.
        """
        if self.warden is None or not self.journal.has_open_records():
            return None
        return self.warden.ensure()

    def adopt(self, fault_ids: list[str], holder: ProcessRef) -> None:
        """Name ``holder`` (a warden that took over) the holder of these open faults."""
        with self._locked("warden adopts faults"):
            for fault_id in fault_ids:
                record = self.journal.find(fault_id)
                if record is not None and record.is_open and record.holder != holder:
                    record.holder = holder
                    self.journal.save(record)

    def peers(self, *, leaving: str | None = None) -> list[Peer]:
        """Every open fault the journal can read, with its spec where it still validates.

        Read afresh every time, but only what changed since the last call is
        parsed again (:class:`~hostchaos.open_records.OpenRecordCache`): a
        warden rolling back a thousand faults would otherwise parse a thousand
        records for each. ``leaving``: a fault being rolled back, left out
        unread (it is not its own peer).
        """
        return self._open_records.current(leaving=leaving)

    def _peer_of(self, record: FaultRecord) -> Peer | None:
        found = self._peers_of([record])
        return found[0] if found else None

    def _peers_of(self, records: list[FaultRecord]) -> list[Peer]:
        out = []
        for record in records:
            if not record.is_open:
                continue
            try:
                spec: Spec | None = self.fault_factory(record.kind, record.spec).spec
            except Exception:  # another version's spec: its notes still tell what it holds
                spec = None
            out.append(Peer(record.id, record.kind, spec, record.undo))
        return out

    @staticmethod
    def _refuse_overlap(fault: Fault, peers: list[Peer]) -> None:
        for peer in peers:
            overlap = fault.conflicts(peer)
            if overlap:
                raise ConflictError(f"{overlap} already carries fault {peer.id} "
                                    f"(roll it back first: hostchaos rollback {peer.id})")

    def _abort_apply(self, fault: Fault, record: FaultRecord, cause: BaseException) -> None:
        record.error = str(cause) or type(cause).__name__
        try:
            self._rollback_host(fault, record, f"apply failed: {record.error}")
        except RollbackError as exc:
            raise RollbackError(
                f"applying {record.id} failed ({record.error}) and so did rolling back its "
                f"partial work ({exc.__cause__ or exc}); retry with "
                f"`hostchaos rollback {record.id}`") from exc
        record.transition(FAILED)
        record.ended_at = self.clock()
        record.end_reason = "apply failed"
        self._save_quietly(record)  # if this fails the record says rolling-back: sweep closes it

    # -- rollback --------------------------------------------------------------
    def rollback(self, fault_id: str, reason: str = "requested", *,
                 last_good: FaultRecord | None = None) -> FaultRecord:
        """Roll ``fault_id`` back. ``last_good``: the copy to use if the record cannot be read."""
        with self._locked(f"rollback {fault_id}"):
            record = self._load_or(fault_id, last_good)
            if record.is_open:
                self._rollback_locked(record, reason, self.peers(leaving=record.id))
            return record

    def _load_or(self, fault_id: str, last_good: FaultRecord | None) -> FaultRecord:
        """The record of ``fault_id``; ``last_good`` (a copy) if it cannot be read."""
        try:
            return self.journal.load(fault_id)
        except HostchaosError:
            if last_good is None:
                raise
            return last_good

    def rollback_many(self, items: list[tuple[str, str, FaultRecord | None]], *,
                      max_seconds: float | None = None
                      ) -> list[tuple[str, FaultRecord | Exception]]:
        """Roll back several faults under one hold of the state lock (the warden's batch).

        ``items``: (fault id, reason, last good copy or None), in order. The
        open faults (peers) are read once and the set shrinks as each fault
        ends; each record is still saved ``rolling-back`` before its host
        changes and closed right after, so a crash anywhere leaves every record
        either closed, rolling-back with a dead actor, or untouched: the next
        warden or sweep finishes them. One fault's failure is its result, and
        the others proceed. With ``max_seconds``, stops taking new items once
        the lock has been held that long (the untried ones are not in the
        result), so other commands get the lock between batches.
        """
        results: list[tuple[str, FaultRecord | Exception]] = []
        if not items:
            return results
        with self._locked(f"rollback of {len(items)} due faults"):
            started = time.monotonic()
            peers = self.peers()
            for fault_id, reason, last_good in items:
                if max_seconds is not None and results \
                        and time.monotonic() - started >= max_seconds:
                    break
                try:
                    record = self._load_or(fault_id, last_good)
                    if record.is_open:
                        self._rollback_locked(record, reason, peers)
                    results.append((fault_id, record))
                except Exception as exc:  # a bug in one kind must not stop the batch
                    results.append((fault_id, exc))
        return results

    def rollback_all(self, reason: str = "requested") -> tuple[list[FaultRecord], list[str]]:
        done: list[FaultRecord] = []
        errors: list[str] = []
        with self._locked("rollback --all"):
            records, unreadable = self.journal.scan()
            peers = self._peers_of(records)
            for record in records:
                if not record.is_open:
                    continue
                try:
                    self._rollback_locked(record, reason, peers)
                    done.append(record)
                except HostchaosError as exc:
                    errors.append(str(exc))
            errors.extend(self._unreadable_message(bad) for bad in unreadable)
        return done, errors

    def _rollback_locked(self, record: FaultRecord, reason: str, peers: list[Peer]) -> None:
        """Roll ``record`` back; ``peers`` (all open faults) loses it once it is closed."""
        try:
            fault = self._fault_for_rollback(record)
        except HostchaosError as exc:
            raise self._rollback_failed(record, exc, f"cannot roll back {record.id}: {exc}; "
                                                     "its record is kept") from exc
        others = [p for p in peers if p.id != record.id]
        fault.peers = others
        self._rollback_host(fault, record, reason)
        peers[:] = others  # one pass per fault: a batch of n costs O(n) each, not more
        record.transition(ROLLED_BACK, reason)
        record.ended_at = self.clock()
        record.end_reason = reason
        try:
            self.journal.save(record)
        except JournalError as exc:
            raise JournalError(
                f"{record.id} was rolled back on the host, but its record could not be "
                f"closed ({exc}); once the state directory is writable again, run `hostchaos "
                f"rollback {record.id}` to close it (its warden keeps retrying too)") from exc

    def _rollback_host(self, fault: Fault, record: FaultRecord, reason: str) -> None:
        """Take the fault out of the host; the journal is written only as far as it can be."""
        record.transition(ROLLING_BACK, reason)
        record.actor = ProcessRef.current()
        self._save_quietly(record, with_copy=False)  # one write fewer per rollback
        crash_hook_in_rollback("before")
        try:
            fault.rollback(UndoLog(record, None))
            crash_hook_in_rollback("after")
        except Exception as exc:
            error = str(exc) or type(exc).__name__
            raise self._rollback_failed(
                record, exc, f"rollback of {record.id} failed: {error}; the host may still "
                f"carry it and its record is kept: retry with `hostchaos rollback {record.id}` "
                "or `hostchaos sweep`") from exc

    def _rollback_failed(self, record: FaultRecord, cause: Exception,
                         message: str) -> RollbackError:
        """Mark ``record`` rollback-failed (saved if the journal lets us); the error to raise."""
        record.error = str(cause) or type(cause).__name__
        record.transition(ROLLBACK_FAILED, record.error)
        self._save_quietly(record)
        return RollbackError(message)

    def _fault_for_rollback(self, record: FaultRecord) -> Fault:
        """The record's fault; with no spec when the stored one no longer validates."""
        try:
            return self.fault_factory(record.kind, record.spec)
        except SpecError:
            # an unknown kind raises SpecError here: nothing knows how to roll it back
            return self.fault_class(record.kind).for_rollback()

    def _save_quietly(self, record: FaultRecord, *, with_copy: bool = True) -> str | None:
        """Save ``record`` if the journal lets us; return the problem otherwise."""
        try:
            self.journal.save(record, with_copy=with_copy)
        except JournalError as exc:
            return str(exc)
        return None

    @staticmethod
    def _unreadable_message(bad: UnreadableRecord) -> str:
        return (f"fault record {bad.path} is unreadable ({bad.problem}) and has no good copy; "
                "the host may still carry its fault: inspect the file, roll the fault back by "
                "hand if needed, then remove the file")

    # -- leases and deadlines -------------------------------------------------------
    def extend(self, fault_id: str, duration: float | None = None) -> FaultRecord:
        """Renew the lease; with ``duration``, also move the deadline to now + duration."""
        with self._locked(f"extend {fault_id}"):
            record = self.journal.load(fault_id)
            if not record.is_open or record.state == ROLLBACK_FAILED:
                raise ConflictError(f"fault {fault_id} is {record.state}; nothing to extend")
            now, boot_now = self.clock(), self.boottime()
            if duration is not None:
                limit = record.created_boottime + self.config.max_duration
                if boot_now + duration > limit + 1e-6:
                    raise SpecError(
                        f"--for {format_duration(duration)} would keep {fault_id} past the cap "
                        f"max_duration={format_duration(self.config.max_duration)} "
                        f"(at most {format_duration(max(limit - boot_now, 0))} more)"
                    )
                record.expires_at = now + duration
                record.expires_boottime = boot_now + duration
            if record.lease_seconds is not None:
                record.lease_expires_boottime = min(boot_now + record.lease_seconds,
                                                    record.expires_boottime)
                record.lease_expires_at = now + (record.lease_expires_boottime - boot_now)
            self.journal.save(record)
            return record

    def add_notes(self, fault_id: str, notes: list[dict[str, Any]]) -> None:
        """Append what an open fault did in the background (a kill loop's kills) to its record."""
        with self._locked(f"notes {fault_id}"):
            record = self.journal.load(fault_id)
            if record.is_open:
                record.undo.extend(notes)
                self.journal.save(record)

    # -- reading --------------------------------------------------------------------
    def listing(self, *, include_ended: bool = False
             ) -> tuple[list[FaultRecord], list[UnreadableRecord]]:
        """Open records (and ended ones if asked), and the records nobody can read."""
        records, unreadable = self.journal.scan(include_ended=include_ended)
        return [r for r in records if include_ended or r.is_open], unreadable

    def status(self, fault_id: str) -> tuple[FaultRecord, dict[str, Any]]:
        record = self.journal.load(fault_id)
        observed: dict[str, Any] = {}
        if record.is_open:
            try:
                fault = self.fault_factory(record.kind, record.spec)
                observed = fault.observe(UndoLog(record, None))
            except HostchaosError as exc:
                observed = {"problem": str(exc)}
        return record, observed

    # -- sweep ----------------------------------------------------------------------
    def sweep(self, *, orphans: bool = True) -> SweepReport:
        """Roll back every fault whose deadline, lease or holder is gone; close reboot leftovers.

        ``orphans=False`` leaves active faults whose holder is gone (the agent,
        which is about to adopt them with their original deadlines).

        Needs no write access to roll back: a full or read-only state directory
        still gets its faults taken out (their records are closed later).
        """
        report = SweepReport()
        with self._locked("sweep"):
            records, unreadable = self.journal.scan()  # open ones: ended ones are pruned below
            for bad in unreadable:
                report.unreadable.append({"path": str(bad.path), "problem": bad.problem})
                report.failed.append({"id": bad.fault_id,
                                      "error": self._unreadable_message(bad)})
            for tmp in self.journal.stale_temp_files():
                tmp.unlink(missing_ok=True)
            this_boot = boot_id()
            now, boot_now = self.clock(), self.boottime()
            # the open faults of this boot (and those that outlive a reboot): a reboot took
            # the others, which are closed without touching the host
            peers = self._peers_of([r for r in records
                                    if r.boot_id == this_boot or r.survives_reboot])
            for record in records:
                try:
                    self._sweep_one(record, this_boot, now, boot_now, report, peers,
                                    orphans=orphans)
                except HostchaosError as exc:
                    report.failed.append({"id": record.id, "error": str(exc)})
                except Exception as exc:  # a bug in one kind must not stop the sweep
                    report.failed.append({"id": record.id,
                                          "error": f"internal error: {type(exc).__name__}: "
                                                   f"{exc}"})
            self._prune_ended(now, report)
            keep = {r.id for r in records if r.is_open} | {bad.fault_id for bad in unreadable}
            self._sweep_leftovers(keep, report)
        return report

    def _prune_ended(self, now: float, report: SweepReport) -> None:
        """Remove ended records that ended more than KEEP_ENDED_SECONDS ago.

        Only the files last written before then are read: an ended record is
        written when its fault ends, so a younger file holds a younger record
        (a record rewritten later is pruned that much later). A sweep of a
        journal holding thousands of ended records thus reads none of them.
        """
        for path in self.journal.ended_written_before(now - KEEP_ENDED_SECONDS + 60):
            try:
                record = self.journal.read_path(path)
            except FileNotFoundError:
                continue
            except JournalError as exc:  # both it and its copy damaged: show it, keep it
                report.unreadable.append({"path": str(path),
                                          "problem": getattr(exc, "problem", str(exc))})
                continue
            if not record.is_open and record.ended_at and now - record.ended_at > \
                    KEEP_ENDED_SECONDS and record.id == path.name.removesuffix(".json"):
                self.journal.remove(record.id)
                report.pruned += 1

    def _sweep_leftovers(self, keep: set[str], report: SweepReport) -> None:
        """Let each kind remove what its closed faults left in the state directory."""
        seen = set()
        for kind in faults.KINDS:
            try:
                sweep = self.fault_class(kind).sweep_leftovers
                if sweep.__qualname__ in seen:  # kinds sharing one implementation run it once
                    continue
                seen.add(sweep.__qualname__)
                report.leftovers.extend(sweep(self.journal.state_dir, keep))
            except HostchaosError as exc:
                report.failed.append({"id": f"{kind} leftovers", "error": str(exc)})

    def _sweep_one(self, record: FaultRecord, this_boot: str, now: float, boot_now: float,
                   report: SweepReport, peers: list[Peer], *, orphans: bool = True) -> None:
        if not record.is_open:  # ended meanwhile (scan lists open records only)
            return
        if record.boot_id != this_boot and not record.survives_reboot:
            record.transition(ROLLED_BACK, "the reboot removed it")
            record.ended_at = now
            record.end_reason = "the reboot removed it"
            self.journal.save(record)
            report.closed_by_reboot.append(record.id)
            return
        if record.boot_id != this_boot:  # it survives reboots (a fill file): take it out now
            reason: str | None = "it outlived a reboot of the host"
        else:
            reason = why_end(record, boot_now, judge_holder=orphans)
        if record.salvaged and reason is None:
            reason = "its record was damaged (read from its copy)"
        if reason is None:
            report.still_active.append(record.id)
            return
        self._rollback_locked(record, reason, peers)
        report.rolled_back.append({"id": record.id, "reason": reason})
