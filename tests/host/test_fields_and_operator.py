"""Issue 8 points 8 and 12 on the host: values that fit the kernel's fields (or exit 2),
the operator's sshd-session protected, and default-looking trees restored exactly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from hostchaos.sandbox import NetnsPair, tc_configuration
from hostchaos.system import capabilities
from tests.support.capability import need
from tests.support.cli import hostchaos, one_line_error, open_records
from tests.support.traffic import REPO


def test_rate_of_40gbit_is_carried_by_tbf_rate64(pair: NetnsPair, state_dir: Path) -> None:
    before = pair.tc_config()
    result = hostchaos("inject", "rate", "--netns", pair.a, "--iface", pair.iface_a,
                       "--rate", "40gbit", "--json", state_dir=state_dir)
    assert result.returncode == 0, result.stderr
    shown = subprocess.run(["tc", "-n", pair.a, "-d", "qdisc", "show", "dev", pair.iface_a],
                           capture_output=True, text=True, check=True).stdout
    assert "tbf 4901: parent 4843:1 rate 40Gbit burst " in shown, shown
    fault_id = json.loads(result.stdout)["id"]
    assert hostchaos("rollback", fault_id, state_dir=state_dir).returncode == 0
    assert pair.tc_config() == before


@pytest.mark.parametrize(("args", "fragment"), [
    (["rate", "--rate", "1mbit", "--burst", "99999999999"], "--burst must be between 1600 and"),
    (["rate", "--rate", "8kbit", "--burst", "1m"], "--burst must be between 1600 and 274877"),
    (["rate", "--rate", "1mbit", "--limit", "5000000000"], "--limit must be between 1600"),
    (["rate", "--rate", "1" + "0" * 400 + "bit"], "--rate '1000"),
    (["latency", "--ms", "0.0001"], "--ms must be between 0.001 and 60000 ms"),
    (["reorder", "--percent", "10", "--ms", "5", "--gap", "4294967296"],
     "--gap must be between 0 and 4294967295"),
])
def test_values_netlink_cannot_carry_exit_2_and_touch_nothing(
        args: list[str], fragment: str, pair: NetnsPair, state_dir: Path) -> None:
    before = pair.tc_config()
    result = hostchaos("inject", args[0], "--netns", pair.a, "--iface", pair.iface_a,
                       *args[1:], state_dir=state_dir)
    assert result.returncode == 2, result.stderr
    assert fragment in one_line_error(result)
    assert pair.tc_config() == before and open_records(state_dir) == []


# -- the operator's SSH sessions -------------------------------------------------------

SERVER = """
import ctypes, socket, sys
ctypes.CDLL(None).prctl(15, sys.argv[1].encode(), 0, 0, 0)  # PR_SET_NAME, as OpenSSH >= 9.8
server = socket.create_server((sys.argv[2], 2222))
print("READY", flush=True)
conn, _ = server.accept()
print("CONNECTED", flush=True)
sys.stdin.read()
"""

CLIENT = """
import socket, sys
conn = socket.create_connection((sys.argv[1], 2222), timeout=10)
print("CONNECTED", flush=True)
sys.stdin.read()
"""

PROBE = "import json; from hostchaos.system import ssh; print(json.dumps(ssh.sshd_session_peers()))"


@pytest.fixture
def session(pair: NetnsPair, request: pytest.FixtureRequest) -> Iterator[None]:
    """A TCP session from b to a's port 2222, held on a's side by a process named as asked."""
    procs = []
    try:
        server = subprocess.Popen(["ip", "netns", "exec", pair.a, sys.executable, "-c", SERVER,
                                   request.param, pair.addr_a], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)
        procs.append(server)
        assert server.stdout is not None and server.stdout.readline().strip() == "READY"
        client = subprocess.Popen(["ip", "netns", "exec", pair.b, sys.executable, "-c", CLIENT,
                                   pair.addr_a], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  text=True)
        procs.append(client)
        assert client.stdout is not None and client.stdout.readline().strip() == "CONNECTED"
        assert server.stdout.readline().strip() == "CONNECTED"
        yield
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def peers_seen_in(ns: str) -> list[list[object]]:
    out = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", PROBE],
                         capture_output=True, text=True, check=True, cwd=REPO,
                         env={**os.environ, "PYTHONPATH": str(REPO)}).stdout
    peers: list[list[object]] = json.loads(out)
    return peers


@pytest.mark.parametrize("session", ["sshd-session"], indirect=True)
def test_sshd_session_connections_are_protected(session: None, pair: NetnsPair) -> None:
    """OpenSSH 9.8+ serves each session from a process named sshd-session."""
    assert peers_seen_in(pair.a) == [[pair.addr_b, 2222]]


@pytest.mark.parametrize("session", ["python3"], indirect=True)
def test_other_servers_connections_are_not(session: None, pair: NetnsPair) -> None:
    assert peers_seen_in(pair.a) == []


# -- trees that look like kernel defaults ------------------------------------------------

MQ = "hcmq0"


@pytest.fixture
def multiqueue(pair: NetnsPair) -> str:
    """An IFB with four transmit queues in namespace a: the kernel gives it an mq root
    (handle 0:) with one default child per queue."""
    need(capabilities.ifb())
    subprocess.run(["ip", "-n", pair.a, "link", "add", MQ, "numtxqueues", "4", "type", "ifb"],
                   check=True)
    subprocess.run(["ip", "-n", pair.a, "link", "set", MQ, "up"], check=True)
    return MQ


def tc(pair: NetnsPair, *args: str) -> None:
    subprocess.run(["tc", "-n", pair.a, *args], check=True)


def inject_rate(pair: NetnsPair, state_dir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return hostchaos("inject", "rate", "--netns", pair.a, "--iface", MQ, "--rate", "2mbit",
                     "--json", *extra, state_dir=state_dir)


def test_kernel_mq_tree_is_replaced_and_comes_back(multiqueue: str, pair: NetnsPair,
                                                   state_dir: Path) -> None:
    before = tc_configuration(pair.a, MQ)
    assert "qdisc mq 0: root" in before
    result = inject_rate(pair, state_dir)
    assert result.returncode == 0, result.stderr
    assert hostchaos("rollback", json.loads(result.stdout)["id"],
                     state_dir=state_dir).returncode == 0
    assert tc_configuration(pair.a, MQ) == before


def test_customized_mq_tree_is_refused_then_restored_exactly(multiqueue: str, pair: NetnsPair,
                                                             state_dir: Path) -> None:
    """A handle-0 mq's children cannot be reached ("Failed to find specified qdisc"), so a
    customized mq has a handle; its untouched children keep handle 0:. Replaying those as
    new qdiscs would give them handles of their own: they are the kernel's to make."""
    tc(pair, "qdisc", "replace", "dev", MQ, "root", "handle", "1:", "mq")
    tc(pair, "qdisc", "replace", "dev", MQ, "parent", "1:1", "pfifo", "limit", "100")
    before = tc_configuration(pair.a, MQ)
    assert "parent 1:1 limit 100p" in before  # a handle the kernel picked (8001: ...)
    assert "qdisc pfifo_fast 0: parent 1:2" in before
    refused = inject_rate(pair, state_dir)
    assert refused.returncode == 5 and "set up by someone else (mq 1:)" in refused.stderr
    assert tc_configuration(pair.a, MQ) == before and open_records(state_dir) == []
    forced = inject_rate(pair, state_dir, "--force")
    assert forced.returncode == 0, forced.stderr
    assert "htb 4843:" in tc_configuration(pair.a, MQ)
    assert hostchaos("rollback", json.loads(forced.stdout)["id"],
                     state_dir=state_dir).returncode == 0
    assert tc_configuration(pair.a, MQ) == before
