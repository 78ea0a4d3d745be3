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
    """Never read the machine's /etc/hostchaos/config.toml, state or runtime directory."""
    monkeypatch.setenv("HOSTCHAOS_CONFIG", str(tmp_path / "no-config.toml"))
    if "HOSTCHAOS_STATE_DIR" not in os.environ:
        monkeypatch.setenv("HOSTCHAOS_STATE_DIR", str(tmp_path / "default-state"))
    if "HOSTCHAOS_RUN_DIR" not in os.environ:  # clock control files, never /run/hostchaos
        monkeypatch.setenv("HOSTCHAOS_RUN_DIR", str(tmp_path / "run"))
