"""Host tier: a real `hostchaos agent` process, real faults on a sandbox veth, through its API.

Each test starts its own agent on a temporary socket serving the test's state
directory and stops it (SIGTERM, then kill) on the way out.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hostchaos.sandbox import NetnsPair
from tests.support.agent import call, raw_request, running_agent, start_agent, stop_agent
from tests.support.cli import hostchaos, open_records, records
from tests.support.waiting import wait_for


@pytest.fixture
def socket_path() -> Iterator[Path]:
    """A socket path whose directories a uid-65534 client may traverse (tmp_path may not)."""
    base = Path(tempfile.mkdtemp(prefix="hc-agent-", dir="/tmp"))
    base.chmod(0o755)
    yield base / "run" / "hostchaos.sock"
    shutil.rmtree(base, ignore_errors=True)


def rate_body(pair: NetnsPair, duration: str = "5m",
              dst: str | None = None) -> dict[str, object]:
    return {"kind": "rate", "for": duration,
            "options": {"netns": pair.a, "iface": pair.iface_a, "rate": "2mbit",
                        **({"dst": [dst]} if dst else {})}}


def test_inject_get_delete_a_real_rate_fault(pair: NetnsPair, state_dir: Path,
                                             socket_path: Path, tmp_path: Path) -> None:
    before = pair.tc_config()
    with running_agent(state_dir, socket_path, log=tmp_path / "agent.log"):
        status, view = call(socket_path, "POST", "/v1/faults", rate_body(pair))
        assert status == 201, view
        assert "tbf" in pair.tc_config() and "rate 2Mbit" in pair.tc_config()
        status, one = call(socket_path, "GET", f"/v1/faults/{view['id']}")
        assert status == 200 and one["state"] == "active"
        assert one["observed"]["present"] is True and one["drift"] is None
        assert one["observed"]["class"] is not None
        status, ended = call(socket_path, "DELETE", f"/v1/faults/{view['id']}")
        assert status == 200 and ended["state"] == "rolled-back"
        assert pair.tc_config() == before
        audit = [json.loads(line) for line in (state_dir / "audit.log").read_text()
                 .splitlines()]
        assert [(a["action"], a["result"], a["client_uid"]) for a in audit] == [
            ("inject", "ok", 0), ("rollback", "ok", 0)]
        assert all(a["client_pid"] == os.getpid() for a in audit)


def test_the_cli_goes_through_the_agent_with_the_same_output(pair: NetnsPair, state_dir: Path,
                                                              socket_path: Path,
                                                              tmp_path: Path) -> None:
    before = pair.tc_config()
    env = {"HOSTCHAOS_SOCKET": str(socket_path)}
    args = ("inject", "rate", "--netns", pair.a, "--iface", pair.iface_a, "--rate", "2mbit",
            "--json")
    with running_agent(state_dir, socket_path, log=tmp_path / "agent.log"):
        result = hostchaos(*args, state_dir=state_dir, env=env)
        assert result.returncode == 0, result.stderr
        through_agent = json.loads(result.stdout)
        assert f"injected fault_id={through_agent['id']}" in (tmp_path / "agent.log").read_text()
        status = hostchaos("status", through_agent["id"], "--json", state_dir=state_dir,
                           env=env)
        assert status.returncode == 0 and json.loads(status.stdout)["observed"]["present"]
        again = hostchaos(*args, state_dir=state_dir, env=env)  # overlapping: refused
        assert again.returncode == 5 and again.stderr.count("\n") == 1
        assert hostchaos("rollback", through_agent["id"], state_dir=state_dir,
                         env=env).returncode == 0
    assert pair.tc_config() == before
    in_process = hostchaos(*args, state_dir=state_dir, env=env)  # the agent is gone now
    assert in_process.returncode == 0, in_process.stderr
    local = json.loads(in_process.stdout)
    assert hostchaos("rollback", local["id"], state_dir=state_dir).returncode == 0
    assert sorted(local) == sorted(through_agent)
    for key in ("kind", "state", "target", "summary", "spec", "lease_seconds", "remarks"):
        assert local[key] == through_agent[key], key
    assert pair.tc_config() == before


def _curl_as_nobody(socket_path: Path, path: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups",
                           "curl", "-s", "-w", "\n%{http_code}", "--unix-socket",
                           str(socket_path), f"http://agent{path}"], capture_output=True,
                          text=True, timeout=30, check=False)


def test_a_non_root_client_is_refused(state_dir: Path, socket_path: Path) -> None:
    with running_agent(state_dir, socket_path):
        assert oct(socket_path.stat().st_mode & 0o777) == "0o600"
        assert oct(socket_path.parent.stat().st_mode & 0o777) == "0o755"
        denied = _curl_as_nobody(socket_path, "/v1/health")
        assert denied.returncode == 7  # curl: could not connect (the socket is 0600)
        socket_path.chmod(0o666)  # an operator's mistake: the peer check still refuses
        refused = _curl_as_nobody(socket_path, "/v1/faults")
        body, _, code = refused.stdout.rpartition("\n")
        assert code == "403", refused
        assert json.loads(body)["error"]["type"] == "forbidden"
        assert "uid 65534 may not use" in json.loads(body)["error"]["message"]
        assert _curl_as_nobody(socket_path, "/metrics").stdout.endswith("403")


def test_malformed_and_oversized_bodies(state_dir: Path, socket_path: Path) -> None:
    with running_agent(state_dir, socket_path):
        status, _, data = raw_request(socket_path, "POST", "/v1/faults", b"{oops",
                                      {"Content-Type": "application/json"})
        assert status == 400 and "\n" not in json.loads(data)["error"]["message"]
        status, body = call(socket_path, "POST", "/v1/faults",
                            {"kind": "rate", "options": {"iface": "x", "rate": "2mbit",
                                                         "exec": "touch /tmp/pwned"}})
        assert status == 400 and "unknown rate option(s): exec" in body["error"]["message"]
        status, _, data = raw_request(socket_path, "POST", "/v1/faults",
                                      b"{" + b" " * (2 << 20) + b"}",
                                      {"Content-Type": "application/json"})
        assert status == 413
        assert open_records(state_dir) == []


def test_sigterm_rolls_back_every_open_fault_and_exits_0(pair: NetnsPair, state_dir: Path,
                                                        socket_path: Path,
                                                        tmp_path: Path) -> None:
    before = pair.tc_config()
    agent = start_agent(state_dir, socket_path, log=tmp_path / "agent.log")
    try:
        status, view = call(socket_path, "POST", "/v1/faults", rate_body(pair))
        assert status == 201, view
        assert "tbf" in pair.tc_config()
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=60) == 0
    finally:
        stop_agent(agent)
    assert pair.tc_config() == before
    record = next(r for r in records(state_dir) if r["id"] == view["id"])
    assert record["state"] == "rolled-back"
    assert record["end_reason"] == "the agent stopped (SIGTERM)"
    assert not socket_path.exists()
    log = (tmp_path / "agent.log").read_text()
    assert "stopping: rolling back every open fault signal=SIGTERM" in log


def test_kill_9_of_the_agent_leaves_the_deadline_enforced(pair: NetnsPair, state_dir: Path,
                                                         socket_path: Path) -> None:
    before = pair.tc_config()
    agent = start_agent(state_dir, socket_path)
    try:
        status, view = call(socket_path, "POST", "/v1/faults", rate_body(pair, "3s"))
        assert status == 201, view
        agent.kill()
        agent.wait()
        assert "tbf" in pair.tc_config()
        wait_for(lambda: pair.tc_config() == before, timeout=20)
    finally:
        stop_agent(agent)
    record = next(r for r in records(state_dir) if r["id"] == view["id"])
    assert record["state"] == "rolled-back" and record["end_reason"] == "deadline reached"


def processes_of(state_dir: Path) -> dict[int, list[str]]:
    """hostchaos processes (agent, sentinel, warden) serving ``state_dir``, by pid."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if str(state_dir) in argv and any("hostchaos" in part for part in argv):
            found[int(entry.name)] = argv
    return found


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def test_the_warden_is_a_thread_of_the_agent_and_its_sentinel_outlives_a_kill_9(
        pair: NetnsPair, state_dir: Path, socket_path: Path, tmp_path: Path) -> None:
    """One interpreter with pyroute2: the agent holds the faults itself; beside it only the
    sentinel (a bare interpreter). kill -9 of the agent: the sentinel becomes a warden
    process at once, which ends the fault at its original deadline."""
    before = pair.tc_config()
    agent = start_agent(state_dir, socket_path, log=tmp_path / "agent.log")
    try:
        status, view = call(socket_path, "POST", "/v1/faults", rate_body(pair, "4s"))
        assert status == 201, view
        assert view["holder_pid"] == agent.pid
        (sentinel,) = [pid for pid, argv in processes_of(state_dir).items()
                       if pid != agent.pid]
        assert any(part.endswith("sentinel.py") for part in processes_of(state_dir)[sentinel])
        assert rss_kib(sentinel) < 16 * 1024  # no pyroute2, no engine: a bare interpreter
        agent.kill()
        agent.wait()
        wait_for(lambda: any("sentinel.py" not in " ".join(argv)
                             for argv in processes_of(state_dir).values()), timeout=10)
        assert "tbf" in pair.tc_config()  # still on: its deadline has not come
        wait_for(lambda: open_records(state_dir) == [], timeout=20)
    finally:
        stop_agent(agent)
    assert pair.tc_config() == before
    (record,) = records(state_dir)
    assert record["end_reason"] == "deadline reached"
    assert abs(record["ended_at"] - record["expires_at"]) <= 1.0, record
    assert record["holder"]["pid"] != agent.pid  # the sentinel's warden adopted it
    wait_for(lambda: processes_of(state_dir) == {}, timeout=10)  # and exited when idle


