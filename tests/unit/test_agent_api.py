"""The agent's API over a real unix socket, served by uvicorn in a thread, on a fake kind.

The engine is the real one; its kind is the fake of tests/support/fakes.py
(a JSON file as "host"), given command-line options here so requests name
them as for any kind. Everything goes through the real socket, the real
uvicorn/h11 protocol and the peer check.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hostchaos import faults
from hostchaos.agent import notify
from hostchaos.agent.app import MAX_BODY_BYTES, OPENAPI_PATH, create_app
from hostchaos.agent.metrics import AgentMetrics
from hostchaos.agent.peers import Peer, PeerPolicy, _proc_address
from hostchaos.agent.server import AgentServer, server_config
from hostchaos.agent.service import Client, FaultService
from hostchaos.agent.sockets import prepare_unix_socket, tcp_address
from hostchaos.config import Config
from hostchaos.engine import Engine
from hostchaos.errors import ConflictError, SpecError
from hostchaos.faults.base import Fault
from hostchaos.faults.options import option
from tests.support.agent import call, raw_request
from tests.support.fakes import REFUSE_ROLLBACK, FakeFault, FakeHost, FakeSpec


@dataclasses.dataclass(frozen=True, kw_only=True)
class ApiFakeSpec(FakeSpec):
    host_file: str = option("--host-file", "The fake host's JSON file.", required=True)
    target: str = option("--target", "A name.", default="t1")
    steps: int = option("--steps", "Items to add.", default=3)
    fail_rollback: bool = option("--fail-rollback", "Refuse rollback.", default=False)


class ApiFakeFault(FakeFault):
    spec_type = ApiFakeSpec


def fault_class(kind: str) -> type[Fault]:
    if kind == "fake":
        return ApiFakeFault
    from hostchaos import faults

    return faults.fault_class(kind)


def factory(kind: str, spec: dict[str, Any]) -> Fault:
    return fault_class(kind)(fault_class(kind).spec_type.from_dict(spec))


class Served:
    def __init__(self, socket_path: Path, state_dir: Path, host: Path) -> None:
        self.socket_path, self.state_dir, self.host = socket_path, state_dir, host

    def call(self, method: str, path: str, payload: Any = None) -> tuple[int, Any]:
        return call(self.socket_path, method, path, payload)

    def inject(self, **options: Any) -> tuple[int, Any]:
        return self.call("POST", "/v1/faults", {"kind": "fake", "options": {
            "host-file": str(self.host), **options}, "for": "5m"})

    def audit(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in (self.state_dir / "audit.log").read_text()
                .splitlines()]


def serve(tmp_path: Path, policy: PeerPolicy | None = None) -> Iterator[Served]:
    state_dir = tmp_path / "state"
    config = Config(state_dir=state_dir, lock_timeout=5.0)
    engine = Engine(config, fault_factory=factory, fault_class=fault_class)
    metrics = AgentMetrics(engine.journal)
    metrics.journal_collector.start()
    service = FaultService(engine, metrics=metrics)
    socket_path = tmp_path / "run" / "agent.sock"
    sock = prepare_unix_socket(socket_path, None)
    server = AgentServer(server_config(create_app(service, metrics=metrics),
                                       policy or PeerPolicy(None)))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        yield Served(socket_path, state_dir, tmp_path / "host.json")
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Served]:
    yield from serve(tmp_path)


def test_inject_get_extend_delete_with_audit_and_metrics(api: Served) -> None:
    status, view = api.inject(target="web")
    assert status == 201, view
    fault_id = view["id"]
    assert view["kind"] == "fake" and view["state"] == "active"
    assert sorted(FakeHost(api.host).read()) == ["web-0", "web-1", "web-2"]
    status, listing = api.call("GET", "/v1/faults")
    assert status == 200 and [f["id"] for f in listing["faults"]] == [fault_id]

    status, one = api.call("GET", f"/v1/faults/{fault_id}")
    assert status == 200 and one["observed"] == {"items": ["web-0", "web-1", "web-2"]}
    assert one["drift"] is None and one["events"]

    status, longer = api.call("POST", f"/v1/faults/{fault_id}/extend", {"for": "10m"})
    assert status == 200 and longer["expires_at"] > view["expires_at"]

    metrics = raw_request(api.socket_path, "GET", "/metrics")[2].decode()
    assert 'hostchaos_faults_active{kind="fake"} 1.0' in metrics
    assert 'hostchaos_injections_total{kind="fake",result="ok"} 1.0' in metrics
    assert 'hostchaos_fault_records{state="active"} 1.0' in metrics

    status, ended = api.call("DELETE", f"/v1/faults/{fault_id}")
    assert status == 200 and ended["state"] == "rolled-back"
    assert FakeHost(api.host).read() == {}
    status, again = api.call("DELETE", f"/v1/faults/{fault_id}")  # idempotent
    assert status == 200 and again["state"] == "rolled-back"

    metrics = raw_request(api.socket_path, "GET", "/metrics")[2].decode()
    assert 'hostchaos_rollbacks_total{kind="fake",result="ok"} 2.0' in metrics
    assert 'hostchaos_rollback_duration_seconds_count{kind="fake"} 2.0' in metrics
    assert 'hostchaos_faults_active{kind="fake"}' not in metrics

    lines = api.audit()
    assert [(line["action"], line["result"]) for line in lines] == [
        ("inject", "ok"), ("extend", "ok"), ("rollback", "ok"), ("rollback", "ok")]
    assert {line["fault_id"] for line in lines} == {fault_id}
    assert {(line["client_uid"], line["client_pid"]) for line in lines} == {
        (os.getuid(), os.getpid())}  # SO_PEERCRED: this test process is the client


def test_drift_is_reported_when_the_kernel_lost_the_fault(api: Served) -> None:
    _, view = api.inject(target="db")
    FakeHost(api.host).write({})  # someone removed it behind hostchaos's back
    status, one = api.call("GET", f"/v1/faults/{view['id']}")
    assert status == 200 and one["observed"] == {"items": []}
    # the fake's observe has no "present": drift is only claimed where a kind says so
    assert one["drift"] is None
    api.call("DELETE", f"/v1/faults/{view['id']}")


@pytest.mark.parametrize(("options", "status", "kind", "fragment"), [
    ({"bogus": 1}, 400, "spec", "unknown fake option(s): bogus"),
    ({"steps": 0}, 400, "spec", "steps must be positive"),
    ({"steps": "many"}, 400, "spec", "--steps 'many' is not a valid integer"),
])
def test_bad_options_are_400_with_the_specs_message(api: Served, options: dict[str, Any],
                                                    status: int, kind: str,
                                                    fragment: str) -> None:
    got, body = api.inject(**options)
    assert got == status and body["error"]["type"] == kind
    assert fragment in body["error"]["message"] and "\n" not in body["error"]["message"]
    assert body["error"]["exit_code"] == SpecError.exit_code
    assert FakeHost(api.host).read() == {}


def test_errors_carry_the_status_and_exit_code_of_their_class(api: Served) -> None:
    status, first = api.inject(target="x")
    assert status == 201
    status, body = api.inject(target="x")
    assert (status, body["error"]["type"]) == (409, "conflict")
    assert body["error"]["exit_code"] == ConflictError.exit_code
    assert first["id"] in body["error"]["message"]
    status, body = api.call("GET", "/v1/faults/hc-fake-00000000")
    assert status == 404 and body["error"]["exit_code"] == 4
    assert body["error"]["fault_id"] == "hc-fake-00000000"
    status, body = api.call("POST", "/v1/faults", {"kind": "nosuch", "options": {}})
    assert status == 400 and "unknown fault kind 'nosuch'" in body["error"]["message"]
    metrics = raw_request(api.socket_path, "GET", "/metrics")[2].decode()
    assert 'hostchaos_injections_total{kind="unknown",result="spec"} 1.0' in metrics
    assert "nosuch" not in metrics
    status, body = api.call("POST", "/v1/faults", {"kind": "fake", "options": {
        "host-file": str(api.host)}, "for": "2h"})
    assert status == 400 and "above the cap" in body["error"]["message"]
    api.call("DELETE", f"/v1/faults/{first['id']}")


@pytest.mark.parametrize(("body", "headers", "status", "fragment"), [
    (b"{not json", {"Content-Type": "application/json"}, 400, "not JSON"),
    (b"[1, 2]", {"Content-Type": "application/json"}, 400, "must be a JSON object"),
    (b'{"kind": "fake", "shell": "rm -rf /"}', {"Content-Type": "application/json"}, 400,
     "unknown field(s) shell"),
    (b'{"kind": "fake"}', {"Content-Type": "text/plain"}, 415, "application/json"),
    (b'{"kind": "fake", "dry_run": "yes"}', {"Content-Type": "application/json"}, 400,
     "dry_run must be true or false"),
    (b"\xff\xfe", {"Content-Type": "application/json"}, 400, "not JSON"),
])
def test_malformed_requests_are_one_line_errors(api: Served, body: bytes,
                                                headers: dict[str, str], status: int,
                                                fragment: str) -> None:
    got, _, data = raw_request(api.socket_path, "POST", "/v1/faults", body, headers)
    error = json.loads(data)["error"]
    assert got == status and fragment in error["message"] and "\n" not in error["message"]


def test_an_oversized_body_is_413_declared_or_streamed(api: Served) -> None:
    big = b'{"kind": "' + b"x" * MAX_BODY_BYTES + b'"}'
    status, _, data = raw_request(api.socket_path, "POST", "/v1/faults", big,
                                  {"Content-Type": "application/json"})
    assert status == 413 and json.loads(data)["error"]["type"] == "too-large"
    # chunked, with no Content-Length: cut off once past the limit
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(30)
        sock.connect(str(api.socket_path))
        sock.sendall(b"POST /v1/faults HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                     b"\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"x" * 65536
        try:  # the agent may answer and close before everything is sent
            for _ in range(MAX_BODY_BYTES // len(chunk) + 2):
                sock.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
            sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass
        answer = b""
        try:
            while b"\r\n\r\n" not in answer:
                part = sock.recv(4096)
                if not part:
                    break
                answer += part
        except OSError:
            pass
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]


def test_unknown_routes_and_methods(api: Served) -> None:
    status, body = api.call("GET", "/v1/nothing")
    assert status == 404 and "no such endpoint" in body["error"]["message"]
    status, body = api.call("PUT", "/v1/faults")
    assert status == 405 and body["error"]["type"] == "method-not-allowed"
    for path, allowed in (("/v1/faults", "GET, HEAD, POST"),  # RFC 9110: Allow names them
                          ("/v1/faults/hc-x-1/extend", "POST"),
                          ("/v1/faults/hc-x-1", "DELETE, GET, HEAD")):
        status, headers, _ = raw_request(api.socket_path, "PATCH", path)
        assert status == 405 and headers["allow"] == allowed, (path, headers)


def test_health_and_the_served_openapi_document_is_the_committed_one(api: Served) -> None:
    status, health = api.call("GET", "/v1/health")
    assert status == 200 and health["status"] == "ok"
    assert health["state_dir"] == str(api.state_dir) and health["open_faults"] == 0
    status, served = api.call("GET", "/v1/openapi.json")
    assert status == 200 and served == json.loads(OPENAPI_PATH.read_text())


def test_every_route_is_in_the_openapi_document_and_nothing_else() -> None:
    from starlette.routing import Route

    engine = Engine(Config(state_dir=Path("/nonexistent")))
    app = create_app(FaultService(engine))
    served = set()
    for route in app.routes:
        assert isinstance(route, Route)
        for method in route.methods or ():
            if method != "HEAD":
                served.add((route.path.replace(":path}", "}"), method.lower()))
    document = json.loads(OPENAPI_PATH.read_text())
    described = {(path, method) for path, item in document["paths"].items()
                 for method in item}
    assert served == described
    for path, item in document["paths"].items():
        for method, operation in item.items():
            assert operation["responses"], (path, method)
            assert "operationId" in operation
    kinds = document["components"]["schemas"]["CreateFault"]["properties"]["kind"]["enum"]
    assert kinds == list(faults.KINDS), "the document's kinds are the registry's"


def test_any_fault_id_gets_the_engines_answer(api: Served) -> None:
    for fault_id in ("a%2Fb", "..", "x" * 300, "hc-fake-0000%3F"):
        for method in ("GET", "DELETE"):
            status, body = api.call(method, f"/v1/faults/{fault_id}")
            assert status == 404 and "not found" in body["error"]["message"], (fault_id, body)
        status, body = api.call("POST", f"/v1/faults/{fault_id}/extend", {})
        assert status == 404 and "not found" in body["error"]["message"], (fault_id, body)


def test_rollback_all_reports_what_failed_with_500(api: Served) -> None:
    _, good = api.inject(target="a")
    other = api.host.with_name("other-host.json")
    _, bad = api.inject(target="b", **{"fail-rollback": True, "host-file": str(other)})
    status, body = api.call("POST", "/v1/rollback-all")
    assert status == 500 and body["error"]["exit_code"] == 7
    assert [v["id"] for v in body["rolled_back"]] == [good["id"]]
    assert len(body["errors"]) == 1 and bad["id"] in body["errors"][0]
    host = FakeHost(other)
    data = host.read()
    data.pop(REFUSE_ROLLBACK)
    host.write(data)
    status, body = api.call("POST", "/v1/rollback-all")
    assert status == 200 and [v["id"] for v in body["rolled_back"]] == [bad["id"]]


def test_dry_run_changes_nothing(api: Served) -> None:
    status, plan = api.call("POST", "/v1/faults", {"kind": "fake", "dry_run": True,
                                                   "options": {"host-file": str(api.host)}})
    assert status == 200 and plan["dry_run"] is True and plan["plan"].startswith("fake fault")
    assert not api.host.exists()


class RefuseAll(PeerPolicy):
    def allows(self, peer: Peer | None) -> bool:
        return False


def test_a_refused_peer_gets_403_on_every_route(tmp_path: Path) -> None:
    for served in serve(tmp_path, RefuseAll(None)):
        for method, path in (("GET", "/v1/health"), ("GET", "/metrics"),
                             ("POST", "/v1/rollback-all"), ("GET", "/v1/faults")):
            status, body = served.call(method, path)
            assert status == 403 and body["error"]["type"] == "forbidden", (method, path)
            assert f"uid {os.getuid()}" in body["error"]["message"]
        assert not (served.state_dir / "audit.log").exists()


def test_peer_policy() -> None:
    policy = PeerPolicy(gid=4242)

    def peer(uid: int, gid: int = 100, groups: tuple[int, ...] = ()) -> Peer:
        return Peer(Client(uid, 1, gid), groups)

    assert policy.allows(peer(0))
    assert policy.allows(peer(os.geteuid()))
    assert policy.allows(peer(1000, gid=4242))
    assert policy.allows(peer(1000, groups=(27, 4242)))
    assert not policy.allows(peer(1000 if os.geteuid() != 1000 else 1001, groups=(27,)))
    assert not policy.allows(None)
    assert not PeerPolicy(None).allows(peer(65534, gid=65534, groups=(65534,)))


def test_tcp_addresses_as_proc_net_tcp_spells_them() -> None:
    assert _proc_address(socket.AF_INET, "127.0.0.1", 8470) == "0100007F:2116"
    assert _proc_address(socket.AF_INET6, "::1", 80) == (
        "00000000000000000000000001000000:0050")
    assert tcp_address("127.0.0.1:8470") == ("127.0.0.1", 8470)
    assert tcp_address("[::1]:8470") == ("::1", 8470)
    for bad in ("0.0.0.0:8470", "10.1.2.3:80", "localhost:80", "[::]:80", "127.0.0.1",
                "127.0.0.1:0"):
        with pytest.raises(SpecError, match="loopback"):
            tcp_address(bad)


@pytest.mark.parametrize("abstract", [False, True])
def test_sd_notify_reaches_the_notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             abstract: bool) -> None:
    name = f"@hostchaos-test-{os.getpid()}" if abstract else str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind("\0" + name[1:] if abstract else name)
        receiver.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", name)
        assert notify.notify("READY=1")
        assert receiver.recv(4096) == b"READY=1"
    monkeypatch.delenv("NOTIFY_SOCKET")
    assert notify.notify("READY=1") is False


def test_watchdog_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "10000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert notify.watchdog_interval() == 5.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert notify.watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert notify.watchdog_interval() == 5.0
    monkeypatch.delenv("WATCHDOG_USEC")
    assert notify.watchdog_interval() is None


def test_the_socket_is_0600_and_a_live_one_is_not_replaced(tmp_path: Path) -> None:
    path = tmp_path / "run" / "agent.sock"
    sock = prepare_unix_socket(path, None)
    try:
        assert oct(path.stat().st_mode & 0o777) == "0o600"
        assert oct((tmp_path / "run").stat().st_mode & 0o777) == "0o755"
        with pytest.raises(ConflictError, match="another agent already answers"):
            prepare_unix_socket(path, None)
    finally:
        sock.close()
    again = prepare_unix_socket(path, None)  # nobody listens now: a stale socket, replaced
    again.close()
    path.unlink()
    path.write_text("")
    with pytest.raises(ConflictError, match="is not a socket"):
        prepare_unix_socket(path, None)


def test_two_clients_at_once_on_one_target_get_one_fault(api: Served) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda _: api.inject(target="same"), range(6)))
    statuses = sorted(status for status, _ in answers)
    assert statuses == [201, 409, 409, 409, 409, 409], answers
    with ThreadPoolExecutor(6) as pool:
        made = list(pool.map(lambda n: api.inject(target=f"t{n}"), range(6)))
    assert all(status == 201 for status, _ in made)
    ids = [view["id"] for _, view in made]
    with ThreadPoolExecutor(6) as pool:
        ended = list(pool.map(lambda i: api.call("DELETE", f"/v1/faults/{i}"), ids))
    assert all(status == 200 and view["state"] == "rolled-back" for status, view in ended)
    api.call("POST", "/v1/rollback-all")
    assert FakeHost(api.host).read() == {}
    assert api.call("GET", "/v1/faults")[1]["faults"] == []


def test_an_unwritable_audit_log_never_stops_a_rollback(api: Served,
                                                        capfd: pytest.CaptureFixture[str]
                                                        ) -> None:
    _, view = api.inject(target="aud")
    audit = api.state_dir / "audit.log"
    audit.unlink()
    audit.mkdir()  # writing a line now fails (EISDIR), even for root
    status, ended = api.call("DELETE", f"/v1/faults/{view['id']}")
    assert status == 200 and ended["state"] == "rolled-back"
    assert FakeHost(api.host).read() == {}
    assert "cannot append to audit log" in capfd.readouterr().err


def test_a_damaged_record_is_listed_as_unreadable(api: Served) -> None:
    _, view = api.inject(target="dmg")
    faults = api.state_dir / "faults"
    (faults / "hc-fake-deadbeef.json").write_text("{ torn")
    status, listing = api.call("GET", "/v1/faults")
    assert status == 200 and [f["id"] for f in listing["faults"]] == [view["id"]]
    assert [u["id"] for u in listing["unreadable"]] == ["hc-fake-deadbeef"]
    metrics = raw_request(api.socket_path, "GET", "/metrics")[2].decode()
    assert 'hostchaos_fault_records{state="unreadable"} 1.0' in metrics
    status, body = api.call("POST", "/v1/rollback-all")
    assert status == 500 and [v["id"] for v in body["rolled_back"]] == [view["id"]]
    assert "unreadable" in body["errors"][0]


def test_log_lines_reach_journald_as_fields(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capfd: pytest.CaptureFixture[str]) -> None:
    from hostchaos.agent import logs

    journal = tmp_path / "journal.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind(str(journal))
        receiver.settimeout(5)
        monkeypatch.setattr(logs, "JOURNAL_SOCKET", str(journal))
        monkeypatch.setenv("JOURNAL_STREAM", "8:1234")
        logs.log(logs.INFO, "injected", fault_id="hc-rate-1a2b3c4d", client_uid=0,
                 detail="two\nlines")
        entry = dict(line.split("=", 1) for line in receiver.recv(65536).decode().splitlines())
    assert entry["MESSAGE"] == ('injected fault_id=hc-rate-1a2b3c4d client_uid=0 '
                                'detail="two lines"')
    assert entry["PRIORITY"] == "6" and entry["SYSLOG_IDENTIFIER"] == "hostchaos"
    assert entry["HOSTCHAOS_FAULT_ID"] == "hc-rate-1a2b3c4d"
    assert entry["HOSTCHAOS_DETAIL"] == "two lines"
    monkeypatch.setattr(logs, "JOURNAL_SOCKET", str(tmp_path / "absent.sock"))
    logs.log(logs.WARNING, "request refused", status=403)
    assert capfd.readouterr().err == "<4>request refused status=403\n"


def test_the_ssh_peer_and_cwd_are_the_clients_while_working_for_it(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import subprocess

    from hostchaos.system import caller, ssh

    monkeypatch.setenv("SSH_CONNECTION", "192.0.2.9 5000 192.0.2.1 22")
    assert ssh.ssh_connection_peer() == ("192.0.2.9", 22)
    assert caller.abspath("a/b") == os.path.abspath("a/b")
    child = subprocess.Popen(["sleep", "30"], cwd=tmp_path,
                             env={"SSH_CONNECTION": "198.51.100.4 6000 192.0.2.1 2222"})
    try:
        wait_until = time.monotonic() + 5
        while caller.environment_of(child.pid, "SSH_CONNECTION") is None:
            assert time.monotonic() < wait_until  # until exec has happened
            time.sleep(0.01)
        with caller.on_behalf_of(child.pid):
            assert ssh.ssh_connection_peer() == ("198.51.100.4", 2222)
            assert caller.getenv("PATH") is None
            assert caller.abspath("fill/../here", "--path") == str(tmp_path / "here")
            assert caller.abspath("/abs//x") == "/abs/x"
    finally:
        child.kill()
        child.wait()
    with caller.on_behalf_of(None):  # a client the kernel did not name (TCP)
        assert ssh.ssh_connection_peer() is None  # never the agent's own session
        with pytest.raises(SpecError, match="give an absolute path"):
            caller.abspath("rel", "--path")
    assert ssh.ssh_connection_peer() == ("192.0.2.9", 22)
