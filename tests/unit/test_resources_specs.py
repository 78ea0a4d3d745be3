"""Resource fault specs: parsing, validation, storage round trip, conflicts. No host access."""

from __future__ import annotations

import pytest

from hostchaos import faults
from hostchaos.errors import SpecError
from hostchaos.faults.base import Peer, Spec
from hostchaos.faults.cpu import CpuSpec
from hostchaos.faults.memory import PAGE_SIZE, MemorySpec
from hostchaos.faults.nofile import NofileSpec
from hostchaos.faults.pids import PidsSpec
from hostchaos.quantities import format_size, parse_percent, parse_size


@pytest.mark.parametrize(("text", "size"), [
    ("256M", 256 << 20), ("256m", 256 << 20), ("1G", 1 << 30), ("1GiB", 1 << 30),
    ("1.5G", 3 << 29), ("512K", 512 << 10), ("512KB", 512 << 10), ("4096", 4096),
    (" 64M ", 64 << 20), ("2T", 2 << 40),
])
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["abc", "", "-1M", "1X", "M", "1.2.3G", "10 MBs", "99999P"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(SpecError):
        parse_size(text, what="--max")


def test_format_size() -> None:
    assert [format_size(n) for n in (256 << 20, 1 << 30, 1536 << 20, 100)] == \
        ["256M", "1G", "1536M", "100B"]


@pytest.mark.parametrize(("text", "value"), [("25%", 25.0), ("25", 25.0), ("150%", 150.0),
                                             ("0.5%", 0.5)])
def test_parse_percent(text: str, value: float) -> None:
    assert parse_percent(text) == value


@pytest.mark.parametrize("text", ["abc", "%", "-5%", "25%%", ""])
def test_parse_percent_rejects(text: str) -> None:
    with pytest.raises(SpecError, match="not a percentage"):
        parse_percent(text)


def test_cpu_quota_and_bounds() -> None:
    spec = CpuSpec(pid=42, limit=25)
    assert (spec.quota_us, spec.period_us) == (25_000, 100_000)
    assert CpuSpec(pid=42, limit=150, period_us=50_000).quota_us == 75_000
    assert CpuSpec(pid=42, limit=1).quota_us == 1000  # exactly the kernel minimum
    with pytest.raises(SpecError, match="above 0%"):
        CpuSpec(pid=42, limit=0)
    with pytest.raises(SpecError, match=r"below the kernel minimum.*lowest --limit at this "
                                        r"period: 1%"):
        CpuSpec(pid=42, limit=0.5)
    with pytest.raises(SpecError, match="lowest --limit at this period: 10%"):
        CpuSpec(pid=42, limit=5, period_us=10_000)
    for period in (999, 1_000_001):
        with pytest.raises(SpecError, match="between 1ms and 1s"):
            CpuSpec(pid=42, limit=50, period_us=period)


@pytest.mark.parametrize(("targets", "fragment"), [
    ({}, "give exactly one target"),
    ({"pid": 1, "unit": "a.service"}, "got --pid, --unit"),
    ({"pid": 0}, "positive process id"),
    ({"pid": -3}, "positive process id"),
    ({"unit": "bad unit"}, "unit name"),
    ({"container": "-x"}, "container name"),
    ({"cgroup": "/a/../b"}, "cgroup path"),
    ({"cgroup": "a\nb"}, "cgroup path"),
])
def test_cgroup_targets(targets: dict[str, object], fragment: str) -> None:
    with pytest.raises(SpecError, match=fragment):
        CpuSpec(limit=25, **targets)  # type: ignore[arg-type]


def test_memory_limits() -> None:
    spec = MemorySpec(container="web", max_bytes=256 << 20, high_bytes=200 << 20)
    assert spec.target_label() == "container web"
    with pytest.raises(SpecError, match="give --max SIZE and/or --high SIZE"):
        MemorySpec(pid=42)
    with pytest.raises(SpecError, match=rf"--max 1K is below the kernel minimum.*one page "
                                        rf"\({PAGE_SIZE} bytes\)"):
        MemorySpec(pid=42, max_bytes=1024)
    with pytest.raises(SpecError, match=r"--high 1\.1K is below"):
        MemorySpec(pid=42, high_bytes=1100)
    with pytest.raises(SpecError, match="must be below --max"):
        MemorySpec(pid=42, max_bytes=64 << 20, high_bytes=64 << 20)


def test_pids_limits() -> None:
    assert PidsSpec(pid=42, max=0).max == 0  # the kernel accepts 0: no new task at all
    for bad in (-1, 4 * 1024 * 1024 + 1):
        with pytest.raises(SpecError, match="kernel's range"):
            PidsSpec(pid=42, max=bad)


def test_nofile_spec() -> None:
    spec = NofileSpec(pids=[10, 11], soft=16)  # type: ignore[arg-type]
    assert spec.pids == (10, 11) and spec.target_label() == "pids 10,11"
    assert NofileSpec.from_dict(spec.to_dict()) == spec  # survives the journal's JSON
    with pytest.raises(SpecError, match="exactly one target"):
        NofileSpec(soft=16)
    with pytest.raises(SpecError, match="exactly one target"):
        NofileSpec(pids=(3,), name="x", soft=16)
    with pytest.raises(SpecError, match="--hard 8 must be at least --soft 16"):
        NofileSpec(pids=(3,), soft=16, hard=8)
    with pytest.raises(SpecError, match="--soft must be 0 or more"):
        NofileSpec(pids=(3,), soft=-1)
    with pytest.raises(SpecError, match="twice"):
        NofileSpec(pids=(3, 3), soft=1)
    with pytest.raises(SpecError, match="process name"):
        NofileSpec(name="a/b", soft=1)


@pytest.mark.parametrize("spec", [
    CpuSpec(pid=42, limit=25), CpuSpec(cgroup="/x", limit=300, period_us=20_000),
    MemorySpec(unit="a.service", max_bytes=1 << 30, high_bytes=1 << 29),
    PidsSpec(container="web", max=5), NofileSpec(name="nginx", soft=10, hard=20),
])
def test_journal_round_trip_and_describe(spec: CpuSpec) -> None:
    fault = faults.build(spec.kind, spec.to_dict())
    assert fault.spec == spec and fault.kind == spec.kind
    assert fault.describe()
    assert fault.__doc__ and "Rollback" in fault.__doc__ and "Example" in fault.__doc__


def peer(spec: Spec) -> Peer:
    return Peer("hc-x-00000000", spec.kind, spec, [])


def test_conflicts_same_kind_same_target_only() -> None:
    # cgroup kinds judge peers on what targets resolve to, not on spec strings, in
    # preflight (tests/unit/test_resources_peers.py): a spec alone never conflicts
    cpu = faults.build("cpu", CpuSpec(cgroup="/x", limit=25).to_dict())
    assert cpu.conflicts(peer(CpuSpec(cgroup="/x", limit=50))) is None
    nofile = faults.build("nofile", NofileSpec(pids=(1, 2), soft=5).to_dict())
    assert nofile.conflicts(peer(NofileSpec(pids=(2, 3), soft=9))) == "pid 2 (open-files limit)"
    assert nofile.conflicts(peer(NofileSpec(name="x", soft=9))) is None


def test_describe_names_mechanism() -> None:
    text = faults.build("cpu", CpuSpec(pid=42, limit=25).to_dict()).describe()
    assert "25% of one CPU" in text and "25000 us per 100000 us" in text
    assert "hostchaos-<fault id>" in text
    text = faults.build("memory", MemorySpec(container="w", max_bytes=1 << 28,
                                             high_bytes=1 << 27).to_dict()).describe()
    assert "at 256M" in text and "above 128M" in text and "in place" in text