def test_ctrl_z_does_not_stop_the_agent_and_its_warden_thread(
        pair: NetnsPair, state_dir: Path, socket_path: Path, tmp_path: Path) -> None:
    before = pair.tc_config()
    with running_agent(state_dir, socket_path, log=tmp_path / "agent.log") as agent:
        status, view = call(socket_path, "POST", "/v1/faults", rate_body(pair, "2s"))
        assert status == 201, view
        for sig in (signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU):
            os.kill(agent.pid, sig)
        time.sleep(0.3)
        state = Path(f"/proc/{agent.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        assert state != "T"
        wait_for(lambda: open_records(state_dir) == [], timeout=10)
        (record,) = records(state_dir)
        assert abs(record["ended_at"] - record["expires_at"]) <= 1.0, record
        assert record["holder"]["pid"] == agent.pid
    assert pair.tc_config() == before


def test_a_warden_process_hands_its_faults_to_a_starting_agent(
        pair: NetnsPair, state_dir: Path, socket_path: Path, tmp_path: Path) -> None:
    before = pair.tc_config()
    injected = json.loads(hostchaos("inject", "rate", "--netns", pair.a, "--iface",
                                    pair.iface_a, "--rate", "2mbit", "--for", "5m", "--json",
                                    state_dir=state_dir).stdout)
    warden = injected["holder_pid"]
    first = next(r for r in records(state_dir) if r["id"] == injected["id"])
    with running_agent(state_dir, socket_path, log=tmp_path / "agent.log") as agent:
        wait_for(lambda: not Path(f"/proc/{warden}").exists(), timeout=10)
        wait_for(lambda: records(state_dir)[0]["holder"]["pid"] == agent.pid, timeout=10)
        kept = records(state_dir)[0]
        assert kept["state"] == "active"
        assert kept["expires_boottime"] == first["expires_boottime"]
        assert "handing the open faults to the agent" in (state_dir / "warden.log").read_text()
    assert pair.tc_config() == before  # SIGTERM rolled it back
    wait_for(lambda: processes_of(state_dir) == {}, timeout=10)  # the sentinel was dismissed
    log = (state_dir / "warden.log").read_text()
    assert log.count("warden of") == 1  # no warden process was started after the agent


def test_start_up_sweeps_and_keeps_live_faults_with_their_deadlines(
        pair: NetnsPair, state_dir: Path, socket_path: Path) -> None:
    """Faults whose warden was killed: the agent's start rolls back the overdue one at once
    and has a new warden adopt the other, with its original deadline."""
    before = pair.tc_config()
    orphan = json.loads(hostchaos("inject", "rate", "--netns", pair.a, "--iface",
                                  pair.iface_a, "--rate", "2mbit", "--dst", "10.7.7.7/32",
                                  "--for", "5m", "--json", state_dir=state_dir).stdout)
    overdue = json.loads(hostchaos("inject", "rate", "--netns", pair.a, "--iface",
                                   pair.iface_a, "--rate", "3mbit", "--dst", "10.9.9.9/32",
                                   "--for", "2s", "--json", state_dir=state_dir).stdout)
    warden = orphan["holder_pid"]
    assert overdue["holder_pid"] == warden
    first = next(r for r in records(state_dir) if r["id"] == orphan["id"])
    os.kill(warden, signal.SIGKILL)  # the warden is gone, and nothing else runs meanwhile
    wait_for(lambda: not Path(f"/proc/{warden}").exists(), timeout=10)
    time.sleep(2.5)  # the 2 s fault is overdue now
    with running_agent(state_dir, socket_path):
        ended = next(r for r in records(state_dir) if r["id"] == overdue["id"])
        assert ended["state"] == "rolled-back" and ended["end_reason"] == "deadline reached"

        def adopted() -> dict[str, Any]:
            return next(r for r in records(state_dir) if r["id"] == orphan["id"])
        wait_for(lambda: adopted()["holder"]["pid"] not in (None, warden), timeout=10)
        assert adopted()["state"] == "active"
        assert adopted()["expires_boottime"] == first["expires_boottime"]  # its own deadline
        status, live = call(socket_path, "POST", "/v1/faults",
                            rate_body(pair, dst="10.8.8.8/32"))
        assert status == 201, live
    assert pair.tc_config() == before  # SIGTERM rolled both back
    # a fault left by a killed agent: its sentinel's warden guards it
    agent = start_agent(state_dir, socket_path)
    try:
        status, kept = call(socket_path, "POST", "/v1/faults", rate_body(pair))
        assert status == 201
        agent.kill()
        agent.wait()
        time.sleep(0.2)
        with running_agent(state_dir, socket_path):  # it was guarded: it stays
            status, again = call(socket_path, "GET", f"/v1/faults/{kept['id']}")
            assert status == 200 and again["state"] == "active"
            assert again["expires_at"] == kept["expires_at"]
    finally:
        stop_agent(agent)
    assert pair.tc_config() == before and open_records(state_dir) == []
    assert live["id"] != kept["id"]


def test_drift_when_the_interface_vanished_and_rollback_still_closes_it(
        pair: NetnsPair, state_dir: Path, socket_path: Path) -> None:
    with running_agent(state_dir, socket_path):
        status, view = call(socket_path, "POST", "/v1/faults", rate_body(pair))
        assert status == 201, view
        subprocess.run(["ip", "-n", pair.a, "link", "del", pair.iface_a], check=True)
        status, one = call(socket_path, "GET", f"/v1/faults/{view['id']}")
        assert status == 200 and one["state"] == "active"
        assert one["observed"]["present"] is False and one["drift"], one
        status, ended = call(socket_path, "DELETE", f"/v1/faults/{view['id']}")
        assert status == 200 and ended["state"] == "rolled-back"  # already gone is success
    assert open_records(state_dir) == []


def test_deadline_lateness_is_measured(pair: NetnsPair, state_dir: Path,
                                       socket_path: Path) -> None:
    before = pair.tc_config()
    with running_agent(state_dir, socket_path):
        status, view = call(socket_path, "POST", "/v1/faults", rate_body(pair, "1s"))
        assert status == 201, view
        wait_for(lambda: open_records(state_dir) == [], timeout=20)
        metrics = raw_request(socket_path, "GET", "/metrics")[2].decode()
        values = {line.split()[0]: float(line.split()[1]) for line in metrics.splitlines()
                  if line.startswith("hostchaos_deadline_lateness_seconds_")}
        assert values["hostchaos_deadline_lateness_seconds_count"] == 1.0
        assert 0 <= values["hostchaos_deadline_lateness_seconds_sum"] < 5.0
    assert pair.tc_config() == before


def test_inject_wait_renews_the_lease_through_the_agent(pair: NetnsPair, state_dir: Path,
                                                        socket_path: Path,
                                                        tmp_path: Path) -> None:
    before = pair.tc_config()
    env = {"HOSTCHAOS_SOCKET": str(socket_path)}
    with running_agent(state_dir, socket_path, log=tmp_path / "agent.log"):
        started = time.monotonic()
        result = hostchaos("inject", "rate", "--netns", pair.a, "--iface", pair.iface_a,
                           "--rate", "2mbit", "--for", "3s", "--lease", "1s", "--wait",
                           state_dir=state_dir, env=env)
        took = time.monotonic() - started
        assert result.returncode == 0, result.stderr
        assert 2.5 <= took < 15, took  # the 1 s lease was renewed until the 3 s deadline
        fault_id = result.stdout.strip()
        record = next(r for r in records(state_dir) if r["id"] == fault_id)
        # at the deadline the command and the warden race to roll it back; either may win
        assert record["end_reason"] in ("deadline reached (--wait)", "deadline reached")
        assert ("deadline reached (--wait)" in result.stderr) == (
            record["end_reason"] == "deadline reached (--wait)")
        audit = [json.loads(line) for line in (state_dir / "audit.log").read_text()
                 .splitlines()]
        assert [a["action"] for a in audit].count("extend") >= 2
    assert pair.tc_config() == before


def test_the_clients_ssh_session_is_protected_as_in_process(pair: NetnsPair, state_dir: Path,
                                                            socket_path: Path) -> None:
    """The agent reads the client's $SSH_CONNECTION (pid from SO_PEERCRED): the tree it
    builds is the one the in-process CLI builds for the same operator."""
    operator = {"SSH_CONNECTION": f"{pair.addr_b} 40000 {pair.addr_a} 2222",
                "HOSTCHAOS_SOCKET": str(socket_path)}
    args = ("inject", "rate", "--netns", pair.a, "--iface", pair.iface_a, "--rate", "2mbit",
            "--json")

    def tree_with(env: dict[str, str]) -> str:
        result = hostchaos(*args, state_dir=state_dir, env=env)
        assert result.returncode == 0, result.stderr
        tree = pair.tc_config()
        assert hostchaos("rollback", json.loads(result.stdout)["id"], state_dir=state_dir,
                         env=env).returncode == 0
        return tree

    in_process = tree_with(operator)
    unprotected = tree_with({"HOSTCHAOS_SOCKET": str(socket_path)})
    assert in_process != unprotected  # the operator's pass filter is there
    with running_agent(state_dir, socket_path):
        through_agent = tree_with(operator)
        assert through_agent == in_process
        assert tree_with({"HOSTCHAOS_SOCKET": str(socket_path)}) == unprotected


def test_a_relative_fill_path_is_the_clients(state_dir: Path, socket_path: Path,
                                             tmp_path: Path) -> None:
    """`disk-fill --path .` means the client's working directory, not the agent's (/)."""
    mount_point = tmp_path / "fs"
    mount_point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m", "hc-test-agent-fill",
                    str(mount_point)], check=True)
    try:
        with running_agent(state_dir, socket_path):
            result = subprocess.run(
                [sys.executable, "-m", "hostchaos", "inject", "disk-fill", "--path", ".",
                 "--size", "8M", "--json"], cwd=mount_point, capture_output=True, text=True,
                env={**os.environ, "HOSTCHAOS_STATE_DIR": str(state_dir),
                     "HOSTCHAOS_SOCKET": str(socket_path)}, timeout=120, check=False)
            assert result.returncode == 0, result.stderr
            view = json.loads(result.stdout)
            assert view["spec"]["path"] == str(mount_point)
            assert [p.name for p in mount_point.iterdir()] == [
                f".hostchaos-{view['id']}.fill"]
            status, _ = call(socket_path, "DELETE", f"/v1/faults/{view['id']}")
            assert status == 200 and list(mount_point.iterdir()) == []
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def _pid_in(line: str) -> str:
    return line.split("process ", 1)[1].split(":", 1)[0]


