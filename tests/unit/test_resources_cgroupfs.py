"""The cgroup adapter's own logic on fake trees (plain directories): discovery, parsing, placement.

The kernel's side (moves, limits, OOM) is exercised by tests/host (v1) and tests/vm (v2).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hostchaos.faults.base import Peer
from hostchaos.faults.cgroup_target import Target
from hostchaos.faults.cpu import CpuFault, CpuSpec
from hostchaos.faults.memory import MemoryFault, MemorySpec
from hostchaos.system import cgroups
from hostchaos.system.cgroups import CgroupRef, Cgroups


def cgroup_dir(path: Path, procs: str = "", **files: str) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "cgroup.procs").write_text(procs)
    for name, text in files.items():
        (path / name.replace("_", ".", 1)).write_text(text)
    return path


@pytest.fixture
def v1(tmp_path: Path) -> Cgroups:
    root = tmp_path / "cgroup"
    for name in ("cpu,cpuacct", "memory", "pids", "systemd", "unified"):
        cgroup_dir(root / name)
    (root / "cpu").symlink_to("cpu,cpuacct")
    (root / "cpuacct").symlink_to("cpu,cpuacct")
    proc = tmp_path / "proc"
    (proc / "77/task/77").mkdir(parents=True)
    (proc / "77/task/78").mkdir(parents=True)
    text = "9:name=systemd:/a\n4:memory:/m/n\n2:cpu,cpuacct:/c\n1:pids:/\n0::/a\n"
    (proc / "77/cgroup").write_text(text)
    (proc / "77/task/77/cgroup").write_text(text)
    (proc / "77/task/78/cgroup").write_text(text.replace(":/c\n", ":/other\n"))
    return Cgroups(root, proc)


def test_v1_discovery_and_membership(v1: Cgroups) -> None:
    assert v1.version == 1
    names = sorted(h.name for h in v1.hierarchies)
    assert names == ["cpu,cpuacct", "memory", "name=systemd", "pids"]  # no symlinks, no unified
    cpu = v1.hierarchy_for("cpu")
    assert cpu is not None and cpu is v1.hierarchy_for("cpuacct")
    assert v1.cgroup_of(77, cpu).path == "/c"
    memory = v1.require("memory")
    assert v1.cgroup_of(77, memory).label() == "memory:/m/n"
    assert v1.thread_cgroups(77, cpu) == {77: "/c", 78: "/other"}
    with pytest.raises(cgroups.Gone):
        v1.cgroup_of(99, cpu)
    with pytest.raises(Exception, match="freezer is not mounted"):
        v1.require("freezer")


def test_user_paths_are_normalised(v1: Cgroups) -> None:
    memory = v1.require("memory")
    for given in ("a/b", "/a/b", "/a/b/", f"{memory.mount}/a/b",
                  f"{v1.root}/cpu,cpuacct/a/b"):
        assert v1.ref(memory, given).path == "/a/b", given
    assert v1.ref(memory, "/").is_root and v1.ref(memory, str(memory.mount)).is_root
    ref = v1.ref(memory, "/a/b")
    assert ref.parent() == v1.ref(memory, "/a") and [a.path for a in ref.ancestors()] == \
        ["/", "/a", "/a/b"]
    assert CgroupRef.from_note(ref.to_note()) == ref


def test_write_order_lifts_v1_quota_first() -> None:
    class Recorder:
        def __init__(self) -> None:
            self.writes: list[tuple[str, str]] = []

        def write(self, ref: object, filename: str, value: str) -> None:
            self.writes.append((filename, value))

    rec = Recorder()
    CpuFault.for_rollback().write_values(rec, None,  # type: ignore[arg-type]
                                         {"cpu.cfs_period_us": "50000",
                                          "cpu.cfs_quota_us": "12500"})
    assert rec.writes == [("cpu.cfs_quota_us", "-1"), ("cpu.cfs_period_us", "50000"),
                          ("cpu.cfs_quota_us", "12500")]


def test_same_value_knows_the_spellings_of_no_limit() -> None:
    assert cgroups.same_value("max", "max") and cgroups.same_value("-1", "9223372036854771712")
    assert not cgroups.same_value("268435456", "9223372036854771712")
    assert not cgroups.same_value("max 100000", "25000 100000")


@pytest.fixture
def v2(tmp_path: Path) -> Cgroups:
    root = cgroup_dir(tmp_path / "cgroup", "1\n2\n", cgroup_controllers="cpu memory pids",
                      cgroup_subtree_control="")
    return Cgroups(root, tmp_path / "proc")


def place(fs: Cgroups, origin: str, peers: list[dict[str, object]] | None = None) -> Target:
    fault = MemoryFault(MemorySpec(pid=77, max_bytes=1 << 26))
    fault.peers = [Peer("hc-memory-1", "memory", None, [n for n in peers or []])]
    hierarchy = fs.hierarchies[0]
    target = Target(hierarchy, True, CgroupRef(hierarchy, origin))
    fault._place_v2(fs, target)
    return target


def test_v2_process_at_root_gets_a_root_child_and_root_delegates(v2: Cgroups) -> None:
    target = place(v2, "/")
    assert target.parent is not None and target.parent.is_root
    assert [r.path for r in target.enable] == ["/"]  # the root may delegate despite its procs


def test_v2_sibling_when_parent_already_delegates(v2: Cgroups) -> None:
    (v2.root / "cgroup.subtree_control").write_text("memory pids")
    cgroup_dir(v2.root / "app.slice", "", cgroup_subtree_control="memory")
    cgroup_dir(v2.root / "app.slice/web.service", "77\n")
    target = place(v2, "/app.slice/web.service")
    assert target.parent is not None and target.parent.path == "/app.slice"
    assert target.enable == []


def test_v2_parent_with_processes_cannot_delegate_so_root_is_used(v2: Cgroups) -> None:
    """The "no internal processes" rule: /busy holds a process and delegates nothing."""
    cgroup_dir(v2.root / "busy", "55\n", cgroup_subtree_control="")
    cgroup_dir(v2.root / "busy/leaf", "77\n")
    target = place(v2, "/busy/leaf")
    assert target.parent is not None and target.parent.is_root
    assert [r.path for r in target.enable] == ["/"]


def test_v2_empty_parent_gets_the_controller_enabled_on_the_way(v2: Cgroups) -> None:
    cgroup_dir(v2.root / "empty", "", cgroup_subtree_control="")
    cgroup_dir(v2.root / "empty/leaf", "77\n")
    target = place(v2, "/empty/leaf")
    assert target.parent is not None and target.parent.path == "/empty"
    assert [r.path for r in target.enable] == ["/", "/empty"]  # outermost first


def test_v2_adopts_a_peer_faults_enable_note(v2: Cgroups) -> None:
    (v2.root / "cgroup.subtree_control").write_text("memory")
    root = CgroupRef(v2.hierarchies[0], "/")
    peer = {"fault": "hc-memory-1", "step": "enable", "kind": "memory", "controller": "memory",
            "cgroup": root.to_note(), "children_before": []}
    target = place(v2, "/", peers=[peer])
    assert target.enable == [] and target.adopt == [peer]


def test_values_per_version() -> None:
    spec = CpuSpec(pid=7, limit=25)

    fault = CpuFault(spec)
    assert fault.values(1) == {"cpu.cfs_period_us": "100000", "cpu.cfs_quota_us": "25000"}
    assert fault.values(2) == {"cpu.max": "25000 100000"}
    both = MemoryFault(MemorySpec(pid=7, max_bytes=1 << 28, high_bytes=1 << 27))
    assert both.values(2) == {"memory.high": str(1 << 27), "memory.max": str(1 << 28)}
