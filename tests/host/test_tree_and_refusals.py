"""Host tier: the qdisc tree on a sandbox veth, and clear refusals where the kernel lacks netem."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from hostchaos.config import Config
from hostchaos.engine import Engine
from hostchaos.errors import ConflictError
from hostchaos.faults.latency import LatencySpec
from hostchaos.journal import ACTIVE, FaultRecord, Journal
from hostchaos.sandbox import NetnsPair
from hostchaos.system import capabilities
from hostchaos.system.procs import ProcessRef, boot_id, start_ticks
from hostchaos.system.tc_namespace import open_tree
from tests.support.cli import hostchaos, one_line_error, open_records


def test_tree_builds_and_leaves_no_trace(pair: NetnsPair) -> None:
    before = pair.tc_config()
    with open_tree(pair.iface_a, pair.a) as tree:
        assert not tree.is_ours()
        tree.check_root_replaceable()
        tree.create_root()
        slot = tree.free_slot()
        tree.add_fault_class(slot, "tbf", {"rate": 125_000, "burst": 10000, "limit": 20000})
        tree.add_match_all_filters(slot)
        assert tree.is_ours() and tree.used_slots() == {slot}
        assert tree.free_slot() == slot + 1
        during = pair.tc_config()
        # the fault bites: 1 Mbit/s tbf makes 200 x 1400-byte pings take ~2 s, not ~0
        started = time.monotonic()
        pair.ping(count=60, interval=0.002)
        assert "tbf 4901: parent 4843:1" in during
        stats = tree.slot_stats(slot)
        assert stats is not None and stats["packets"] >= 60
        del started
        tree.remove_filters(slot)
        tree.remove_fault_class(slot)
        tree.remove_filters(slot)  # idempotent: already gone is fine
        tree.remove_fault_class(slot)
        tree.remove_root()
        tree.remove_root()
    assert pair.tc_config() == before


def test_foreign_root_is_refused_and_left_alone(pair: NetnsPair) -> None:
    subprocess.run(["ip", "netns", "exec", pair.a, "tc", "qdisc", "add", "dev", pair.iface_a,
                    "root", "handle", "1:", "htb", "default", "10"], check=True)
    before = pair.tc_config()
    with open_tree(pair.iface_a, pair.a) as tree:
        with pytest.raises(ConflictError, match="set up by someone else"):
            tree.check_root_replaceable()
        tree.remove_root()  # never deletes what it does not own
    assert pair.tc_config() == before


def test_inject_without_netem_exits_3_and_changes_nothing(pair: NetnsPair, state_dir: Path) -> None:
    if capabilities.netem().ok:
        pytest.skip("this kernel has sch_netem: the refusal cannot happen here")
    before = pair.tc_config()
    result = hostchaos("inject", "latency", "--netns", pair.a, "--iface", pair.iface_a,
                       "--ms", "100", state_dir=state_dir)
    assert result.returncode == 3
    line = one_line_error(result)
    assert "sch_netem" in line and "modprobe sch_netem" in line
    assert pair.tc_config() == before
    assert open_records(state_dir) == []


@pytest.mark.parametrize(("args", "fragment"), [
    (["--netns", "hc-test-no-such-ns", "--iface", "eth0"], "network namespace hc-test-no-such-ns"),
    (["--iface", "hcnosuch0"], "interface hcnosuch0 not found"),
])
def test_unknown_targets_exit_4(args: list[str], fragment: str, state_dir: Path) -> None:
    result = hostchaos("inject", "latency", *args, "--ms", "10", state_dir=state_dir)
    assert result.returncode == 4
    assert fragment in one_line_error(result)
    assert not Path("/run/netns/hc-test-no-such-ns").exists()  # never created by a lookup


def test_unknown_iface_in_netns_exits_4(pair: NetnsPair, state_dir: Path) -> None:
    result = hostchaos("inject", "loss", "--netns", pair.a, "--iface", "nope0", "--percent", "5",
                       state_dir=state_dir)
    assert result.returncode == 4
    assert f"interface nope0 not found (network namespace: {pair.a})" in one_line_error(result)


def test_the_warden_is_detached_and_enforces_the_deadline(
    pair: NetnsPair, state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real warden process rolls a record back at its deadline, on its own, then exits."""
    from hostchaos import warden

    monkeypatch.setenv("HOSTCHAOS_STATE_DIR", str(state_dir))
    journal = Journal(state_dir)
    journal.prepare()
    now = time.time()
    record = FaultRecord(
        id="hc-latency-0000abcd", kind="latency",
        spec=LatencySpec(iface=pair.iface_a, netns=pair.a, ms=10).to_dict(),
        boot_id=boot_id(), created_at=now, expires_at=now + 1.5, survives_reboot=False,
        applier=ProcessRef.current(),
    )
    record.transition(ACTIVE)
    journal.save(record)
    starting = warden.spawn(state_dir)
    assert starting.wait_ready(30)
    ref = warden.holder(state_dir)
    assert ref is not None and ref.pid == starting.pid
    try:
        assert ref.alive()
        assert os.getsid(ref.pid) != os.getsid(0)  # a session of its own, no terminal
        with open(f"/proc/{ref.pid}/stat") as stat:
            assert int(stat.read().rsplit(")", 1)[1].split()[1]) != os.getpid()  # not our child
        deadline = time.time() + 10
        while journal.load(record.id).is_open and time.time() < deadline:
            time.sleep(0.1)
        ended = journal.load(record.id)
        assert ended.state == "rolled-back" and ended.end_reason == "deadline reached"
        assert ended.ended_at is not None and ended.ended_at >= record.expires_at
        while start_ticks(ref.pid) == ref.start_ticks and time.time() < deadline:
            time.sleep(0.05)
        assert not ref.alive()  # the warden exits once no fault is open
        assert warden.holder(state_dir) is None
    finally:
        if ref.alive():
            os.kill(ref.pid, 9)