WRAPPER = r"""
import os, subprocess, sys
result = subprocess.run([sys.executable, "-m", "hostchaos", "inject", "stop", "--pid",
                         str(os.getpid()), "--for", "5s"], capture_output=True, text=True)
print(result.returncode)
print(result.stderr.strip())
"""


def test_the_clients_ancestors_are_protected_through_the_agent(state_dir: Path,
                                                              socket_path: Path) -> None:
    """`inject stop --pid <the shell that runs hostchaos>` is refused either way."""
    env = {**os.environ, "HOSTCHAOS_STATE_DIR": str(state_dir),
           "HOSTCHAOS_SOCKET": str(socket_path)}

    def wrapped() -> tuple[int, str]:
        wrapper = subprocess.run([sys.executable, "-c", WRAPPER], capture_output=True,
                                 text=True, env=env, timeout=120, check=True)
        out = wrapper.stdout.splitlines()
        return int(out[0]), out[1].replace(f"process {_pid_in(out[1])}:", "process PID:")

    code, line = wrapped()  # no agent: in-process
    assert code == 5 and "it runs the hostchaos command (an ancestor of it)" in line
    with running_agent(state_dir, socket_path, log=state_dir.parent / "agent.log"):
        assert wrapped() == (code, line)
        assert "inject failed" in (state_dir.parent / "agent.log").read_text()
    assert open_records(state_dir) == []


