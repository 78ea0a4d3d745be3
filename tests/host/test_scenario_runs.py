"""Scenarios run for real against sandboxes the tests make: a supervised worker, a small
tmpfs. The report's detection and recovery times come from probes that really failed."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cli import hostchaos, open_records, records
from tests.support.fs import tmpfs as mounted_tmpfs
from tests.support.png import count_color
from tests.support.waiting import wait_for

WRITE_4M = """
import os, sys
path = sys.argv[1]
try:
    with open(path, "wb") as handle:
        handle.write(bytes(4 << 20))
        handle.flush()
        os.fsync(handle.fileno())
finally:
    os.unlink(path)
"""


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    with mounted_tmpfs(tmp_path / "small") as point:
        yield point


FAULT_BAR, FAILED_TICK, PASSED_TICK = (0xE8, 0xA3, 0x3D), (0xC6, 0x28, 0x28), (0x1A, 0x7F, 0x37)


def screenshot(page: Path, png: Path) -> None:
    """Headless Chromium's picture of ``page`` (a local file: no network is touched)."""
    chromium = shutil.which("chromium")
    assert chromium is not None, "chromium is installed by scripts/setup"
    with_profile = png.parent / "chromium-profile"
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--no-first-run", "--disable-quic",
                    f"--user-data-dir={with_profile}", "--window-size=1000,700",
                    f"--screenshot={png}", page.as_uri()],
                   capture_output=True, timeout=120, check=True)
    assert png.stat().st_size > 1000


def writer(tmp_path: Path) -> Path:
    """A probe program: write 4 MiB to the file it is given, fsync, remove it (always)."""
    path = tmp_path / "write4m.py"
    path.write_text(WRITE_4M)
    return path


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


@pytest.fixture
def supervised_worker(tmp_path: Path) -> Iterator[str]:
    """A worker (a copy of sleep with a name of its own) that a supervisor restarts 0.3 s
    after it dies."""
    name = f"hcwk{secrets.token_hex(3)}"
    binary = tmp_path / name
    shutil.copy(shutil.which("sleep") or "/bin/sleep", binary)
    supervisor = subprocess.Popen(
        [sys.executable, "-c", "import subprocess, sys, time\n"
         "while True:\n    subprocess.run([sys.argv[1], '600'])\n    time.sleep(0.3)\n",
         str(binary)], start_new_session=True)
    try:
        yield name
    finally:
        os.killpg(supervisor.pid, signal.SIGKILL)
        supervisor.wait()


def run_scenario(path: Path, state_dir: Path, *args: str) -> tuple[int, dict[str, object]]:
    result = hostchaos("run", str(path), "--json", *args, state_dir=state_dir, timeout=180)
    assert result.stdout, result.stderr
    return result.returncode, json.loads(result.stdout)


def test_a_kill_loop_is_detected_and_the_supervisor_recovers_it(
        tmp_path: Path, state_dir: Path, supervised_worker: str) -> None:
    path = tmp_path / "kill.yaml"
    path.write_text(f"""
name: kill loop of a supervised worker
settings: {{consecutive: 3, recovery-timeout: 5s}}
probes:
  - name: worker
    process: {{name: {supervised_worker}}}
    every: 100ms
steps:
  - kill: {{name: {supervised_worker}, count: 1, interval: 1s, for: 3s}}
""")
    code, report = run_scenario(path, state_dir)
    assert code == 0, report
    (run,) = report["runs"]  # type: ignore[index]
    assert run["outcome"] == "recovered"
    (found,) = run["findings"]
    assert found["detected"] and found["time_to_detect"] < 0.6
    assert found["recovered"] and found["recovery_time"] < 2.0
    failures = [s for s in run["probes"][0]["samples"] if not s[1]]
    assert len(failures) >= 3  # the worker was seen gone after each of the kills
    (record,) = records(state_dir)
    kills = [n for n in record["undo"] if n["step"] == "kill"]
    assert len(kills) >= 3 and record["state"] == "rolled-back"


