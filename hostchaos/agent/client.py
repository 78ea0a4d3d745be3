"""A client of the agent's API over its unix socket, standard library only.

Used by the CLI when the agent answers (:func:`answering`); it imports
neither pyroute2 nor psutil nor the agent's server libraries, so the
thin-client path starts as fast as ``--help``. Errors come back as the
hostchaos error class the agent raised (same message, same exit code), so the
CLI prints and exits exactly as if it had run the engine itself.

It speaks the little HTTP/1.1 it needs itself (one request per connection,
``Connection: close``, the answer read to end of file) rather than through
``http.client``: that module pulls in ``email`` and ``ssl`` and cost the thin
client about 15 ms of its start, h11 (the agent's own parser) about as much.
The answer's framing is still checked: a status line, headers, and exactly
``Content-Length`` bytes of body (or a chunked body), else AgentUnavailable.
"""

from __future__ import annotations

import _socket as sockets  # socket.py's own C half (it always has one); socket.py loads enum
import os
import stat

from hostchaos import errors
from hostchaos.agent import wire_json
from hostchaos.errors import HostchaosError

TYPE_CHECKING = False  # as typing.TYPE_CHECKING: the fast path starts without typing, pathlib

if TYPE_CHECKING:
    from os import PathLike
    from typing import Any

    SocketPath = str | PathLike[str]

#: how long `answering` waits for the agent to say it is healthy
PROBE_TIMEOUT = 2.0
#: a request may wait for the state lock (lock_timeout) and a slow kernel
REQUEST_TIMEOUT = 300.0
#: no answer of the agent's is near this; a longer one is not the agent speaking
MAX_ANSWER_BYTES = 64 << 20


class ProtocolError(Exception):
    """The bytes that came back are not an HTTP/1.1 answer."""


def exchange(path: SocketPath, timeout: float, method: str, url: str,
             body: bytes | None = None) -> tuple[int, bytes]:
    """One HTTP/1.1 request on a new connection to the unix socket ``path``: (status, body).

    OSError when the socket cannot be reached or the connection breaks,
    ProtocolError when the answer is not HTTP.
    """
    head = [f"{method} {url} HTTP/1.1", "Host: localhost", "Accept: application/json",
            "Connection: close", f"Content-Length: {len(body or b'')}"]
    if body is not None:
        head.append("Content-Type: application/json")
    request = ("\r\n".join(head) + "\r\n\r\n").encode("ascii") + (body or b"")
    sock = sockets.socket(sockets.AF_UNIX, sockets.SOCK_STREAM | sockets.SOCK_CLOEXEC)
    try:
        sock.settimeout(timeout)
        sock.connect(os.fspath(path))
        sock.sendall(request)
        chunks: list[bytes] = []
        size = 0
        while data := sock.recv(65536):
            chunks.append(data)
            size += len(data)
            if size > MAX_ANSWER_BYTES:
                raise ProtocolError(f"an answer of over {MAX_ANSWER_BYTES} bytes")
    finally:
        sock.close()
    return parse_answer(b"".join(chunks))


def parse_answer(raw: bytes) -> tuple[int, bytes]:
    """(status, body) of one whole HTTP/1.1 answer; ProtocolError if it is not one."""
    head, sep, rest = raw.partition(b"\r\n\r\n")
    if not sep:
        raise ProtocolError("the answer ended inside its headers" if raw else "no answer")
    status_line, *header_lines = head.split(b"\r\n")
    parts = status_line.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise ProtocolError(f"not an HTTP status line: {status_line[:80]!r}")
    headers: dict[bytes, bytes] = {}
    for line in header_lines:
        name, colon, value = line.partition(b":")
        if not colon:
            raise ProtocolError(f"not an HTTP header: {line[:80]!r}")
        headers[name.strip().lower()] = value.strip()
    if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        return int(parts[1]), _unchunk(rest)
    length = headers.get(b"content-length")
    if length is None:
        return int(parts[1]), rest  # delimited by the end of the connection
    if not length.isdigit() or len(rest) < int(length):
        raise ProtocolError(f"the body ended after {len(rest)} of {length!r} bytes")
    return int(parts[1]), rest[:int(length)]


def _unchunk(data: bytes) -> bytes:
    out: list[bytes] = []
    while True:
        size_line, sep, data = data.partition(b"\r\n")
        try:
            size = int(size_line.split(b";", 1)[0], 16)
        except ValueError:
            raise ProtocolError(f"not a chunk size: {size_line[:40]!r}") from None
        if not sep or len(data) < size + 2:
            raise ProtocolError("the chunked body ended early")
        if size == 0:
            return b"".join(out)
        out.append(data[:size])
        data = data[size + 2:]


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

    def __init__(self, path: SocketPath, timeout: float = REQUEST_TIMEOUT) -> None:
        self.path = path
        self.timeout = timeout

    def request(self, method: str, url: str, body: Any = None) -> tuple[int, Any]:
        """(status, decoded JSON); AgentUnavailable when nothing answers."""
        data = None if body is None else wire_json.dumps(body).encode()
        try:
            status, raw = exchange(self.path, self.timeout, method, url, data)
        except (OSError, ProtocolError) as exc:
            raise AgentUnavailable(
                f"the agent on {self.path} stopped answering ({type(exc).__name__}: {exc}); "
                "whatever it did is in `hostchaos list`, and every fault keeps its deadline"
            ) from exc
        try:
            return status, wire_json.loads(raw) if raw else None
        except ValueError as exc:
            raise AgentUnavailable(f"the agent on {self.path} answered HTTP {status} "
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


def answering(path: SocketPath, state_dir: SocketPath) -> AgentClient | None:
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


def _same_dir(reported: Any, mine: SocketPath) -> bool:
    if not isinstance(reported, str):
        return False
    try:
        return os.path.realpath(reported) == os.path.realpath(mine)
    except OSError:
        return False


__all__ = ["AgentClient", "AgentError", "AgentUnavailable", "answering", "errors"]