@pytest.mark.parametrize("note", [1, 2, 3])
def test_kill_9_of_the_agent_mid_apply_is_rolled_back_by_the_warden(
        note: int, pair: NetnsPair, state_dir: Path, socket_path: Path,
        tmp_path: Path) -> None:
    """The agent is parked right after undo note N (the crash hook), in the thread serving
    the request, and killed: the sentinel's warden sees the fault's applier gone
    and rolls it back."""
    import threading

    before = pair.tc_config()
    marker = tmp_path / "paused"
    agent = start_agent(state_dir, socket_path, env={
        "HOSTCHAOS_TEST_PAUSE_AFTER_NOTE": str(note), "HOSTCHAOS_TEST_PAUSE_FILE": str(marker)})
    answers: list[object] = []
    try:
        client = threading.Thread(target=lambda: answers.append(
            call(socket_path, "POST", "/v1/faults", rate_body(pair))[0]), daemon=True)
        client.start()
        wait_for(marker.exists, timeout=30)
        assert call(socket_path, "GET", "/v1/health")[0] == 200  # still serving meanwhile
        agent.kill()
        agent.wait()
        client.join(30)
        assert answers == [0]  # the connection dropped: no answer
        wait_for(lambda: open_records(state_dir) == [], timeout=30)
    finally:
        stop_agent(agent)
    assert pair.tc_config() == before
    (record,) = records(state_dir)
    assert record["state"] in ("rolled-back", "failed"), record["state"]


