"""A container runtime counts only when it answers: a docker client with no daemon does not."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from hostchaos.cli import cli
from hostchaos.system import capabilities, containers

ANSWERS = """import sys
sys.stdout.write("runc\\n")
"""
NO_DAEMON = """import sys
sys.stderr.write("Cannot connect to the Docker daemon at unix:///var/run/docker.sock. "
                 "Is the docker daemon running?\\n")
sys.exit(1)
"""


def fake_program(directory: Path, name: str, body: str) -> None:
    path = directory / name
    path.write_text(f"#!{sys.executable}\n{body}")
    path.chmod(0o755)


@pytest.fixture
def fake_runtimes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A PATH holding only the fake runtimes the test writes (nothing real is asked)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    containers.runtime_status.cache_clear()
    yield bin_dir
    containers.runtime_status.cache_clear()


def test_a_client_without_its_daemon_is_installed_but_not_usable(fake_runtimes: Path) -> None:
    fake_program(fake_runtimes, "docker", NO_DAEMON)
    found = capabilities.container_runtimes()
    assert not found.ok
    assert "installed but not answering: docker (Cannot connect to the Docker daemon" \
        in found.detail
    assert "podman" in found.fix
    assert not capabilities.container_runtime("docker").ok
    assert capabilities.container_runtime("podman").detail == "not installed"


def test_doctor_names_which_runtime_answers_and_which_does_not(fake_runtimes: Path) -> None:
    fake_program(fake_runtimes, "docker", NO_DAEMON)
    fake_program(fake_runtimes, "podman", ANSWERS)
    found = capabilities.container_runtimes()
    assert found.ok and capabilities.container_runtime("podman").ok
    assert found.detail.startswith("answering: podman; installed but not answering: docker")
    result = CliRunner().invoke(cli, ["doctor", "--json"],
                                env={"HOSTCHAOS_STATE_DIR": str(fake_runtimes.parent)})
    data, _ = json.JSONDecoder().raw_decode(result.stdout)
    row = next(c for c in data["checks"] if c["name"] == "containers")
    assert row["ok"] and "answering: podman" in row["detail"] and "docker (" in row["detail"]


def test_a_runtime_that_hangs_is_cut_off(fake_runtimes: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    fake_program(fake_runtimes, "podman", "import time\ntime.sleep(30)\n")
    monkeypatch.setattr(containers, "PROBE_TIMEOUT", 0.5)
    status = {s.name: s for s in containers.runtime_status()}["podman"]
    assert status.installed and not status.answers and "did not answer" in status.detail
    assert os.environ["PATH"] == str(fake_runtimes)
