"""Issue 3 acceptance in a real kernel: each kind measured, ingress, composition, protection."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from hostchaos.sandbox import NetnsPair, PingResult
from tests.support.cli import hostchaos, injected, open_records, records, rolled_back
from tests.support.traffic import REPO, tcp_throughput, udp_probe

SECOND_B = "198.18.43.3"  # a second address on side b, for composition and selection


@pytest.fixture
def pair(pair: NetnsPair) -> NetnsPair:
    subprocess.run(["ip", "-n", pair.b, "addr", "add", f"{SECOND_B}/24", "dev", pair.iface_b],
                   check=True)
    pair.ping(count=2, interval=0.05, v6=True)  # neighbour discovery done before measuring
    return pair


def inject(pair: NetnsPair, state_dir: Path, kind: str, *args: str,
           env: dict[str, str] | None = None) -> str:
    return injected(kind, "--netns", pair.a, "--iface", pair.iface_a, *args, "--for", "5m",
                    state_dir=state_dir, env=env)


rollback = rolled_back


def links(ns: str) -> str:
    return subprocess.run(["ip", "-n", ns, "-o", "link"], capture_output=True, text=True,
                          check=True).stdout


def filters(pair: NetnsPair) -> str:
    return subprocess.run(["tc", "-n", pair.a, "filter", "show", "dev", pair.iface_a],
                          capture_output=True, text=True, check=True).stdout


@pytest.mark.parametrize(("kind", "args", "measure"), [
    ("loss", ["--percent", "20"], "loss"),
    ("corrupt", ["--percent", "20"], "loss"),
    ("duplicate", ["--percent", "20"], "duplicate"),
])
def test_udp_percentages_over_2000_datagrams(kind: str, args: list[str], measure: str,
                                             pair: NetnsPair, state_dir: Path) -> None:
    before = pair.tc_config()
    fault_id = inject(pair, state_dir, kind, *args)
    result = udp_probe(pair.b, pair.a, pair.addr_b, count=2000)
    value = result.loss_percent if measure == "loss" else result.duplicate_percent
    assert 17.0 <= value <= 23.0, result
    rollback(fault_id, state_dir)
    clean = udp_probe(pair.b, pair.a, pair.addr_b, count=500)
    assert clean.loss_percent == 0 and clean.duplicates == 0, clean
    assert pair.tc_config() == before


def test_gilbert_elliott_loss_is_bursty(pair: NetnsPair, state_dir: Path) -> None:
    fault_id = inject(pair, state_dir, "loss", "--ge", "5,20")  # ~20% of the time in "bad"
    result = udp_probe(pair.b, pair.a, pair.addr_b, count=2000)
    assert 8.0 <= result.loss_percent <= 35.0, result
    rollback(fault_id, state_dir)


def test_reorder_inverts_sequence(pair: NetnsPair, state_dir: Path) -> None:
    fault_id = inject(pair, state_dir, "reorder", "--percent", "50", "--ms", "20")
    result = udp_probe(pair.b, pair.a, pair.addr_b, count=400, interval=0.002)
    assert result.inversions >= 20 and result.unique == 400, result
    rollback(fault_id, state_dir)
    clean = udp_probe(pair.b, pair.a, pair.addr_b, count=200, interval=0.002)
    assert clean.inversions == 0


def test_latency_distribution_and_jitter(pair: NetnsPair, state_dir: Path) -> None:
    fault_id = inject(pair, state_dir, "latency", "--ms", "50", "--jitter", "10",
                      "--distribution", "normal")
    hit = pair.ping(count=60, interval=0.02)
    assert hit.rtt_avg_ms is not None and 45 <= hit.rtt_avg_ms <= 56, hit
    assert hit.rtt_mdev_ms is not None and 4 <= hit.rtt_mdev_ms <= 16, hit
    rollback(fault_id, state_dir)


def test_rate_limits_tcp(pair: NetnsPair, state_dir: Path) -> None:
    # the link must carry far more than the limit first, or a low reading means nothing
    unlimited = tcp_throughput(pair.b, pair.a, pair.addr_b, seconds=2)
    assert unlimited >= 5 * 4e6, unlimited
    fault_id = inject(pair, state_dir, "rate", "--rate", "4mbit")
    assert "rate 4Mbit" in pair.tc_config()  # the bucket the kernel holds is the one asked for
    measured = tcp_throughput(pair.b, pair.a, pair.addr_b, seconds=5)
    print(f"rate 4mbit: {measured / 1e6:.2f} Mbit/s measured, {unlimited / 1e6:.1f} without")
    # the limit holds (+10%); the floor is loose because under TCG on a host whose CPU is
    # stolen, tbf's watchdog timer fires late and a Python sender falls behind (2.6
    # Mbit/s seen once in CI); the quiet-machine fidelity is in docs/benchmarks.md
    assert 0.5 * 4e6 <= measured <= 1.1 * 4e6, measured
    rollback(fault_id, state_dir)


@pytest.mark.parametrize("family", [4, 6])
def test_partition_selects_only_its_traffic(family: int, pair: NetnsPair,
                                            state_dir: Path) -> None:
    cut, kept = (pair.addr_b, pair.addr6_b) if family == 4 else (pair.addr6_b, pair.addr_b)
    fault_id = inject(pair, state_dir, "partition", "--dst", cut, "--protocol", "udp")
    assert udp_probe(pair.b, pair.a, cut, count=300).unique == 0
    assert udp_probe(pair.b, pair.a, kept, count=300).loss_percent == 0
    assert pair.ping(count=3, interval=0.05, v6=(family == 6)).received == 3  # icmp unselected
    rollback(fault_id, state_dir)
    assert udp_probe(pair.b, pair.a, cut, count=300).loss_percent == 0


def latency_shown(rtt_min: float | None, rtt_avg: float | None, ms: float = 100) -> bool:
    """A --ms 100 delay as ping sees it: netem's delay is a floor, so the fastest round trip
    shows it exactly; the mean also carries the emulated VM's scheduling on a busy host."""
    return (rtt_min is not None and rtt_avg is not None
            and ms - 1 <= rtt_min <= ms + 5 and rtt_avg <= ms + 15)


