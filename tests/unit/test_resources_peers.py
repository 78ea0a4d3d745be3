"""Cgroup faults against their peers and their own notes, on fake cgroup trees (plain directories).

- One cgroup, however it is spelled or found, is one target: a second fault of
  the same kind on it is refused (issue 8 point 7).
- Rollback needs the notes alone (the spec may no longer validate), leaves a
  later cgroup of the same name alone, and says where a process went when its
  own cgroup was gone (issue 8 point 13; the kernel side is in tests/vm).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from hostchaos.config import Config
from hostchaos.engine import Engine
from hostchaos.errors import ApplyError, ConflictError
from hostchaos.faults.base import Peer
from hostchaos.faults.cgroup_limit import CgroupLimitFault
from hostchaos.faults.cgroup_target import CgroupTargetSpec, Target
from hostchaos.faults.cpu import CpuFault, CpuSpec
from hostchaos.faults.pids import PidsFault, PidsSpec
from hostchaos.journal import ACTIVE, FaultRecord, Journal, UndoLog
from hostchaos.system.cgroups import CgroupRef, Cgroups
from hostchaos.system.procs import boot_id

PEER = "hc-cpu-0000beef"


def cgroup_dir(path: Path, **files: str) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "cgroup.procs").write_text("")
    for name, text in files.items():
        (path / name).write_text(text)
    return path


@pytest.fixture
def v1(tmp_path: Path) -> Cgroups:
    root = tmp_path / "cgroup"
    for name in ("cpu,cpuacct", "memory", "pids"):
        cgroup_dir(root / name)
    (root / "cpu").symlink_to("cpu,cpuacct")
    return Cgroups(root, tmp_path / "proc")


@pytest.fixture
def v2(tmp_path: Path) -> Cgroups:
    root = cgroup_dir(tmp_path / "cgroup", **{"cgroup.controllers": "cpu memory pids"})
    return Cgroups(root, tmp_path / "proc")


# -- one cgroup, many spellings -------------------------------------------------------------


def spellings(fs: Cgroups) -> list[str]:
    mount = str(fs.require("cpu").mount)
    found = ["/x", "x", "/x/", "/x/.", "//x", "/./x//", "./x", f"{mount}/x", f"{mount}//x/.",
             f"{mount}/./x/"]
    if fs.version == 1:  # the hierarchy under its other names
        found += [f"{fs.root}/cpu/x", f"{fs.root}//cpu/x/", f"{fs.root}/cpuacct/./x"]
    return found


@pytest.mark.parametrize("version", [1, 2])
def test_every_spelling_of_a_cgroup_is_one_ref(version: int, v1: Cgroups, v2: Cgroups) -> None:
    fs = v1 if version == 1 else v2
    cpu = fs.require("cpu")
    refs = {given: fs.ref(cpu, given) for given in spellings(fs)}
    assert {ref.path for ref in refs.values()} == {"/x"}, refs
    assert fs.ref(cpu, "/a/./b//c/").path == "/a/b/c"
    for root in ("/", "//", "/.", str(cpu.mount), f"{cpu.mount}/."):
        assert fs.ref(cpu, root).is_root, root
    from hostchaos.system.cgroups import clean_path

    assert clean_path("") == "/" and clean_path("a/./b/") == "/a/b"


def limit_note(fs: Cgroups, path: str, *, inode: int | None, kind: str = "cpu",
               fault: str = PEER) -> dict[str, Any]:
    """A peer's ``limit`` note as the engine hands it over (tagged with its fault id)."""
    note: dict[str, Any] = {"fault": fault, "step": "limit", "kind": kind,
                            "cgroup": CgroupRef(fs.require("cpu"), path).to_note(),
                            "original": {"cpu.max": "max 100000"}}
    if inode is not None:
        note["inode"] = inode
    return note


def in_place(fs: Cgroups, spec: CgroupTargetSpec, resolved: str,
             peers: list[dict[str, Any]]) -> tuple[CpuFault, Target]:
    """A cpu fault whose target resolved to cgroup ``resolved``, with ``peers``' notes."""
    fault = CpuFault(spec)
    fault.peers = [Peer(PEER, "cpu", None, [{k: v for k, v in n.items() if k != "fault"}
                                            for n in peers])]
    ref = fs.ref(fs.require("cpu"), resolved)
    return fault, Target(ref.hierarchy, False, ref, inode=fs.inode(ref))


