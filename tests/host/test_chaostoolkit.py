"""The Chaos Toolkit extension, through the real `chaos` command: discovery lists hostchaos's
actions and probes; the example experiment fills a tmpfs of the test's own, sees a writer
fail, gives the space back, and leaves no fault."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cli import open_records, records
from tests.support.fs import tmpfs as mounted_tmpfs

REPO = Path(__file__).resolve().parents[2]
CHAOS = Path(sys.executable).parent / "chaos"


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    with mounted_tmpfs(tmp_path / "data", "32m", "hc-ctk") as point:
        yield point


def chaos(*args: str, cwd: Path, state_dir: Path, env: dict[str, str] | None = None,
          ) -> subprocess.CompletedProcess[str]:
    assert CHAOS.exists(), "chaostoolkit is a pinned test dependency"
    return subprocess.run([str(CHAOS), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, check=False,
                          env={**os.environ, "HOSTCHAOS_STATE_DIR": str(state_dir),
                               "PATH": f"{CHAOS.parent}:{os.environ['PATH']}", **(env or {})})


def test_chaos_discover_lists_the_actions_and_probes(tmp_path: Path, state_dir: Path) -> None:
    result = chaos("discover", "hostchaos", "--no-install", "--discovery-path",
                   str(tmp_path / "discovery.json"), cwd=tmp_path, state_dir=state_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    found = json.loads((tmp_path / "discovery.json").read_text())
    names = {(a["type"], a["name"]) for a in found["activities"]}
    assert {("action", "inject_fault"), ("action", "rollback_injected"),
            ("probe", "open_faults"), ("probe", "fault_state")} <= names
    assert "clock" in found["system"]["hostchaos"]["kinds"]


def test_the_example_experiment_runs_for_real(tmp_path: Path, state_dir: Path,
                                              tmpfs: Path) -> None:
    before = os.statvfs(tmpfs).f_bavail
    experiment = tmp_path / "disk-full.json"
    shutil.copy(REPO / "examples/chaostoolkit/disk-full.json", experiment)
    journal = tmp_path / "journal.json"
    result = chaos("run", "--journal-path", str(journal), str(experiment), cwd=tmp_path,
                   state_dir=state_dir, env={"HC_EXAMPLE_PATH": str(tmpfs)})
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(journal.read_text())
    assert report["status"] == "completed" and report["deviated"] is False
    runs = {run["activity"]["name"]: run for run in report["run"]}
    during = runs["write-while-full"]["output"]
    assert during["status"] != 0 and "No space left on device" in during["stderr"]
    assert len(runs["open-disk-fills"]["output"]) == 1
    (record,) = records(state_dir)
    assert record["state"] == "rolled-back" and not open_records(state_dir)
    for name in ("steady.bin", "during.bin"):
        (tmpfs / name).unlink(missing_ok=True)
    assert os.statvfs(tmpfs).f_bavail == before