def test_ingress_latency_raises_rtt_and_ifb_goes_away(pair: NetnsPair, state_dir: Path) -> None:
    before_links, before = links(pair.a), pair.tc_config()
    fault_id = inject(pair, state_dir, "latency", "--ms", "100", "--direction", "ingress")
    assert "hcifb" in links(pair.a)
    hit = pair.ping(count=10, interval=0.05)
    assert latency_shown(hit.rtt_min_ms, hit.rtt_avg_ms), hit
    rollback(fault_id, state_dir)
    assert links(pair.a) == before_links and pair.tc_config() == before
    rtt = pair.ping(count=5, interval=0.05).rtt_avg_ms
    assert rtt is not None and rtt < 5


def test_latency_to_a_and_partition_of_b_compose(pair: NetnsPair, state_dir: Path) -> None:
    before, before_links = pair.tc_config(), links(pair.a)
    slow = inject(pair, state_dir, "latency", "--ms", "100", "--dst", pair.addr_b)
    cut = inject(pair, state_dir, "partition", "--dst", SECOND_B, "--direction", "both")

    def ping_to(address: str) -> PingResult:
        out = subprocess.run(["ip", "netns", "exec", pair.a, "ping", "-q", "-n", "-c", "5",
                              "-i", "0.05", "-W", "1", address], capture_output=True,
                             text=True).stdout
        from hostchaos.sandbox import parse_ping

        return parse_ping(out)

    hit = ping_to(pair.addr_b)
    assert latency_shown(hit.rtt_min_ms, hit.rtt_avg_ms), hit
    assert ping_to(SECOND_B).rtt_avg_ms is None  # nothing comes back
    rollback(slow, state_dir)
    latency_a = ping_to(pair.addr_b).rtt_avg_ms
    assert latency_a is not None and latency_a < 5
    assert ping_to(SECOND_B).rtt_avg_ms is None  # the partition is still in force
    slow = inject(pair, state_dir, "latency", "--ms", "100", "--dst", pair.addr_b)
    rollback(cut, state_dir)
    assert ping_to(SECOND_B).rtt_avg_ms is not None
    fastest = ping_to(pair.addr_b).rtt_min_ms
    assert fastest is not None and fastest >= 95  # the latency is still in force
    rollback(slow, state_dir)
    assert pair.tc_config() == before and links(pair.a) == before_links
    assert "flowid" not in filters(pair)