def test_sigterm_with_a_request_stuck_in_the_engine_still_exits(
        pair: NetnsPair, state_dir: Path, socket_path: Path, tmp_path: Path) -> None:
    """A request parked mid-apply (crash hook) holds the engine and the state lock: SIGTERM
    still ends the agent (exit 7: it could not roll back), and the warden rolls the parked
    fault back once the agent, its applier, is gone."""
    import threading

    before = pair.tc_config()
    marker = tmp_path / "paused"
    config = tmp_path / "config.toml"
    config.write_text('lock_timeout = "1s"\n')
    agent = start_agent(state_dir, socket_path, env={
        "HOSTCHAOS_TEST_PAUSE_AFTER_NOTE": "2", "HOSTCHAOS_TEST_PAUSE_FILE": str(marker),
        "HOSTCHAOS_CONFIG": str(config)}, log=tmp_path / "agent.log")
    try:
        body = json.dumps(rate_body(pair)).encode()
        threading.Thread(target=lambda: raw_request(
            socket_path, "POST", "/v1/faults", body, {"Content-Type": "application/json"}),
            daemon=True).start()
        wait_for(marker.exists, timeout=30)
        started = time.monotonic()
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=60) == 7
        assert time.monotonic() - started < 40
        wait_for(lambda: open_records(state_dir) == [], timeout=30)
    finally:
        stop_agent(agent)
    assert pair.tc_config() == before
    log = (tmp_path / "agent.log").read_text()
    assert "rollback at stop failed" in log


