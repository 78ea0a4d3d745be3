"""A real `hostchaos agent` process talking to a fake systemd: READY=1 only after the sweep,
WATCHDOG=1 while serving, STOPPING=1 on SIGTERM, exit 0; the metrics textfile; bad settings."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.support.agent import REPO, call, start_agent, stop_agent
from tests.support.cli import hostchaos, one_line_error


def receive_all(receiver: socket.socket, until: float) -> list[str]:
    messages = []
    while time.monotonic() < until:
        try:
            messages.append(receiver.recv(4096).decode())
        except TimeoutError:
            continue
    return messages


def test_ready_watchdog_stopping_and_exit_0(tmp_path: Path) -> None:
    notify_path = tmp_path / "notify"
    state_dir, sock = tmp_path / "state", tmp_path / "run" / "agent.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind(str(notify_path))
        receiver.settimeout(0.2)
        agent = start_agent(state_dir, sock, env={"NOTIFY_SOCKET": str(notify_path),
                                                  "WATCHDOG_USEC": "400000"},
                            log=tmp_path / "agent.log")
        try:
            first = receiver.recv(4096).decode()  # the agent answered: READY was sent before
            assert first.startswith("READY=1")
            pets = receive_all(receiver, time.monotonic() + 1.5)
            assert 4 <= pets.count("WATCHDOG=1") <= 10, pets  # every 0.2 s
            agent.send_signal(signal.SIGTERM)
            assert agent.wait(timeout=30) == 0
            rest = receive_all(receiver, time.monotonic() + 0.5)
            assert "STOPPING=1" in rest
        finally:
            stop_agent(agent)
    log = (tmp_path / "agent.log").read_text()
    assert log.index("swept the journal") < log.index("ready")
    assert not sock.exists()


def test_the_metrics_textfile_is_kept(tmp_path: Path) -> None:
    textfile = tmp_path / "textfile" / "hostchaos.prom"
    textfile.parent.mkdir()
    state_dir, sock = tmp_path / "state", tmp_path / "run" / "agent.sock"
    agent = start_agent(state_dir, sock, "--metrics-textfile", str(textfile))
    try:
        deadline = time.monotonic() + 10
        while not textfile.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        text = textfile.read_text()
        assert 'hostchaos_fault_records{state="active"} 0.0' in text
        assert "hostchaos_deadline_lateness_seconds_count 0.0" in text
        assert [p.name for p in textfile.parent.iterdir()] == ["hostchaos.prom"]
    finally:
        assert stop_agent(agent) == 0


def test_a_second_agent_on_the_same_socket_is_refused(tmp_path: Path) -> None:
    state_dir, sock = tmp_path / "state", tmp_path / "run" / "agent.sock"
    agent = start_agent(state_dir, sock)
    try:
        second = hostchaos("agent", state_dir=state_dir, env={"HOSTCHAOS_SOCKET": str(sock)},
                           timeout=30)
        assert second.returncode == 5
        assert "another agent already answers" in one_line_error(second)
        assert call(sock, "GET", "/v1/health")[0] == 200  # the first one is untouched
    finally:
        stop_agent(agent)


def test_bad_settings_refuse_to_start_with_one_line(tmp_path: Path) -> None:
    state_dir, sock = tmp_path / "state", tmp_path / "run" / "agent.sock"
    env = {"HOSTCHAOS_SOCKET": str(sock)}
    for args, code, fragment in (
        (["--tcp", "0.0.0.0:8470"], 2, "must be a loopback address"),
        (["--group", "no-such-group-hc"], 3, "group 'no-such-group-hc' does not exist"),
    ):
        result = hostchaos("agent", *args, state_dir=state_dir, env=env, timeout=30)
        assert result.returncode == code, result.stderr
        assert fragment in one_line_error(result)
    (tmp_path / "open").mkdir(mode=0o777)
    (tmp_path / "open").chmod(0o777)
    result = hostchaos("agent", "--socket", str(tmp_path / "open" / "a.sock"),
                       state_dir=state_dir, timeout=30)
    assert result.returncode == 3
    assert "writable by nobody else" in result.stderr


def test_loopback_tcp_when_configured(tmp_path: Path) -> None:
    state_dir, sock = tmp_path / "state", tmp_path / "run" / "agent.sock"
    with socket.socket() as probe:  # a free port
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    agent = start_agent(state_dir, sock, "--tcp", f"127.0.0.1:{port}")
    try:
        import http.client

        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/v1/health")
        response = conn.getresponse()
        body = json.loads(response.read())
        conn.close()
        # this process's uid owns the client end: the same policy as on the socket
        assert response.status == 200 and body["status"] == "ok"
    finally:
        stop_agent(agent)


def test_the_agent_command_has_help() -> None:
    out = subprocess.run([sys.executable, "-m", "hostchaos", "agent", "--help"], cwd=REPO,
                         capture_output=True, text=True, check=True,
                         env={**os.environ}).stdout
    assert "--socket" in out and "--group" in out and "SIGTERM" in out


def test_one_agent_per_state_directory(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    agent = start_agent(state_dir, tmp_path / "run" / "one.sock")
    try:
        second = hostchaos("agent", "--socket", str(tmp_path / "run" / "two.sock"),
                           state_dir=state_dir, timeout=30)
        assert second.returncode == 5
        line = one_line_error(second)
        assert f"another agent (pid {agent.pid}) already serves state directory" in line
        assert not (tmp_path / "run" / "two.sock").exists()
    finally:
        assert stop_agent(agent) == 0
    again = start_agent(state_dir, tmp_path / "run" / "two.sock")  # released on exit
    assert stop_agent(again) == 0


def test_an_agent_that_stops_answering_mid_command_is_one_line(tmp_path: Path) -> None:
    """Health answered, then the connection drops: not retried in-process (it may have
    been done), one line, exit 1."""
    import socketserver
    import threading
    from http.server import BaseHTTPRequestHandler

    state_dir, sock = tmp_path / "state", tmp_path / "flaky.sock"
    state_dir.mkdir()

    class Flaky(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def address_string(self) -> str:
            return "unix"

        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            if self.path != "/v1/health":
                self.close_connection = True
                return  # nothing written: the client sees the connection close
            body = json.dumps({"status": "ok", "state_dir": str(state_dir)}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = socketserver.UnixStreamServer(str(sock), Flaky)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        result = hostchaos("list", state_dir=state_dir, env={"HOSTCHAOS_SOCKET": str(sock)},
                           timeout=60)
    finally:
        server.shutdown()
        server.server_close()
    assert result.returncode == 1, result.stderr
    assert "stopped answering" in one_line_error(result)


ACTIVATE = r"""
import os, socket, sys
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.bind(sys.argv[1])
sock.listen(16)
if sock.fileno() != 3:
    os.dup2(sock.fileno(), 3)  # what systemd does for hostchaos.socket
os.set_inheritable(3, True)
os.environ.update(LISTEN_FDS="1", LISTEN_PID=str(os.getpid()))
os.execv(sys.executable, [sys.executable, "-m", "hostchaos", "agent"])
"""


def test_socket_activation_serves_the_socket_systemd_passed(tmp_path: Path) -> None:
    from tests.support.agent import answers

    state_dir = tmp_path / "state"
    activated, configured = tmp_path / "activated.sock", tmp_path / "run" / "never.sock"
    env = {**os.environ, "HOSTCHAOS_STATE_DIR": str(state_dir),
           "HOSTCHAOS_SOCKET": str(configured)}
    agent = subprocess.Popen([sys.executable, "-c", ACTIVATE, str(activated)], cwd=REPO,
                             env=env, pass_fds=(), stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not (activated.exists() and answers(activated)):
            assert agent.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        assert not configured.exists()
        status, health = call(activated, "GET", "/v1/health")
        assert status == 200 and health["pid"] == agent.pid
    finally:
        assert stop_agent(agent) == 0  # type: ignore[arg-type]
    assert activated.exists()  # systemd's socket file stays
    assert agent.stderr is not None and "serving the sockets systemd passed" in agent.stderr.read()
