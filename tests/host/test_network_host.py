"""Host tier, network kinds this kernel can run (tbf, ingress, mirred, ifb; no netem)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from hostchaos.sandbox import NetnsPair
from hostchaos.system import capabilities
from tests.support.capability import need
from tests.support.cli import hostchaos, open_records
from tests.support.traffic import tcp_throughput

RATE_BITS = 2_000_000


def links(ns: str) -> str:
    return subprocess.run(["ip", "-n", ns, "-o", "link"], capture_output=True, text=True,
                          check=True).stdout


def inject(*args: str, state_dir: Path) -> str:
    result = hostchaos("inject", *args, "--json", state_dir=state_dir)
    assert result.returncode == 0, result.stderr
    fault_id: str = json.loads(result.stdout)["id"]
    return fault_id


def test_rate_limits_tcp_throughput_and_rolls_back(pair: NetnsPair, state_dir: Path) -> None:
    before = pair.tc_config()
    free = tcp_throughput(pair.b, pair.a, pair.addr_b, seconds=2)
    assert free > 20 * RATE_BITS  # the limit must be far below the sandbox's own speed
    fault_id = inject("rate", "--netns", pair.a, "--iface", pair.iface_a, "--rate", "2mbit",
                      state_dir=state_dir)
    limited = tcp_throughput(pair.b, pair.a, pair.addr_b, seconds=4)
    assert 0.9 * RATE_BITS <= limited <= 1.1 * RATE_BITS, limited
    status = json.loads(hostchaos("status", fault_id, "--json", state_dir=state_dir).stdout)
    assert status["observed"]["class"]["bytes"] > 500_000  # the class saw the traffic
    assert hostchaos("rollback", fault_id, state_dir=state_dir).returncode == 0
    assert tcp_throughput(pair.b, pair.a, pair.addr_b, seconds=2) > 20 * RATE_BITS
    assert pair.tc_config() == before
    assert open_records(state_dir) == []


def test_ingress_rate_goes_through_ifb_and_ifb_is_removed(pair: NetnsPair,
                                                           state_dir: Path) -> None:
    need(capabilities.ifb())
    before_links = links(pair.a)
    fault_id = inject("rate", "--netns", pair.a, "--iface", pair.iface_a, "--rate", "2mbit",
                      "--direction", "ingress", state_dir=state_dir)
    assert "hcifb" in links(pair.a)
    # b -> a data now enters a's interface and is shaped on the IFB
    limited = tcp_throughput(pair.a, pair.b, pair.addr_a, seconds=4)
    assert 0.9 * RATE_BITS <= limited <= 1.1 * RATE_BITS, limited
    # a -> b (egress of a) is untouched
    assert tcp_throughput(pair.b, pair.a, pair.addr_b, seconds=2) > 20 * RATE_BITS
    assert hostchaos("rollback", fault_id, state_dir=state_dir).returncode == 0
    assert links(pair.a) == before_links
    ingress = subprocess.run(["tc", "-n", pair.a, "qdisc", "show", "dev", pair.iface_a,
                              "ingress"], capture_output=True, text=True, check=True).stdout
    assert ingress.strip() == ""


def test_selectors_pick_only_their_traffic(pair: NetnsPair, state_dir: Path) -> None:
    """A rate limit on TCP port 5301 leaves port 5302 at full speed (IPv4 and IPv6)."""
    fault_id = inject("rate", "--netns", pair.a, "--iface", pair.iface_a, "--rate", "2mbit",
                      "--protocol", "tcp", "--dport", "5301", state_dir=state_dir)
    for address in (pair.addr_b, pair.addr6_b):
        slow = tcp_throughput(pair.b, pair.a, address, seconds=3, port=5301)
        fast = tcp_throughput(pair.b, pair.a, address, seconds=2, port=5302)
        assert slow <= 1.1 * RATE_BITS and fast > 20 * RATE_BITS, (address, slow, fast)
    assert hostchaos("rollback", fault_id, state_dir=state_dir).returncode == 0


def test_two_faults_compose_and_overlap_is_refused(pair: NetnsPair, state_dir: Path) -> None:
    before = pair.tc_config()
    v4 = inject("rate", "--netns", pair.a, "--iface", pair.iface_a, "--rate", "2mbit",
                "--dst", pair.addr_b, state_dir=state_dir)
    v6 = inject("rate", "--netns", pair.a, "--iface", pair.iface_a, "--rate", "4mbit",
                "--dst", pair.addr6_b, state_dir=state_dir)
    refused = hostchaos("inject", "rate", "--netns", pair.a, "--iface", pair.iface_a,
                        "--rate", "1mbit", "--dst", "198.18.43.0/24", state_dir=state_dir)
    assert refused.returncode == 5 and v4 in refused.stderr
    assert tcp_throughput(pair.b, pair.a, pair.addr_b, seconds=3) <= 1.1 * 2_000_000
    assert tcp_throughput(pair.b, pair.a, pair.addr6_b, seconds=3) <= 1.1 * 4_000_000
    assert hostchaos("rollback", v4, state_dir=state_dir).returncode == 0
    # the other fault still bites; the rolled-back one does not
    assert tcp_throughput(pair.b, pair.a, pair.addr6_b, seconds=3) <= 1.1 * 4_000_000
    assert tcp_throughput(pair.b, pair.a, pair.addr_b, seconds=2) > 20 * RATE_BITS
    assert hostchaos("rollback", v6, state_dir=state_dir).returncode == 0
    assert pair.tc_config() == before


@pytest.mark.parametrize("kind_args", [["latency", "--ms", "10"], ["partition"]])
def test_netem_kinds_refused_without_netem(kind_args: list[str], pair: NetnsPair,
                                           state_dir: Path) -> None:
    if capabilities.netem().ok:
        pytest.skip("this kernel has sch_netem")
    result = hostchaos("inject", *kind_args, "--netns", pair.a, "--iface", pair.iface_a,
                       state_dir=state_dir)
    assert result.returncode == 3 and "sch_netem" in result.stderr


def hand_made_tree(pair: NetnsPair) -> None:
    for args in (
        ["qdisc", "add", "dev", pair.iface_a, "root", "handle", "1:", "htb", "default", "20"],
        ["class", "add", "dev", pair.iface_a, "parent", "1:", "classid", "1:1", "htb",
         "rate", "900mbit"],
        ["class", "add", "dev", pair.iface_a, "parent", "1:1", "classid", "1:10", "htb",
         "rate", "100mbit", "ceil", "900mbit", "prio", "1"],
        ["class", "add", "dev", pair.iface_a, "parent", "1:1", "classid", "1:20", "htb",
         "rate", "5mbit", "ceil", "50mbit"],
        ["qdisc", "add", "dev", pair.iface_a, "parent", "1:10", "handle", "10:", "tbf", "rate",
         "80mbit", "burst", "64k", "limit", "512k"],
        ["filter", "add", "dev", pair.iface_a, "parent", "1:", "protocol", "ip", "prio", "5",
         "u32", "match", "ip", "dport", "22", "0xffff", "flowid", "1:10"],
        ["filter", "add", "dev", pair.iface_a, "parent", "1:", "protocol", "ipv6", "prio", "6",
         "u32", "match", "ip6", "dst", "fd48:43::/64", "flowid", "1:10"],
    ):
        subprocess.run(["tc", "-n", pair.a, *args], check=True, capture_output=True)


def test_foreign_tree_refused_then_forced_and_put_back_exactly(pair: NetnsPair,
                                                                state_dir: Path) -> None:
    hand_made_tree(pair)
    before = pair.tc_config()
    refused = hostchaos("inject", "rate", "--netns", pair.a, "--iface", pair.iface_a,
                        "--rate", "2mbit", state_dir=state_dir)
    assert refused.returncode == 5 and "set up by someone else" in refused.stderr
    assert pair.tc_config() == before and open_records(state_dir) == []

    first = inject("rate", "--netns", pair.a, "--iface", pair.iface_a, "--rate", "2mbit",
                   "--dst", pair.addr_b, "--force", state_dir=state_dir)
    second = inject("rate", "--netns", pair.a, "--iface", pair.iface_a, "--rate", "4mbit",
                    "--dst", pair.addr6_b, state_dir=state_dir)
    assert "htb 4843:" in pair.tc_config()
    limited = tcp_throughput(pair.b, pair.a, pair.addr_b, seconds=3)
    assert limited <= 1.1 * RATE_BITS
    assert hostchaos("rollback", first, state_dir=state_dir).returncode == 0
    assert "htb 4843:" in pair.tc_config()  # the second fault still holds the tree
    assert hostchaos("rollback", second, state_dir=state_dir).returncode == 0
    assert pair.tc_config() == before
