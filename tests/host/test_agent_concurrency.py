"""Issue 12, acceptance 4: fifty clients at once on one agent, each on its own sandbox.

A real `hostchaos agent` process; fifty client threads, each with a network
namespace and a sleeping process of its own, at the same time: inject a rate
fault on its namespace's interface and check the kernel carries it, extend it,
inject an open-files limit on its process, then roll both back. Afterwards every
fault is rolled back, no record is open, every namespace's tc configuration and
every process's limit is as before, and the agent's own counters equal the
operations done: 100 injections and 100 rollbacks, by kind, all "ok".
"""

from __future__ import annotations

import contextlib
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from hostchaos.sandbox import NetnsPair, tc_configuration
from tests.support.agent import call, raw_request, running_agent
from tests.support.cli import open_records, records

CLIENTS = 50


def soft_nofile(pid: int) -> str:
    line = next(line for line in Path(f"/proc/{pid}/limits").read_text().splitlines()
                if line.startswith("Max open files"))
    return line.split()[3]


@pytest.fixture
def sandboxes() -> Iterator[list[tuple[str, str, int]]]:
    """(namespace, interface, victim pid) for each client: both sides of 25 veth pairs."""
    with contextlib.ExitStack() as stack:
        places: list[tuple[str, str]] = []
        for i in range(CLIENTS // 2):
            pair = stack.enter_context(NetnsPair(prefix=f"hccc{i}"))
            places += [(pair.a, pair.iface_a), (pair.b, pair.iface_b)]
        victims = [subprocess.Popen(["sleep", "600"]) for _ in range(CLIENTS)]
        try:
            yield [(ns, iface, victim.pid) for (ns, iface), victim in zip(places, victims,
                                                                           strict=True)]
        finally:
            for victim in victims:
                victim.kill()
                victim.wait()


def counter(metrics: str, name: str, kind: str, result: str = "ok") -> float:
    wanted = f'{name}_total{{kind="{kind}",result="{result}"}}'
    return sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
               if line.startswith(wanted))


def test_fifty_clients_at_once_each_on_its_sandbox(sandboxes: list[tuple[str, str, int]],
                                                    state_dir: Path, tmp_path: Path) -> None:
    before = {ns: tc_configuration(ns, iface) for ns, iface, _ in sandboxes}
    limits = {pid: soft_nofile(pid) for _, _, pid in sandboxes}
    socket_path = tmp_path / "run" / "agent.sock"
    problems: list[str] = []
    start = threading.Barrier(CLIENTS)

    def client(ns: str, iface: str, pid: int) -> None:
        try:
            start.wait(60)
            status, rate = call(socket_path, "POST", "/v1/faults", {
                "kind": "rate", "for": "5m", "options": {"netns": ns, "iface": iface,
                                                         "rate": "3mbit"}})
            assert status == 201, rate
            assert "tbf" in tc_configuration(ns, iface)
            status, extended = call(socket_path, "POST", f"/v1/faults/{rate['id']}/extend",
                                    {"for": "10m"})
            assert status == 200 and extended["expires_at"] > rate["expires_at"], extended
            status, limit = call(socket_path, "POST", "/v1/faults", {
                "kind": "nofile", "for": "5m", "options": {"pid": pid, "soft": 77}})
            assert status == 201, limit
            assert soft_nofile(pid) == "77"
            for fault in (rate, limit):
                status, ended = call(socket_path, "DELETE", f"/v1/faults/{fault['id']}")
                assert status == 200 and ended["state"] == "rolled-back", ended
        except BaseException as exc:  # collected: one failing client must not hide others
            problems.append(f"{ns}: {type(exc).__name__}: {exc}")

    with running_agent(state_dir, socket_path, log=tmp_path / "agent.log"):
        threads = [threading.Thread(target=client, args=place) for place in sandboxes]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(300)
        assert not any(thread.is_alive() for thread in threads)
        status, _, body = raw_request(socket_path, "GET", "/metrics")
        assert status == 200
        metrics = body.decode()
    assert problems == []
    assert open_records(state_dir) == []
    assert len(records(state_dir)) == 2 * CLIENTS
    assert all(r["state"] == "rolled-back" for r in records(state_dir))
    assert {ns: tc_configuration(ns, iface) for ns, iface, _ in sandboxes} == before
    assert {pid: soft_nofile(pid) for _, _, pid in sandboxes} == limits
    for kind in ("rate", "nofile"):
        assert counter(metrics, "hostchaos_injections", kind) == CLIENTS, kind
        assert counter(metrics, "hostchaos_rollbacks", kind) == CLIENTS, kind
    assert "result=\"conflict\"" not in metrics and "result=\"busy\"" not in metrics
