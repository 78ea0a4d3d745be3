"""The configuration file and the environment: Config.load and the fast path's agent_location."""

from __future__ import annotations

from pathlib import Path

import pytest

from hostchaos.config import DEFAULT_SOCKET, Config
from hostchaos.config_file import agent_location
from hostchaos.errors import SpecError


def _config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    monkeypatch.setenv("HOSTCHAOS_CONFIG", str(path))
    return path


def test_no_file_gives_the_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("HOSTCHAOS_SOCKET", raising=False)
    monkeypatch.setenv("HOSTCHAOS_STATE_DIR", str(tmp_path / "state"))
    config = Config.load()
    assert (config.default_duration, config.max_duration, config.socket_path) == \
        (60.0, 3600.0, DEFAULT_SOCKET)
    assert agent_location() == (str(DEFAULT_SOCKET), str(tmp_path / "state"))


def test_the_file_is_read_and_the_environment_wins(monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Path) -> None:
    monkeypatch.delenv("HOSTCHAOS_SOCKET", raising=False)
    _config_file(tmp_path, monkeypatch, 'default_duration = "2m"\nmax_duration = "3h"\n'
                 f'socket = "{tmp_path}/a.sock"\ngroup = "chaos"\n'
                 'metrics_textfile = "/tmp/x.prom"\n')
    config = Config.load()
    assert (config.default_duration, config.max_duration) == (120.0, 10800.0)
    assert (config.socket_path, config.socket_group) == (tmp_path / "a.sock", "chaos")
    assert config.metrics_textfile == Path("/tmp/x.prom") and config.tcp is None
    assert agent_location()[0] == str(tmp_path / "a.sock")
    monkeypatch.setenv("HOSTCHAOS_SOCKET", str(tmp_path / "b.sock"))
    assert Config.load().socket_path == tmp_path / "b.sock"
    assert agent_location()[0] == str(tmp_path / "b.sock")


@pytest.mark.parametrize("text, message", [
    ("socket = [", "is unreadable"),
    ("socket = 5", "socket must be a string"),
    ('default_duration = "soon"', "default_duration"),
    ('default_duration = "2h"\nmax_duration = "1h"', "default_duration is above max_duration"),
])
def test_a_bad_file_is_one_spec_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                      text: str, message: str) -> None:
    monkeypatch.delenv("HOSTCHAOS_SOCKET", raising=False)
    _config_file(tmp_path, monkeypatch, text)
    with pytest.raises(SpecError, match=message):
        Config.load()


def test_a_file_that_is_not_utf8_is_one_spec_error(monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Path) -> None:
    path = _config_file(tmp_path, monkeypatch, "")
    path.write_bytes(b'socket = "\xff"\n')
    with pytest.raises(SpecError, match="is unreadable"):
        Config.load()
    with pytest.raises(SpecError, match="is unreadable"):
        agent_location()
