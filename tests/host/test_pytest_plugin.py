"""The pytest plugin's example, run as a user would (pytest in a subprocess, as root):
its faults are gone after the tests, and also when the test process is killed with -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.support.cli import open_records, records
from tests.support.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples/pytest/test_disk_full.py"


def pytest_run(state_dir: Path, *args: str, env: dict[str, str] | None = None,
               ) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-s", str(EXAMPLE),
         *args], cwd=REPO, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        env={**os.environ, "HOSTCHAOS_STATE_DIR": str(state_dir), **(env or {})})


def test_the_example_passes_and_leaves_no_fault(state_dir: Path) -> None:
    run = pytest_run(state_dir)
    out, _ = run.communicate(timeout=300)
    assert run.returncode == 0, out
    assert "2 passed, 1 skipped" in out, out
    done = records(state_dir)
    assert len(done) == 2 and not open_records(state_dir)
    assert {r["kind"] for r in done} == {"disk-fill"}


def test_a_test_process_killed_mid_test_leaves_its_fault_only_for_its_lease(
        state_dir: Path) -> None:
    run = pytest_run(state_dir, "-k", "killed_mid_test", "--hostchaos-lease", "1s",
                     env={"HOSTCHAOS_EXAMPLE_SLEEP": "1"})
    try:
        assert run.stdout is not None
        for line in run.stdout:
            if "injected" in line:
                break
        (record,) = open_records(state_dir)
        assert record["state"] == "active" and record["lease_seconds"] == 1.0
        time.sleep(2.5)  # the renewer keeps it alive past its lease while the process lives
        assert open_records(state_dir)
        run.send_signal(signal.SIGKILL)  # teardown never runs
        run.wait()
        killed = time.monotonic()
        wait_for(lambda: not open_records(state_dir), 10)
        assert time.monotonic() - killed < 1.0 + 1.5
        (ended,) = records(state_dir)
        assert "lease" in (ended["end_reason"] or "")
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
        scratch = Path("/run/hostchaos-example-disk")  # the killed test could not clean up
        subprocess.run(["umount", "--lazy", str(scratch)], check=False, capture_output=True)
        if scratch.is_dir():
            scratch.rmdir()