def test_list_and_status_print_the_same_text_either_way(pair: NetnsPair, state_dir: Path,
                                                        socket_path: Path) -> None:
    import re

    through = {"HOSTCHAOS_SOCKET": str(socket_path)}
    direct = {"HOSTCHAOS_SOCKET": str(socket_path.with_name("nobody.sock"))}

    def masked(text: str) -> str:  # time left moves on; counters may see a stray packet
        text = re.sub(r"\b\d+[hms](?:\d+[ms])*\b", "T", text)
        return re.sub(r"(['\"])(bytes|packets|drops|overlimits|requeues|backlog|qlen)\1: \d+",
                      r"\1\2\1: N", text)  # the text's repr and the JSON alike

    with running_agent(state_dir, socket_path):
        injected = hostchaos("inject", "rate", "--netns", pair.a, "--iface", pair.iface_a,
                             "--rate", "2mbit", "--for", "10m", "--lease", "5m", "--json",
                             state_dir=state_dir, env=through)
        assert injected.returncode == 0, injected.stderr
        fault_id = json.loads(injected.stdout)["id"]
        for args in (("list",), ("list", "--all"), ("status", fault_id),
                     ("status", fault_id, "--json"), ("list", "--json")):
            a = hostchaos(*args, state_dir=state_dir, env=through)
            b = hostchaos(*args, state_dir=state_dir, env=direct)
            assert (a.returncode, masked(a.stdout), a.stderr) == (
                b.returncode, masked(b.stdout), b.stderr), args
        a = hostchaos("rollback", fault_id, state_dir=state_dir, env=through)
        b = hostchaos("rollback", fault_id, state_dir=state_dir, env=direct)  # idempotent
        assert (a.returncode, a.stdout, a.stderr) == (b.returncode, b.stdout, b.stderr)