def test_overlapping_fault_refused_naming_the_first(pair: NetnsPair, state_dir: Path) -> None:
    first = inject(pair, state_dir, "latency", "--ms", "10", "--dst", "198.18.43.0/24")
    result = hostchaos("inject", "loss", "--netns", pair.a, "--iface", pair.iface_a,
                       "--percent", "10", "--dst", pair.addr_b, state_dir=state_dir)
    assert result.returncode == 5 and first in result.stderr
    rollback(first, state_dir)


def _tcp_echo_server(ns: str, address: str, port: int) -> subprocess.Popen[str]:
    code = (
        "import socket,sys\n"
        f"s=socket.create_server(({address!r},{port}))\n"
        "print('READY',flush=True)\n"
        "c,_=s.accept()\n"
        "while (d:=c.recv(100)): c.sendall(d)\n"
    )
    proc = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", code],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "READY"
    return proc


def test_partition_spares_operator_ssh_session_and_arp(pair: NetnsPair, state_dir: Path) -> None:
    """The "operator" on b keeps its TCP session to a's port 2222 through a full partition."""
    server = _tcp_echo_server(pair.a, pair.addr_a, 2222)
    client = subprocess.Popen(
        ["ip", "netns", "exec", pair.b, sys.executable, "-c",
         "import socket,sys\n"
         f"c=socket.create_connection(({pair.addr_a!r},2222),timeout=10)\n"
         "for line in sys.stdin:\n"
         "    c.sendall(line.encode()); print(c.recv(100).decode().strip(), flush=True)\n"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO)
    assert client.stdin is not None and client.stdout is not None
    try:
        client.stdin.write("hello\n")
        client.stdin.flush()
        assert client.stdout.readline().strip() == "hello"
        operator = {"SSH_CONNECTION": f"{pair.addr_b} 40000 {pair.addr_a} 2222"}
        fault_id = inject(pair, state_dir, "partition", "--direction", "both", env=operator)
        assert pair.ping(count=3, interval=0.05, timeout=1).received == 0  # the cut is real
        subprocess.run(["ip", "-n", pair.a, "neigh", "flush", "all"], check=True)
        client.stdin.write("still here\n")
        client.stdin.flush()
        assert client.stdout.readline().strip() == "still here"  # ARP resolved again, too
        neigh = subprocess.run(["ip", "-n", pair.a, "neigh", "show", pair.addr_b],
                               capture_output=True, text=True, check=True).stdout
        assert "lladdr" in neigh
        rollback(fault_id, state_dir)
        assert pair.ping(count=3, interval=0.05).received == 3
    finally:
        client.kill()
        server.kill()
        client.wait()
        server.wait()


def test_foreign_root_refused_untouched_then_forced_and_restored(pair: NetnsPair,
                                                                 state_dir: Path) -> None:
    subprocess.run(["tc", "-n", pair.a, "qdisc", "add", "dev", pair.iface_a, "root", "handle",
                    "1:", "htb", "default", "10"], check=True)
    subprocess.run(["tc", "-n", pair.a, "class", "add", "dev", pair.iface_a, "parent", "1:",
                    "classid", "1:10", "htb", "rate", "1gbit"], check=True)
    before = pair.tc_config()
    result = hostchaos("inject", "latency", "--netns", pair.a, "--iface", pair.iface_a,
                       "--ms", "10", state_dir=state_dir)
    assert result.returncode == 5 and "set up by someone else" in result.stderr
    assert pair.tc_config() == before
    assert open_records(state_dir) == []
    # --force: snapshot, replace, and put back byte for byte on rollback
    forced = inject(pair, state_dir, "latency", "--ms", "100", "--force")
    rtt = pair.ping(count=5, interval=0.05).rtt_avg_ms
    assert rtt is not None and rtt >= 95
    rollback(forced, state_dir)
    assert pair.tc_config() == before


def test_host_selector_resolves_all_records(pair: NetnsPair, state_dir: Path) -> None:
    hosts = Path("/etc/hosts")  # a throwaway overlay inside the VM
    original = hosts.read_text()
    hosts.write_text(original + f"\n{pair.addr_b} hc-peer\n{pair.addr6_b} hc-peer\n")
    try:
        fault_id = inject(pair, state_dir, "partition", "--host", "hc-peer", "--protocol", "udp")
        (record,) = open_records(state_dir)
        assert sorted(record["spec"]["dst"]) == sorted([f"{pair.addr_b}/32",
                                                        f"{pair.addr6_b}/128"])
        assert udp_probe(pair.b, pair.a, pair.addr_b, count=200).unique == 0
        assert udp_probe(pair.b, pair.a, pair.addr6_b, count=200).unique == 0
        rollback(fault_id, state_dir)
        missing = hostchaos("inject", "partition", "--netns", pair.a, "--iface", pair.iface_a,
                            "--host", "hc-nowhere", state_dir=state_dir)
        assert missing.returncode == 4 and "does not resolve" in missing.stderr
    finally:
        hosts.write_text(original)


KIND_ARGS = {
    "latency": ["--ms", "50"], "loss": ["--percent", "10"], "corrupt": ["--percent", "10"],
    "duplicate": ["--percent", "10"], "reorder": ["--percent", "10", "--ms", "10"],
    "rate": ["--rate", "10mbit"], "partition": ["--dst", SECOND_B],
}


@pytest.mark.parametrize("kind", sorted(KIND_ARGS))
def test_every_kind_survives_kill_9_of_cli_and_warden(kind: str, pair: NetnsPair,
                                                       state_dir: Path) -> None:
    before, before_links = pair.tc_config(), links(pair.a)
    proc = subprocess.Popen(
        [sys.executable, "-m", "hostchaos", "inject", kind, "--netns", pair.a, "--iface",
         pair.iface_a, *KIND_ARGS[kind], "--direction", "both", "--for", "5m", "--wait"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "HOSTCHAOS_STATE_DIR": str(state_dir)})
    assert proc.stdout is not None
    assert proc.stdout.readline().startswith(f"hc-{kind}-"), proc.stderr
    assert "hcifb" in links(pair.a)
    (record,) = records(state_dir)
    os.kill(record["holder"]["pid"], signal.SIGKILL)
    proc.kill()
    proc.wait()
    result = hostchaos("sweep", state_dir=state_dir)
    assert result.returncode == 0, result.stderr
    assert open_records(state_dir) == []
    assert pair.tc_config() == before and links(pair.a) == before_links
    assert "flowid" not in filters(pair)


def test_status_shows_live_counters(pair: NetnsPair, state_dir: Path) -> None:
    fault_id = inject(pair, state_dir, "loss", "--percent", "50")
    udp_probe(pair.b, pair.a, pair.addr_b, count=400)
    status = json.loads(hostchaos("status", fault_id, "--json", state_dir=state_dir).stdout)
    netem = status["observed"]["directions"]["egress"]["netem"]
    assert netem["drops"] >= 100, status
    rollback(fault_id, state_dir)


