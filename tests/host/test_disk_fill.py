"""disk-fill on filesystems the tests make: loop-mounted ext4, xfs, btrfs and ext2 images and
a tmpfs, each removed afterwards. Every target is judged by statvfs, as df would."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hostchaos.config import Config
from hostchaos.engine import Engine
from hostchaos.errors import ConflictError
from hostchaos.faults.disk_fill import DiskFillSpec
from hostchaos.system import fill
from tests.support.cli import hostchaos, one_line_error, open_records
from tests.support.fs import settled_statvfs as space
from tests.support.waiting import wait_for

MiB = 1 << 20
IMAGE_MIB = {"ext4": 256, "xfs": 320, "btrfs": 256, "ext2": 128}
MKFS = {"ext4": ["mkfs.ext4", "-q", "-F"], "xfs": ["mkfs.xfs", "-q", "-f"],
        "btrfs": ["mkfs.btrfs", "-q", "-f"], "ext2": ["mkfs.ext2", "-q", "-F"]}


def mount_test_fs(kind: str, where: Path) -> Path:
    mount_point = where / f"mnt-{kind}"
    mount_point.mkdir()
    if kind == "tmpfs":
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=128m", "hc-test-fill",
                        str(mount_point)], check=True)
    else:
        image = where / f"{kind}.img"
        with open(image, "wb") as handle:
            handle.truncate(IMAGE_MIB[kind] * MiB)
        subprocess.run([*MKFS[kind], str(image)], check=True, capture_output=True)
        subprocess.run(["mount", "-o", "loop", str(image), str(mount_point)], check=True)
    return mount_point


@pytest.fixture(params=["ext4", "xfs", "btrfs", "tmpfs", "ext2"])
def test_fs(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    mount_point = mount_test_fs(request.param, tmp_path)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=False)


@pytest.fixture
def ext4(tmp_path: Path) -> Iterator[Path]:
    mount_point = mount_test_fs("ext4", tmp_path)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)




def total(st: os.statvfs_result) -> int:
    return st.f_blocks * st.f_frsize


def used(st: os.statvfs_result) -> int:
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def available(st: os.statvfs_result) -> int:
    return st.f_bavail * st.f_frsize


def use_percent(st: os.statvfs_result) -> float:
    return 100.0 * used(st) / (used(st) + available(st))


def engine_for(tmp_path: Path) -> Engine:
    return Engine(Config(state_dir=tmp_path / "state"))


@pytest.mark.parametrize("goal", ["percent", "size", "leave-free"])
def test_each_goal_is_reached_within_half_a_percent_and_given_back(
        test_fs: Path, tmp_path: Path, goal: str) -> None:
    engine = engine_for(tmp_path)
    before = space(test_fs)
    spec = {"percent": DiskFillSpec(path=str(test_fs), percent=90.0),
            "size": DiskFillSpec(path=str(test_fs), size=40 * MiB),
            "leave-free": DiskFillSpec(path=str(test_fs), leave_free=20 * MiB)}[goal]
    record = engine.inject(spec, 60)
    during = space(test_fs)
    tolerance = 0.005 * total(during)
    if goal == "percent":
        assert abs(use_percent(during) - 90.0) <= 0.5, use_percent(during)
    elif goal == "size":
        assert abs(used(during) - used(before) - 40 * MiB) <= tolerance
    else:
        assert abs(available(during) - 20 * MiB) <= tolerance
    engine.rollback(record.id)
    after = space(test_fs)
    assert fill.find_fill_files(test_fs) == []
    assert available(after) == available(before) and after.f_bfree == before.f_bfree


def test_a_planted_symlink_is_not_followed(ext4: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    outside = tmp_path / "precious"
    outside.write_text("keep me")
    monkeypatch.setattr("hostchaos.engine.new_fault_id", lambda kind: "hc-disk-fill-planted")
    (ext4 / fill.name_for("hc-disk-fill-planted")).symlink_to(outside)
    before = space(ext4)
    with pytest.raises(ConflictError, match="never reuses or follows"):
        engine_for(tmp_path).inject(DiskFillSpec(path=str(ext4), size=10 * MiB), 60)
    assert outside.read_text() == "keep me" and outside.stat().st_size == 7
    assert (ext4 / fill.name_for("hc-disk-fill-planted")).is_symlink()
    assert available(space(ext4)) == available(before)
    assert open_records(tmp_path / "state") == []


def test_a_fill_file_held_open_still_gives_its_space_back(ext4: Path, tmp_path: Path) -> None:
    engine = engine_for(tmp_path)
    before = space(ext4)
    record = engine.inject(DiskFillSpec(path=str(ext4), size=64 * MiB), 60)
    (path,) = fill.find_fill_files(ext4)
    with open(path, "rb") as held:  # another process keeps it open; this one lets go
        holder = subprocess.Popen(["sleep", "600"], stdin=held)
    try:
        engine.rollback(record.id)
        assert available(space(ext4)) == available(before)
    finally:
        holder.kill()
        holder.wait()


def test_filling_the_state_directorys_own_disk_still_rolls_back(ext4: Path) -> None:
    state = ext4 / "state"
    engine = Engine(Config(state_dir=state))
    before = space(ext4)
    record = engine.inject(DiskFillSpec(path=str(ext4), leave_free=0, include_reserve=True), 60)
    assert available(space(ext4)) == 0  # full for everyone but root, and its journal
    engine.rollback(record.id)
    assert available(space(ext4)) >= available(before) - 64 * 1024  # the record itself
    assert engine.journal.load(record.id).state == "rolled-back"


def test_bad_input_exits_with_one_line_and_changes_nothing(ext4: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    a_file = ext4 / "file"
    a_file.write_text("x")
    before = space(ext4)
    cases = [
        (["--path", str(ext4), "--percent", "150"], 2),
        (["--path", str(ext4), "--size", "1M", "--percent", "50"], 2),
        (["--path", str(a_file), "--size", "1M"], 2),
        (["--path", str(ext4), "--leave-free", "100G"], 5),
        (["--path", str(ext4 / "missing"), "--size", "1M"], 4),
    ]
    for args, code in cases:
        result = hostchaos("inject", "disk-fill", *args, state_dir=state)
        assert result.returncode == code, (args, result.stderr)
        one_line_error(result)
    subprocess.run(["mount", "-o", "remount,ro", str(ext4)], check=True)
    try:
        result = hostchaos("inject", "disk-fill", "--path", str(ext4), "--size", "1M",
                           state_dir=state)
        assert result.returncode == 5 and "read-only" in result.stderr
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(ext4)], check=True)
    assert fill.find_fill_files(ext4) == [] and available(space(ext4)) == available(before)
    assert open_records(state) == []


def _fill_bytes(mount_point: Path) -> int:
    files = fill.find_fill_files(mount_point)
    return sum(p.stat().st_blocks * 512 for p in files)


def test_a_rate_fill_grows_gradually_and_stops_cleanly_on_rollback(ext4: Path,
                                                                    tmp_path: Path) -> None:
    state = tmp_path / "state"
    before = space(ext4)
    result = hostchaos("inject", "disk-fill", "--path", str(ext4), "--size", "160M",
                       "--rate", "40M/s", "--json", state_dir=state)
    assert result.returncode == 0, result.stderr
    fault_id = json.loads(result.stdout)["id"]
    wait_for(lambda: _fill_bytes(ext4) >= 20 * MiB, 10)
    assert _fill_bytes(ext4) < 150 * MiB  # gradual, not all at once
    status = json.loads(hostchaos("status", fault_id, "--json", state_dir=state).stdout)
    assert status["observed"]["bytes"] > 0
    assert hostchaos("rollback", fault_id, state_dir=state).returncode == 0
    time.sleep(1.0)  # a step in flight when the file went must not bring it back
    assert fill.find_fill_files(ext4) == []
    assert available(space(ext4)) == available(before)


def test_kill_9_of_cli_and_warden_mid_rate_fill_then_sweep_gives_the_space_back(
        ext4: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    before = space(ext4)
    cli = subprocess.Popen(  # --wait keeps the CLI in the foreground for the whole fault
        [sys.executable, "-m", "hostchaos", "inject", "disk-fill", "--path", str(ext4),
         "--size", "160M", "--rate", "20M/s", "--wait"],
        env={**os.environ, "HOSTCHAOS_STATE_DIR": str(state)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: _fill_bytes(ext4) >= 10 * MiB, 10)
        (record,) = open_records(state)
        os.kill(cli.pid, signal.SIGKILL)
        os.kill(record["holder"]["pid"], signal.SIGKILL)
        wait_for(lambda: not Path(f"/proc/{record['holder']['pid']}").exists(), 5)
    finally:
        cli.kill()
        cli.wait()
    assert 0 < _fill_bytes(ext4) < 150 * MiB  # stopped half-way, nobody left to remove it
    swept = hostchaos("sweep", "--json", state_dir=state)
    assert swept.returncode == 0, swept.stderr
    assert record["id"] in swept.stdout
    assert fill.find_fill_files(ext4) == [] and available(space(ext4)) == available(before)


def test_a_fill_from_a_past_boot_is_removed_by_sweep(ext4: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    result = hostchaos("inject", "disk-fill", "--path", str(ext4), "--size", "32M",
                       "--for", "10m", "--json", state_dir=state)
    assert result.returncode == 0, result.stderr
    fault_id = json.loads(result.stdout)["id"]
    path = state / "faults" / f"{fault_id}.json"
    data = json.loads(path.read_text())
    data["boot_id"] = "00000000-0000-0000-0000-000000000000"  # as if written before a reboot
    path.write_text(json.dumps(data))
    (path.parent / f".{fault_id}.json.copy").unlink(missing_ok=True)
    swept = hostchaos("sweep", "--json", state_dir=state)
    assert swept.returncode == 0, swept.stderr
    assert fill.find_fill_files(ext4) == []
    assert open_records(state) == []
    warden = data["holder"]["pid"]
    wait_for(lambda: not Path(f"/proc/{warden}").exists(), 10)


def test_a_containers_volume_is_filled_through_the_containers_root(ext4: Path,
                                                                    tmp_path: Path) -> None:
    """--container X --path /data: the path as the container sees it, here a volume that is
    the test's own loop filesystem (never the overlay on the host's disk)."""
    from hostchaos.system import capabilities
    from tests.support import podman
    from tests.support.capability import need

    need(capabilities.container_runtime("podman"))
    state = tmp_path / "state"
    before = space(ext4)
    with podman.container("fill", "sleep", "600", volumes=(f"{ext4}:/data",)) as (name, _):
        injected = hostchaos("inject", "disk-fill", "--container", name, "--path", "/data",
                             "--size", "48M", "--json", state_dir=state)
        assert injected.returncode == 0, injected.stderr
        fault_id = json.loads(injected.stdout)["id"]
        assert len(fill.find_fill_files(ext4)) == 1
        assert abs(used(space(ext4)) - used(before) - 48 * MiB) <= 0.005 * total(before)
        assert hostchaos("rollback", fault_id, state_dir=state).returncode == 0
        assert fill.find_fill_files(ext4) == [] and available(space(ext4)) == available(before)