@pytest.mark.parametrize("spec", [
    CpuSpec(cgroup="/x/.", limit=25), CpuSpec(cgroup="//x/", limit=25),
    CpuSpec(unit="x.service", limit=25), CpuSpec(container="web", limit=25),
])
@pytest.mark.parametrize("version", [1, 2])
def test_a_peer_on_the_same_cgroup_is_refused_whatever_named_it(
    version: int, spec: CpuSpec, v1: Cgroups, v2: Cgroups
) -> None:
    """Whatever the spec says, the target it resolved to (here /x) is what counts."""
    fs = v1 if version == 1 else v2
    x = cgroup_dir(fs.require("cpu").mount / "x")
    peer = limit_note(fs, "/x", inode=x.stat().st_ino)
    fault, target = in_place(fs, spec, "/x", [peer])
    label = "cpu,cpuacct:/x" if version == 1 else "/x"
    with pytest.raises(ConflictError) as refused:
        fault._refuse_peers(target)
    assert str(refused.value).startswith(f"cgroup {label} ({spec.target_label()}) already "
                                         f"carries cpu fault {PEER} ")


def test_peers_are_judged_by_inode_then_by_normalised_path(v2: Cgroups) -> None:
    from hostchaos.faults.cgroup_target import same_cgroup

    x = cgroup_dir(v2.root / "x")
    y = cgroup_dir(v2.root / "y")
    spec = CpuSpec(cgroup="/x", limit=25)
    ref = v2.ref(v2.require("cpu"), "/x")
    inode = x.stat().st_ino
    same = [
        limit_note(v2, "/x", inode=inode),
        limit_note(v2, "/x/.", inode=inode),       # stored by the old, unnormalised code
        limit_note(v2, "/x/.", inode=None),        # an older record, without an inode
        limit_note(v2, "//x/", inode=None),
    ]
    different = [
        limit_note(v2, "/y", inode=y.stat().st_ino),
        limit_note(v2, "/x", inode=inode + 1),     # a namesake: the peer's cgroup was removed
        limit_note(v2, "/y", inode=None),
    ]
    for note in same:
        assert same_cgroup(note, ref, inode), note
        fault, target = in_place(v2, spec, "/x", [note])
        with pytest.raises(ConflictError, match=PEER):
            fault._refuse_peers(target)
    for note in [*different, limit_note(v2, "/x", inode=inode, kind="memory")]:
        fault, target = in_place(v2, spec, "/x", [note])
        fault._refuse_peers(target)  # no conflict
    other_mount = {**limit_note(v2, "/x", inode=inode)}
    other_mount["cgroup"] = {**other_mount["cgroup"], "mount": "/elsewhere"}
    assert not same_cgroup(other_mount, ref, inode)


# -- rollback from the notes alone ---------------------------------------------------------


@pytest.fixture
def fake_fs(monkeypatch: pytest.MonkeyPatch) -> Callable[[Cgroups], None]:
    def use(fs: Cgroups) -> None:
        monkeypatch.setattr(CgroupLimitFault, "_fs", staticmethod(lambda: fs))
    return use


def open_record(state_dir: Path, kind: str, spec: dict[str, Any],
                undo: list[dict[str, Any]]) -> FaultRecord:
    journal = Journal(state_dir)
    journal.prepare()
    now = time.time()
    record = FaultRecord(id=f"hc-{kind}-0000cafe", kind=kind, spec=spec, boot_id=boot_id(),
                         created_at=now, expires_at=now + 600, survives_reboot=False,
                         state=ACTIVE, undo=undo)
    journal.save(record)
    return record


def test_rollback_from_notes_alone_when_the_spec_no_longer_validates(
    v2: Cgroups, fake_fs: Callable[[Cgroups], None], state_dir: Path
) -> None:
    """A stored spec this version refuses: the engine rolls back a spec-less fault."""
    fake_fs(v2)
    x = cgroup_dir(v2.root / "x", **{"cpu.max": "25000 100000"})
    ref = v2.ref(v2.require("cpu"), "/x")
    note = {"step": "limit", "kind": "cpu", "fault": "hc-cpu-0000cafe", "cgroup": ref.to_note(),
            "inode": x.stat().st_ino, "original": {"cpu.max": "50000 100000"}}
    record = open_record(state_dir, "cpu", {"cgroup": "/x", "limit": -5}, [note])
    made: list[CgroupLimitFault] = []
    real = CpuFault.for_rollback

    def spy() -> CpuFault:
        made.append(real())
        return made[-1]

    engine = Engine(Config(state_dir=state_dir))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(CpuFault, "for_rollback", spy)
        ended = engine.rollback(record.id)
    assert [f.spec for f in made] == [None]  # the spec-less fault did the work
    assert ended.state == "rolled-back"
    assert (x / "cpu.max").read_text() == "50000 100000"