def test_a_disk_fill_fails_a_writer_and_recovers_and_repeat_gives_mttr(
        tmp_path: Path, state_dir: Path, tmpfs: Path) -> None:
    before = free_bytes(tmpfs)
    path = tmp_path / "fill.yaml"
    path.write_text(f"""
name: disk almost full
settings: {{consecutive: 2, recovery-timeout: 5s}}
probes:
  - name: write 4 MiB
    command: [{sys.executable}, {writer(tmp_path)}, {tmpfs}/probe.bin]
    every: 200ms
steps:
  - disk-fill: {{path: {tmpfs}, leave-free: 1M, for: 2s}}
""")
    html = tmp_path / "report.html"
    code, report = run_scenario(path, state_dir, "--repeat", "2", "--html", str(html))
    assert code == 0, report
    summary = report["summary"]  # type: ignore[index]
    assert summary["runs"] == 2 and summary["detected"] == 2 and summary["recovery_rate"] == 1.0
    assert summary["mttr_s"] is not None and summary["mttr_s"] < 2.0
    for run in report["runs"]:  # type: ignore[union-attr]
        (found,) = run["findings"]
        assert found["time_to_detect"] < 0.5
    assert "<svg" in html.read_text()
    assert abs(free_bytes(tmpfs) - before) < 1 << 20
    assert not open_records(state_dir)
    # the page as a person sees it: headless Chromium draws the timeline's bars and ticks
    shot = tmp_path / "report.png"
    screenshot(html, shot)
    assert count_color(shot, FAULT_BAR) > 500  # the fault's orange bars
    assert count_color(shot, FAILED_TICK) > 20 and count_color(shot, PASSED_TICK) > 20


def test_an_abort_probe_leaves_no_fault_within_a_second(tmp_path: Path, state_dir: Path,
                                                        tmpfs: Path) -> None:
    before = free_bytes(tmpfs)
    path = tmp_path / "abort.yaml"
    path.write_text(f"""
name: abort when writes fail
probes:
  - name: write 4 MiB
    command: [{sys.executable}, {writer(tmp_path)}, {tmpfs}/probe.bin]
    every: 100ms
    abort: true
steps:
  - disk-fill: {{path: {tmpfs}, leave-free: 1M, for: 60s}}
""")
    code, report = run_scenario(path, state_dir)
    assert code == 11, report
    (run,) = report["runs"]  # type: ignore[index]
    assert run["outcome"] == "aborted" and "abort: true" in run["reason"]
    (fault,) = run["faults"]
    first_failure = next(s[0] for s in run["probes"][0]["samples"]
                         if not s[1] and s[0] >= fault["applied_at"])
    assert fault["ended_at"] - first_failure < 1.0
    assert abs(free_bytes(tmpfs) - before) < 1 << 20
    assert not open_records(state_dir)


def test_kill_9_of_the_runner_leaves_nothing_once_its_lease_is_gone(
        tmp_path: Path, state_dir: Path, tmpfs: Path) -> None:
    before = free_bytes(tmpfs)
    path = tmp_path / "long.yaml"
    path.write_text(f"""
name: a long fill whose runner dies
settings: {{lease: 1s}}
probes:
  - name: alive
    command: [/bin/true]
steps:
  - disk-fill: {{path: {tmpfs}, leave-free: 1M, for: 5m}}
""")
    env = {**os.environ, "HOSTCHAOS_STATE_DIR": str(state_dir)}
    runner = subprocess.Popen([sys.executable, "-m", "hostchaos", "run", str(path)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: any(r["state"] == "active" for r in records(state_dir)), 30)
        assert free_bytes(tmpfs) < 2 << 20
        runner.send_signal(signal.SIGKILL)
        runner.wait()
        killed = time.monotonic()
        wait_for(lambda: not open_records(state_dir), 10)
        assert time.monotonic() - killed < 1.0 + 1.5  # the lease, and the rollback itself
        (record,) = records(state_dir)
        assert "lease" in (record["end_reason"] or "")
        assert abs(free_bytes(tmpfs) - before) < 1 << 20
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()
