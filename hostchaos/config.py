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

from dataclasses import dataclass
from pathlib import Path

from hostchaos import config_file
from hostchaos.errors import SpecError

DEFAULT_CONFIG_PATH = Path(config_file.DEFAULT_CONFIG_PATH)
DEFAULT_STATE_DIR = Path(config_file.DEFAULT_STATE_DIR)
DEFAULT_SOCKET = Path(config_file.DEFAULT_SOCKET)


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
        """The configuration in force: the file and the environment (hostchaos.config_file)."""
        path = config_file.config_path()
        values = config_file.read_values(path)
        default = config_file.duration(values, "default_duration", cls.default_duration, path)
        cap = config_file.duration(values, "max_duration", cls.max_duration, path)
        if default > cap:
            raise SpecError(f"config file {path}: default_duration is above max_duration")
        lock_timeout = config_file.duration(values, "lock_timeout", cls.lock_timeout, path)
        textfile = config_file.text(values, "metrics_textfile", "", path)
        return cls(default_duration=default, max_duration=cap, lock_timeout=lock_timeout,
                   state_dir=Path(config_file.state_dir()),
                   socket_path=Path(config_file.socket_path(values, path)),
                   socket_group=config_file.text(values, "group", "", path) or None,
                   tcp=config_file.text(values, "tcp", "", path) or None,
                   metrics_textfile=Path(textfile) if textfile else None)
