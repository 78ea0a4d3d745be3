from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    path = tmp_path / "state"
    path.mkdir()
    return path


@pytest.fixture(autouse=True)
def _isolated_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never read the machine's /etc/hostchaos/config.toml or state directory."""
    monkeypatch.setenv("HOSTCHAOS_CONFIG", str(tmp_path / "no-config.toml"))
    if "HOSTCHAOS_STATE_DIR" not in os.environ:
        monkeypatch.setenv("HOSTCHAOS_STATE_DIR", str(tmp_path / "default-state"))
