"""A client of the agent's API over its unix socket, standard library only.

Used by the CLI when the agent answers (:func:`answering`); it imports
neither pyroute2 nor psutil nor the agent's server libraries, so the
thin-client path starts as fast as ``--help``. Errors come back as the
hostchaos error class the agent raised (same message, same exit code), so the
CLI prints and exits exactly as if it had run the engine itself.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import stat
from pathlib import Path
from typing import Any

from hostchaos import errors
from hostchaos.errors import HostchaosError

#: how long `answering` waits for the agent to say it is healthy
PROBE_TIMEOUT = 2.0
#: a request may wait for the state lock (lock_timeout) and a slow kernel
REQUEST_TIMEOUT = 300.0


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP/1.1 over an AF_UNIX stream socket."""

    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        sock.settimeout(self.timeout)
        try:
            sock.connect(str(self.socket_path))
        except OSError:
            sock.close()
            raise
        self.sock = sock


class AgentUnavailable(HostchaosError, label="agent-unavailable"):
    """The agent stopped answering (or never spoke the API) in the middle of a command.

    The command is not retried in-process: the agent may have done it already.
    """


def _error_classes() -> dict[str, type[HostchaosError]]:
    found: dict[str, type[HostchaosError]] = {}
    pending: list[type[HostchaosError]] = [HostchaosError]
    while pending:
        cls = pending.pop()
        found.setdefault(cls.label, cls)
        pending.extend(cls.__subclasses__())
    return found


class AgentError(HostchaosError):
    """An error the agent reported that has no hostchaos class here (e.g. 413, 403)."""

    def __init__(self, message: str, exit_code: int, label: str) -> None:
        super().__init__(message)
        self.exit_code, self.label = exit_code, label


def error_from(status: int, body: Any) -> HostchaosError:
    """The exception the agent's error body stands for."""
    data = body.get("error") if isinstance(body, dict) else None
    if not isinstance(data, dict):
        return AgentError(f"the agent answered HTTP {status} without an error object", 1,
                          "agent")
    label = str(data.get("type", "error"))
    message = str(data.get("message", ""))
    code = data.get("exit_code")
    if label == "internal":
        return AgentError(f"agent: {message}", 1, label)
    cls = _error_classes().get(label)
    if cls is not None and cls is not HostchaosError:
        return cls(message)
    return AgentError(message, code if isinstance(code, int) else 1, label)


class AgentClient:
    """Calls the agent's API; each call is one connection (the CLI makes one or two)."""

    def __init__(self, path: Path, timeout: float = REQUEST_TIMEOUT) -> None:
        self.path = path
        self.timeout = timeout

    def request(self, method: str, url: str, body: Any = None) -> tuple[int, Any]:
        """(status, decoded JSON); AgentUnavailable when nothing answers."""
        conn = UnixHTTPConnection(self.path, self.timeout)
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            conn.request(method, url, body=data, headers=headers)
            response = conn.getresponse()
            raw = response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise AgentUnavailable(
                f"the agent on {self.path} stopped answering ({type(exc).__name__}: {exc}); "
                "whatever it did is in `hostchaos list`, and every fault keeps its deadline"
            ) from exc
        finally:
            conn.close()
        try:
            return response.status, json.loads(raw) if raw else None
        except ValueError as exc:
            raise AgentUnavailable(f"the agent on {self.path} answered HTTP {response.status} "
                                   "without JSON (overloaded?); retry") from exc

    def call(self, method: str, url: str, body: Any = None, ok: tuple[int, ...] = (200,)
             ) -> Any:
        """The decoded answer, or the hostchaos error the agent reported."""
        status, data = self.request(method, url, body)
        if status not in ok:
            raise error_from(status, data)
        return data

    def health(self) -> dict[str, Any]:
        result: dict[str, Any] = self.call("GET", "/v1/health")
        return result


def answering(path: Path, state_dir: Path) -> AgentClient | None:
    """A client if an agent answers on ``path`` for ``state_dir``; None otherwise (quickly).

    An agent serving another state directory is not used: the command then
    runs in-process against the directory it was told about.
    """
    try:
        if not stat.S_ISSOCK(os.stat(path).st_mode):
            return None
    except OSError:
        return None
    client = AgentClient(path, timeout=PROBE_TIMEOUT)
    try:
        health = client.health()
    except HostchaosError:  # AgentUnavailable included: not an agent we can use
        return None
    if not isinstance(health, dict) or not _same_dir(health.get("state_dir"), state_dir):
        return None
    return AgentClient(path)


def _same_dir(reported: Any, mine: Path) -> bool:
    if not isinstance(reported, str):
        return False
    try:
        return os.path.realpath(reported) == os.path.realpath(mine)
    except OSError:
        return False


__all__ = ["AgentClient", "AgentError", "AgentUnavailable", "answering", "errors"]