def test_rollback_leaves_a_later_namesake_alone(v2: Cgroups) -> None:
    """The limited cgroup was removed and one of the same name made: not ours to write."""
    x = cgroup_dir(v2.root / "x", **{"pids.max": "7"})
    ref = v2.ref(v2.require("pids"), "/x")
    note = {"step": "limit", "kind": "pids", "cgroup": ref.to_note(),
            "inode": x.stat().st_ino + 1, "original": {"pids.max": "max"}}
    record = FaultRecord(id="hc-pids-0000cafe", kind="pids", spec={}, boot_id="b",
                         created_at=0, expires_at=1, survives_reboot=False, undo=[note])
    fault = PidsFault(PidsSpec(cgroup="/x", max=7))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(CgroupLimitFault, "_fs", staticmethod(lambda: v2))
        fault.rollback(UndoLog(record, None))
        assert (x / "pids.max").read_text() == "7"
        note["inode"] = x.stat().st_ino  # the same cgroup after all: written back
        fault.rollback(UndoLog(record, None))
    assert (x / "pids.max").read_text() == "max"


# -- a process whose cgroup is gone -------------------------------------------------------


class FussyCgroups(Cgroups):
    """A v2 tree where cgroups handing out controllers refuse processes, as the kernel does."""

    moved: dict[int, str]

    def move_process(self, pid: int, ref: CgroupRef) -> None:
        if not ref.is_root and self.enabled(ref):
            raise ApplyError(f"moving process {pid} into cgroup {ref.label()}: the kernel "
                             "refused (Device or resource busy)")
        self.moved[pid] = ref.path


def test_a_process_goes_to_the_nearest_ancestor_that_accepts_it(tmp_path: Path) -> None:
    root = cgroup_dir(tmp_path / "cgroup", **{"cgroup.controllers": "cpu",
                                               "cgroup.subtree_control": "cpu"})
    cgroup_dir(root / "a", **{"cgroup.subtree_control": ""})
    cgroup_dir(root / "a/b", **{"cgroup.subtree_control": "cpu"})
    fs = FussyCgroups(root, tmp_path / "proc")
    fs.moved = {}
    h = fs.require("cpu")
    assert fs.move_to_nearest(5, CgroupRef(h, "/a/b/gone")).path == "/a"  # b refuses
    (root / "a/cgroup.subtree_control").write_text("cpu")
    assert fs.move_to_nearest(6, CgroupRef(h, "/a/b/gone")).path == "/"  # the root never does
    cgroup_dir(root / "a/b/here", **{"cgroup.subtree_control": ""})
    assert fs.move_to_nearest(7, CgroupRef(h, "/a/b/here")).path == "/a/b/here"
    assert fs.moved == {5: "/a", 6: "/", 7: "/a/b/here"}


def test_status_and_list_show_where_a_process_went(state_dir: Path) -> None:
    from click.testing import CliRunner

    from hostchaos.cli import cli

    record = open_record(state_dir, "cpu", {"pid": 42, "limit": 25}, [])
    remark = ("the original cgroup /hc/leaf was gone, so process 42 went to / instead "
              "(the nearest ancestor that accepts it)")
    record.remark(remark)
    record.remark(remark)  # said once
    record.transition("rolled-back", "requested")
    record.ended_at, record.end_reason = time.time(), "requested"
    Journal(state_dir).save(record)
    assert Journal(state_dir).load(record.id).remarks == [remark]

    def run(*args: str) -> str:
        result = CliRunner().invoke(cli, list(args), env={"HOSTCHAOS_STATE_DIR": str(state_dir)})
        assert result.exit_code == 0, result.output
        return result.stdout

    assert f"  remark:   {remark}\n" in run("status", record.id)
    assert f"\n{record.id}: {remark}\n" in run("list", "--all")
    assert '"remarks": [' in run("list", "--all", "--json")
