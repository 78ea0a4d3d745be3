"""The engine's state machine against a fake fault whose host is a JSON file."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from hostchaos.config import Config
from hostchaos.engine import Engine
from hostchaos.errors import ApplyError, ConflictError, RollbackError, SpecError
from hostchaos.journal import FaultRecord, Journal
from hostchaos.system.procs import ProcessRef
from tests.support.fakes import REFUSE_ROLLBACK, FakeSpec, IdleWarden, factory, fault_class


class Clock:
    """A fake wall clock (``now``) with its fake CLOCK_BOOTTIME (``boot``).

    Moving ``now`` moves both, as time passing does; :meth:`step_wall` moves the
    wall clock alone, as ``date -s``, NTP or a clock fault would.
    """

    def __init__(self) -> None:
        self.wall = 10_000.0
        self.boot = 500.0

    @property
    def now(self) -> float:
        return self.wall

    @now.setter
    def now(self, value: float) -> None:
        self.boot += value - self.wall
        self.wall = value

    def step_wall(self, seconds: float) -> None:
        self.wall += seconds

    def __call__(self) -> float:
        return self.wall

    def boottime(self) -> float:
        return self.boot


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def warden() -> Iterator[IdleWarden]:
    idle = IdleWarden()
    yield idle
    idle.stop()


@pytest.fixture
def engine(state_dir: Path, clock: Clock, warden: IdleWarden) -> Engine:
    """An engine whose "warden" is an idle process: alive, but enforcing nothing."""
    return Engine(Config(state_dir=state_dir), fault_factory=factory, fault_class=fault_class,
                  warden=warden, clock=clock, boottime=clock.boottime)


@pytest.fixture
def host(tmp_path: Path) -> Path:
    return tmp_path / "host.json"


def host_items(host: Path) -> dict[str, bool]:
    return json.loads(host.read_text()) if host.exists() else {}


def test_inject_then_rollback(engine: Engine, host: Path) -> None:
    record = engine.inject(FakeSpec(host_file=str(host)), duration=30)
    assert record.state == "active"
    assert host_items(host) == {"t1-0": True, "t1-1": True, "t1-2": True}
    states = [e["state"] for e in record.events]
    assert states == ["pending", "applying", "active"]
    assert record.expires_at == pytest.approx(engine.clock() + 30)
    assert engine.status(record.id)[1] == {"items": ["t1-0", "t1-1", "t1-2"]}

    done = engine.rollback(record.id)
    assert done.state == "rolled-back" and host_items(host) == {}
    again = engine.rollback(record.id)  # idempotent
    assert again.state == "rolled-back"


def test_failed_apply_rolls_back_partial_work(engine: Engine, host: Path) -> None:
    with pytest.raises(ApplyError, match="step 2"):
        engine.inject(FakeSpec(host_file=str(host), fail_at_step=2))
    assert host_items(host) == {}
    (record,), _ = engine.listing(include_ended=True)
    assert record.state == "failed"
    assert [e["state"] for e in record.events] == ["pending", "applying", "rolling-back", "failed"]


def test_rollback_failure_is_sticky_and_retried_by_sweep(
    engine: Engine, host: Path, state_dir: Path
) -> None:
    record = engine.inject(FakeSpec(host_file=str(host), fail_rollback=True))
    with pytest.raises(RollbackError, match="retry with `hostchaos rollback"):
        engine.rollback(record.id)
    stored = Journal(state_dir).load(record.id)
    assert stored.state == "rollback-failed" and stored.is_open
    # the operator fixes the cause; sweep retries and succeeds
    items = host_items(host)
    del items[REFUSE_ROLLBACK]
    host.write_text(json.dumps(items))
    report = engine.sweep()
    assert report.rolled_back == [{"id": record.id, "reason": "retrying a failed rollback"}]
    assert host_items(host) == {}


def test_duration_cap_and_default(engine: Engine, host: Path) -> None:
    with pytest.raises(SpecError, match="above the cap"):
        engine.inject(FakeSpec(host_file=str(host)), duration=3601)
    assert not host.exists() and engine.listing(include_ended=True) == ([], [])
    record = engine.inject(FakeSpec(host_file=str(host)))
    assert record.expires_at - record.created_at == pytest.approx(60)


def test_overlapping_fault_refused(engine: Engine, host: Path, warden: IdleWarden) -> None:
    first = engine.inject(FakeSpec(host_file=str(host)))
    with pytest.raises(ConflictError, match=first.id):
        engine.inject(FakeSpec(host_file=str(host)))
    second = engine.inject(FakeSpec(host_file=str(host), target="t2"))
    # one warden holds every fault
    assert len(warden.started) == 1 and first.holder == second.holder


def test_sweep_rolls_back_expired_and_expired_leases(
    engine: Engine, host: Path, clock: Clock
) -> None:
    short = engine.inject(FakeSpec(host_file=str(host), target="a"), duration=10)
    leased = engine.inject(FakeSpec(host_file=str(host), target="b"), duration=100, lease=5)
    long = engine.inject(FakeSpec(host_file=str(host), target="c"), duration=100)
    clock.now += 4
    engine.extend(leased.id)          # renewed: lease now ends at +9
    clock.now += 4                    # t = +8
    assert engine.sweep().rolled_back == []
    clock.now += 3                    # t = +11: short's deadline and leased's lease passed
    report = engine.sweep()
    assert {r["id"]: r["reason"] for r in report.rolled_back} == {
        short.id: "deadline reached", leased.id: "lease expired without renewal"}
    assert report.still_active == [long.id]
    assert sorted(host_items(host)) == ["c-0", "c-1", "c-2"]


def test_extend_respects_cap(engine: Engine, host: Path, clock: Clock) -> None:
    record = engine.inject(FakeSpec(host_file=str(host)), duration=60)
    clock.now += 30
    moved = engine.extend(record.id, 600)
    assert moved.expires_at == pytest.approx(clock.now + 600)
    with pytest.raises(SpecError, match="past the cap"):
        engine.extend(record.id, 3600)


def test_sweep_rolls_back_fault_whose_warden_is_gone(
    engine: Engine, host: Path, state_dir: Path
) -> None:
    record = engine.inject(FakeSpec(host_file=str(host)))
    stored = Journal(state_dir).load(record.id)
    stored.holder = ProcessRef(pid=stored.holder.pid, start_ticks=1)  # type: ignore[union-attr]
    Journal(state_dir).save(stored)
    report = engine.sweep()
    assert report.rolled_back == [{"id": record.id, "reason": "its warden is gone"}]
    assert host_items(host) == {}


def test_sweep_rolls_back_fault_whose_applier_died_mid_apply(
    engine: Engine, host: Path, state_dir: Path
) -> None:
    journal = Journal(state_dir)
    journal.prepare()
    record = FaultRecord(id="hc-fake-0000dead", kind="fake", spec={"host_file": str(host)},
                         boot_id=engine_boot(), created_at=engine.clock(),
                         expires_at=engine.clock() + 60, survives_reboot=False,
                         created_boottime=engine.boottime(),
                         expires_boottime=engine.boottime() + 60,
                         state="applying", applier=ProcessRef(pid=1, start_ticks=123456789),
                         holder=ProcessRef.current(),
                         undo=[{"step": "item", "key": "t1-0", "host_file": str(host)}])
    journal.save(record)
    host.write_text(json.dumps({"t1-0": True}))
    report = engine.sweep()
    assert report.rolled_back[0]["reason"] == "the injecting process died during apply"
    assert host_items(host) == {}


def engine_boot() -> str:
    from hostchaos.system.procs import boot_id

    return boot_id()


def test_sweep_closes_records_from_another_boot(
    engine: Engine, host: Path, state_dir: Path
) -> None:
    record = engine.inject(FakeSpec(host_file=str(host)))
    journal = Journal(state_dir)
    stored = journal.load(record.id)
    stored.boot_id = "another-boot"
    journal.save(stored)
    host.unlink()  # the reboot took the (kernel-only) fault with it
    report = engine.sweep()
    assert report.closed_by_reboot == [record.id]
    assert journal.load(record.id).end_reason == "the reboot removed it"


def test_sweep_survives_torn_records(engine: Engine, host: Path, state_dir: Path) -> None:
    """A record nobody can read is reported (and kept); the others are swept as usual."""
    ok = engine.inject(FakeSpec(host_file=str(host)), duration=5)
    torn = state_dir / "faults" / "hc-fake-torn0000.json"
    torn.write_bytes(b'{"id": "hc-fake-to')
    (state_dir / "faults" / ".hc-fake-x.json.tmp.999999999").write_bytes(b"{")
    engine.clock.now += 10  # type: ignore[attr-defined]
    report = engine.sweep()
    assert [u["path"] for u in report.unreadable] == [str(torn)]
    assert [f["id"] for f in report.failed] == ["hc-fake-torn0000"]
    assert report.rolled_back == [{"id": ok.id, "reason": "deadline reached"}]
    assert torn.exists()  # left for an operator, never hidden
    assert not (state_dir / "faults" / ".hc-fake-x.json.tmp.999999999").exists()


@pytest.mark.parametrize("step", [3600.0, -3600.0])
def test_a_wall_clock_step_neither_ends_a_fault_early_nor_keeps_it(
    engine: Engine, host: Path, clock: Clock, step: float
) -> None:
    leased = engine.inject(FakeSpec(host_file=str(host), target="a"), duration=100, lease=20)
    plain = engine.inject(FakeSpec(host_file=str(host), target="b"), duration=25)
    clock.now += 10
    clock.step_wall(step)  # date -s, an NTP step, a clock fault on the host
    assert engine.sweep().rolled_back == []  # +1 h: nothing ends early
    engine.extend(leased.id)  # the lease renewed: now ends 20 s from here on boottime
    stored = Journal(engine.journal.state_dir).load(leased.id)
    assert stored.lease_expires_boottime == pytest.approx(clock.boot + 20)
    clock.now += 14  # 24 s after inject: still before plain's deadline (25 s)
    assert engine.sweep().rolled_back == []
    clock.now += 2  # 26 s: -1 h does not keep plain past its deadline
    assert engine.sweep().rolled_back == [{"id": plain.id, "reason": "deadline reached"}]
    clock.now += 5  # 31 s: the renewed lease (20 s after the renewal at 10 s) has run out
    assert engine.sweep().rolled_back == [{"id": leased.id,
                                           "reason": "lease expired without renewal"}]
    assert host_items(host) == {}


def test_extend_cap_counts_on_boottime(engine: Engine, host: Path, clock: Clock) -> None:
    record = engine.inject(FakeSpec(host_file=str(host)), duration=60)
    clock.step_wall(-3600)  # the wall clock says the fault is an hour younger: no matter
    with pytest.raises(SpecError, match="past the cap"):
        engine.extend(record.id, 3601)
    moved = engine.extend(record.id, 3600)
    assert moved.expires_boottime == pytest.approx(clock.boot + 3600)


@pytest.mark.parametrize("version", [1, 2])
def test_an_old_format_record_is_still_judged(
    engine: Engine, host: Path, state_dir: Path, version: int
) -> None:
    """Formats 1 and 2 had wall-clock deadlines only: judged on boottime derived from them."""
    import time

    journal = Journal(state_dir)
    journal.prepare()
    host.write_text(json.dumps({"old-0": True, "young-0": True}))
    now = time.time()
    for name, expires in (("old", now - 5), ("young", now + 600)):
        data = FaultRecord(
            id=f"hc-fake-{name}0000", kind="fake", spec={"host_file": str(host), "target": name},
            boot_id=engine_boot(), created_at=now - 10, expires_at=expires,
            survives_reboot=False, state="active", holder=ProcessRef.current(),
            undo=[{"step": "item", "key": f"{name}-0", "host_file": str(host)}]).to_dict()
        data["format"] = version
        for key in ("created_boottime", "expires_boottime", "lease_expires_boottime"):
            del data[key]
        data["guardian"] = data.pop("holder")
        if version == 1:
            del data["actor"]
        (journal.faults_dir / f"hc-fake-{name}0000.json").write_text(json.dumps(data))
    real = Engine(engine.config, fault_factory=factory, fault_class=fault_class)
    report = real.sweep()
    assert report.rolled_back == [{"id": "hc-fake-old0000", "reason": "deadline reached"}]
    assert report.still_active == ["hc-fake-young0000"]
    assert host_items(host) == {"young-0": True}
    young = journal.load("hc-fake-young0000")
    assert young.holder == ProcessRef.current()
    assert young.expires_boottime - real.boottime() == pytest.approx(600 - 0, abs=5)
