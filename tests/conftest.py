from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "state"
    path.mkdir()
    yield path
    unmount_below(path)


def unmount_below(path: Path) -> None:
    """Lazily unmount whatever a test left mounted under ``path`` (namespace handles and
    their shared directory), deepest first, so the temporary directory can go."""
    import subprocess

    with open("/proc/self/mountinfo") as handle:
        points = [line.split()[4] for line in handle]
    below = [p for p in points if p == str(path) or p.startswith(f"{path}/")]
    for point in sorted(set(below), key=len, reverse=True):
        subprocess.run(["umount", "--lazy", point], capture_output=True, check=False)


@pytest.fixture(autouse=True)
def _isolated_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never read the machine's /etc/hostchaos/config.toml, state or runtime directory,
    nor use its agent."""
    monkeypatch.setenv("HOSTCHAOS_CONFIG", str(tmp_path / "no-config.toml"))
    monkeypatch.setenv("HOSTCHAOS_SOCKET", str(tmp_path / "no-agent" / "hostchaos.sock"))
    if "HOSTCHAOS_STATE_DIR" not in os.environ:
        monkeypatch.setenv("HOSTCHAOS_STATE_DIR", str(tmp_path / "default-state"))
    if "HOSTCHAOS_RUN_DIR" not in os.environ:  # clock control files, never /run/hostchaos
        monkeypatch.setenv("HOSTCHAOS_RUN_DIR", str(tmp_path / "run"))


@pytest.fixture(params=["in-process", "agent"])
def agent_mode(request: pytest.FixtureRequest, state_dir: Path, tmp_path: Path,
               monkeypatch: pytest.MonkeyPatch, _isolated_config: None) -> Iterator[str]:
    """Run a CLI test twice: "in-process", and "agent" (a real agent on a temp socket,
    serving the test's ``state_dir``, that the CLI then goes through). Use it with
    ``pytestmark = pytest.mark.usefixtures("agent_mode")``."""
    from tests.support.agent import running_agent

    mode = str(request.param)
    if mode != "agent":
        yield mode
        return
    socket_path = tmp_path / "agent" / "hostchaos.sock"
    monkeypatch.setenv("HOSTCHAOS_SOCKET", str(socket_path))
    with running_agent(state_dir, socket_path, log=tmp_path / "agent.log"):
        yield mode
