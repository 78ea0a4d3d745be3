"""The thin client's own HTTP/1.1 framing: whole answers parse, anything else is refused."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest

from hostchaos.agent.client import AgentClient, AgentUnavailable, ProtocolError, parse_answer


def test_a_content_length_answer() -> None:
    raw = (b"HTTP/1.1 201 Created\r\ncontent-type: application/json\r\ncontent-length: 9"
           b'\r\n\r\n{"a": 1}\n')
    assert parse_answer(raw) == (201, b'{"a": 1}\n')


def test_a_chunked_answer() -> None:
    raw = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"4\r\n{\"a\"\r\n5;x=y\r\n: 1}\n\r\n0\r\n\r\n")
    assert parse_answer(raw) == (200, b'{"a": 1}\n')


@pytest.mark.parametrize("raw", [
    b"",
    b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n",  # ended inside the headers
    b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n{}",  # a short body
    b"SSH-2.0-OpenSSH_9.2\r\n\r\n",  # something else on the socket
    b"HTTP/1.1 abc OK\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n10\r\nshort\r\n",
])
def test_anything_but_a_whole_answer_is_refused(raw: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_answer(raw)


def one_answer(tmp_path: Path, answer: bytes) -> tuple[Path, list[bytes]]:
    """A unix socket that reads one request, answers ``answer`` and closes."""
    path = tmp_path / "agent.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)
    seen: list[bytes] = []

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(4096)
            head, _, body = data.partition(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            while len(body) < length:
                body += conn.recv(4096)
            seen.append(head + b"\r\n\r\n" + body)
            conn.sendall(answer)
        server.close()

    threading.Thread(target=serve, daemon=True).start()
    return path, seen


def test_the_request_is_framed_and_json_comes_back(tmp_path: Path) -> None:
    path, seen = one_answer(tmp_path, b"HTTP/1.1 201 Created\r\ncontent-length: 12\r\n\r\n"
                                      b'{"id": "x"}\n')
    assert AgentClient(path, timeout=5).request("POST", "/v1/faults", {"kind": "k"}) == (
        201, {"id": "x"})
    request = seen[0]
    assert request.startswith(b"POST /v1/faults HTTP/1.1\r\n")
    assert b"Connection: close\r\n" in request and b"Content-Length: 12\r\n" in request
    assert request.endswith(b'\r\n\r\n{"kind":"k"}')  # compact (wire_json)


def test_a_broken_answer_is_agent_unavailable(tmp_path: Path) -> None:
    path, _ = one_answer(tmp_path, b"HTTP/1.1 200 OK\r\ncontent-length: 50\r\n\r\n{")
    with pytest.raises(AgentUnavailable, match="stopped answering"):
        AgentClient(path, timeout=5).request("GET", "/v1/health")