def test_engine_conflict_on_same_interface_is_checked_before_preflight(
    pair: NetnsPair, state_dir: Path
) -> None:
    journal = Journal(state_dir)
    journal.prepare()
    now = time.time()
    spec = LatencySpec(iface=pair.iface_a, netns=pair.a, ms=10)
    record = FaultRecord(id="hc-latency-00001111", kind="latency", spec=spec.to_dict(),
                         boot_id=boot_id(), created_at=now, expires_at=now + 60,
                         survives_reboot=False, holder=ProcessRef.current())
    record.transition(ACTIVE)
    journal.save(record)
    with pytest.raises(ConflictError, match="hc-latency-00001111"):
        Engine(Config(state_dir=state_dir)).inject(spec, 10)


class RootMadeMeanwhile:
    """Stands in for the warden: its ``ensure`` (between preflight and apply) is the
    moment someone else sets up a root qdisc on the device with `tc`."""

    def __init__(self, pair: NetnsPair) -> None:
        self.pair = pair

    def prestart(self, kind: str | None = None) -> None:
        pass

    def ensure(self) -> ProcessRef:
        subprocess.run(["ip", "netns", "exec", self.pair.a, "tc", "qdisc", "add", "dev",
                        self.pair.iface_a, "root", "handle", "1:", "htb", "default", "10"],
                       check=True)
        return ProcessRef.current()


@pytest.mark.parametrize("sighting_seconds", [0.0, 60.0], ids=["redumped", "sighted"])
def test_a_root_set_up_between_preflight_and_apply_is_left_alone(
        pair: NetnsPair, state_dir: Path, monkeypatch: pytest.MonkeyPatch,
        sighting_seconds: float) -> None:
    """Apply reuses preflight's dump of the tree only briefly; either way a root someone
    else made meanwhile is never replaced: apply's own dump refuses it, and a dump it
    did not make is covered by the kernel refusing to create a second root."""
    from hostchaos.errors import HostchaosError
    from hostchaos.faults import traffic
    from hostchaos.faults.rate import RateSpec

    monkeypatch.setattr(traffic, "SIGHTING_SECONDS", sighting_seconds)
    engine = Engine(Config(state_dir=state_dir), warden=RootMadeMeanwhile(pair))
    with pytest.raises(HostchaosError) as raised:
        engine.inject(RateSpec(iface=pair.iface_a, netns=pair.a, rate="1mbit"), 30)
    if sighting_seconds == 0.0:
        assert isinstance(raised.value, ConflictError) and "someone else" in str(raised.value)
    config = pair.tc_config()
    assert "htb 1: root" in config and "4843" not in config and "4901" not in config
    assert not engine.journal.has_open_records()


def _descriptors() -> set[str]:
    """This process's open descriptors, as /proc/self/fd shows them (with what they name)."""
    out = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            out.add(f"{name} -> {os.readlink(f'/proc/self/fd/{name}')}")
        except FileNotFoundError:
            pass  # the descriptor listdir itself used
    return out


@pytest.mark.parametrize("sighting_seconds", [0.0, 60.0], ids=["reopened", "handed-on"])
def test_the_namespace_preflight_opens_is_closed_on_every_path(
        pair: NetnsPair, state_dir: Path, monkeypatch: pytest.MonkeyPatch,
        sighting_seconds: float) -> None:
    """Preflight keeps the namespace open for apply; a dry run, a refused inject and an
    inject+rollback all end with the descriptors this process had before."""
    import gc

    from hostchaos.errors import HostchaosError
    from hostchaos.faults import traffic
    from hostchaos.faults.rate import RateSpec

    monkeypatch.setattr(traffic, "SIGHTING_SECONDS", sighting_seconds)
    engine = Engine(Config(state_dir=state_dir))
    spec = RateSpec(iface=pair.iface_a, netns=pair.a, rate="1mbit")
    engine.rollback(engine.inject(spec, 30).id)  # imports, caches and the journal made once
    before = _descriptors()
    engine.plan(spec, 30, None)
    engine.rollback(engine.inject(spec, 30).id)
    subprocess.run(["tc", "-n", pair.a, "qdisc", "add", "dev", pair.iface_a, "root", "handle",
                    "1:", "htb"], check=True)
    with pytest.raises(HostchaosError):
        engine.inject(spec, 30)  # refused by preflight: a root of someone else's
    subprocess.run(["tc", "-n", pair.a, "qdisc", "del", "dev", pair.iface_a, "root"],
                   check=True)
    gc.collect()
    assert _descriptors() == before
    assert not engine.journal.has_open_records()
