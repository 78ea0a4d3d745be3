"""A real `hostchaos agent` process on a temporary socket, for tests of the API and the CLI.

``running_agent(state_dir, socket_path)`` starts it, waits until it answers
``/v1/health`` and yields the process; on the way out it is stopped with
SIGTERM (which rolls back its faults) and, if that does not end it, killed.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def unix_connection(path: Path, timeout: float) -> Any:
    """An http.client connection over an AF_UNIX stream socket (the tests' own client,
    independent of the CLI's)."""
    import http.client

    class UnixHTTPConnection(http.client.HTTPConnection):
        def connect(self) -> None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            sock.settimeout(timeout)
            try:
                sock.connect(str(path))
            except OSError:
                sock.close()
                raise
            self.sock = sock

    return UnixHTTPConnection("localhost", timeout=timeout)


def raw_request(socket_path: Path, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None, timeout: float = 30.0
                ) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 request over the unix socket: (status, headers, body)."""
    import http.client

    conn = unix_connection(socket_path, timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        data = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, data
    except http.client.RemoteDisconnected:
        return 0, {}, b""
    finally:
        conn.close()


def call(socket_path: Path, method: str, path: str, payload: Any = None
         ) -> tuple[int, Any]:
    """A JSON request: (status, decoded body)."""
    body = None if payload is None else json.dumps(payload).encode()
    headers = {"Content-Type": "application/json"} if body is not None else {}
    status, _, data = raw_request(socket_path, method, path, body, headers)
    return status, json.loads(data) if data else None


def answers(socket_path: Path) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(1)
            probe.connect(str(socket_path))
        return call(socket_path, "GET", "/v1/health")[0] == 200
    except OSError:
        return False


def start_agent(state_dir: Path, socket_path: Path, *args: str,
                env: dict[str, str] | None = None, log: Path | None = None
                ) -> subprocess.Popen[bytes]:
    full_env = {**os.environ, "HOSTCHAOS_STATE_DIR": str(state_dir),
                "HOSTCHAOS_SOCKET": str(socket_path), **(env or {})}
    out = open(log, "ab") if log else subprocess.DEVNULL
    process = subprocess.Popen([sys.executable, "-m", "hostchaos", "agent", *args], cwd=REPO,
                               env=full_env, stdout=out, stderr=out)
    if log and not isinstance(out, int):
        out.close()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the agent exited with {process.returncode}"
                                 + (f": {log.read_text()}" if log else ""))
        if socket_path.exists() and answers(socket_path):
            return process
        time.sleep(0.05)
    process.kill()
    process.wait()
    raise AssertionError("the agent did not answer within 30 s")


def stop_agent(process: subprocess.Popen[bytes], timeout: float = 60) -> int:
    """SIGTERM, wait; kill -9 if it does not end. Its exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait()


@contextlib.contextmanager
def running_agent(state_dir: Path, socket_path: Path, *args: str,
                  env: dict[str, str] | None = None, log: Path | None = None
                  ) -> Iterator[subprocess.Popen[bytes]]:
    process = start_agent(state_dir, socket_path, *args, env=env, log=log)
    try:
        yield process
    finally:
        stop_agent(process)
