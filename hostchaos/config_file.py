"""Reading ``/etc/hostchaos/config.toml`` (or ``$HOSTCHAOS_CONFIG``) and the environment.

:class:`hostchaos.config.Config` is built from what this module reads. It is
a module of its own, on ``os`` alone, because the CLI's fast path through the
agent (:mod:`hostchaos.fastpath`) needs only where the agent listens and which
state directory it must serve (:func:`agent_location`), and loading
``dataclasses`` and ``pathlib`` for that was a fifth of the command's time.
"""

from __future__ import annotations

import os

from hostchaos.errors import SpecError

DEFAULT_CONFIG_PATH = "/etc/hostchaos/config.toml"
DEFAULT_STATE_DIR = "/var/lib/hostchaos"
DEFAULT_SOCKET = "/run/hostchaos/hostchaos.sock"


def config_path() -> str:
    """The configuration file this process reads (it need not exist)."""
    return os.environ.get("HOSTCHAOS_CONFIG", DEFAULT_CONFIG_PATH)


def state_dir() -> str:
    """The state directory: ``$HOSTCHAOS_STATE_DIR`` or the default."""
    return os.environ.get("HOSTCHAOS_STATE_DIR", DEFAULT_STATE_DIR)


def read_values(path: str) -> dict[str, object]:
    """The file's table; empty when there is no file; SpecError when it cannot be read."""
    if not os.path.isfile(path):
        return {}
    import tomllib  # only when there is a file: the thin client starts without it

    try:
        with open(path, encoding="utf-8") as file:
            return tomllib.loads(file.read())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise SpecError(f"config file {path} is unreadable: {exc}") from exc


def text(values: dict[str, object], key: str, fallback: str, path: str) -> str:
    """The string ``values[key]``, or ``fallback`` when it is not set."""
    raw = values.get(key)
    if raw is None:
        return fallback
    if not isinstance(raw, str):
        raise SpecError(f"config file {path}: {key} must be a string, not {raw!r}")
    return raw


def duration(values: dict[str, object], key: str, fallback: float, path: str) -> float:
    """The duration ``values[key]`` in seconds, or ``fallback`` when it is not set."""
    raw = values.get(key)
    if raw is None:
        return fallback
    from hostchaos.quantities import parse_duration

    return parse_duration(str(raw), what=f"{key} in {path}")


def socket_path(values: dict[str, object], path: str) -> str:
    """The agent's socket: ``$HOSTCHAOS_SOCKET``, else the file's ``socket``, else the default."""
    return os.environ.get("HOSTCHAOS_SOCKET") or text(values, "socket", DEFAULT_SOCKET, path)


def agent_location() -> tuple[str, str]:
    """(socket path, state directory) as :meth:`Config.load` would give them."""
    path = config_path()
    return socket_path(read_values(path), path), state_dir()
