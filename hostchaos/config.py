"""Agent configuration: ``/etc/hostchaos/config.toml`` or ``$HOSTCHAOS_CONFIG``.

Example::

    # /etc/hostchaos/config.toml
    default_duration = "60s"   # --for when none is given
    max_duration = "1h"        # hard cap on --for and on extend
    lock_timeout = "30s"       # how long a command waits for another to finish

    # the agent (`hostchaos agent`)
    socket = "/run/hostchaos/hostchaos.sock"  # $HOSTCHAOS_SOCKET overrides
    group = "chaos"            # members may use the API (socket 0660); default: root only (0600)
    tcp = "127.0.0.1:8470"     # also listen on loopback TCP (off by default; loopback only)
    metrics_textfile = "/var/lib/node_exporter/textfile/hostchaos.prom"  # off by default
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from hostchaos.errors import SpecError
from hostchaos.quantities import parse_duration

DEFAULT_CONFIG_PATH = Path("/etc/hostchaos/config.toml")
DEFAULT_STATE_DIR = Path("/var/lib/hostchaos")
DEFAULT_SOCKET = Path("/run/hostchaos/hostchaos.sock")


@dataclass(frozen=True)
class Config:
    """Limits and paths every fault obeys."""

    default_duration: float = 60.0
    max_duration: float = 3600.0
    lock_timeout: float = 30.0
    state_dir: Path = DEFAULT_STATE_DIR
    #: the agent's unix socket ($HOSTCHAOS_SOCKET overrides the file)
    socket_path: Path = DEFAULT_SOCKET
    #: a group whose members may use the agent's API (None: root only)
    socket_group: str | None = None
    #: "HOST:PORT" on loopback for an additional TCP listener (None: no TCP)
    tcp: str | None = None
    #: a node_exporter textfile the agent keeps current (None: none)
    metrics_textfile: Path | None = None

    @classmethod
    def load(cls) -> Config:
        path = Path(os.environ.get("HOSTCHAOS_CONFIG", str(DEFAULT_CONFIG_PATH)))
        state_dir = Path(os.environ.get("HOSTCHAOS_STATE_DIR", str(DEFAULT_STATE_DIR)))
        values: dict[str, object] = {}
        if path.is_file():
            import tomllib  # only when there is a file: the thin client starts without it

            try:
                values = tomllib.loads(path.read_text())
            except (OSError, tomllib.TOMLDecodeError) as exc:
                raise SpecError(f"config file {path} is unreadable: {exc}") from exc
        default = _duration(values, "default_duration", cls.default_duration, path)
        cap = _duration(values, "max_duration", cls.max_duration, path)
        if default > cap:
            raise SpecError(f"config file {path}: default_duration is above max_duration")
        lock_timeout = _duration(values, "lock_timeout", cls.lock_timeout, path)
        socket_path = Path(os.environ.get("HOSTCHAOS_SOCKET") or
                           _text(values, "socket", str(DEFAULT_SOCKET), path))
        textfile = _text(values, "metrics_textfile", "", path)
        return cls(default_duration=default, max_duration=cap, lock_timeout=lock_timeout,
                   state_dir=state_dir, socket_path=socket_path,
                   socket_group=_text(values, "group", "", path) or None,
                   tcp=_text(values, "tcp", "", path) or None,
                   metrics_textfile=Path(textfile) if textfile else None)


def _text(values: dict[str, object], key: str, fallback: str, path: Path) -> str:
    raw = values.get(key)
    if raw is None:
        return fallback
    if not isinstance(raw, str):
        raise SpecError(f"config file {path}: {key} must be a string, not {raw!r}")
    return raw


def _duration(values: dict[str, object], key: str, fallback: float, path: Path) -> float:
    raw = values.get(key)
    if raw is None:
        return fallback
    return parse_duration(str(raw), what=f"{key} in {path}")
