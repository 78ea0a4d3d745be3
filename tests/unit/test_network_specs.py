"""Network specs: selectors, u32 keys, overlap, protection, per-kind validation."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from hostchaos.errors import SpecError
from hostchaos.faults.corrupt import CorruptSpec
from hostchaos.faults.latency import LatencySpec
from hostchaos.faults.loss import LossFault, LossSpec
from hostchaos.faults.partition import PartitionSpec
from hostchaos.faults.rate import RateFault, RateSpec
from hostchaos.faults.reorder import ReorderSpec
from hostchaos.faults.traffic_spec import combine, parse_protect
from hostchaos.quantities import parse_rate
from hostchaos.system.u32 import Match
from tests.support.cli import hostchaos, one_line_error


def net(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(text)


def test_no_selector_means_all_ipv4_and_ipv6() -> None:
    matches = PartitionSpec(iface="eth0").matches()
    assert [(m.family, m.keys()) for m in matches] == [(4, ["0x0/0x0+0"]), (6, ["0x0/0x0+0"])]


def test_ipv4_selector_keys() -> None:
    (match,) = PartitionSpec(iface="eth0", dst=("10.1.2.0/24",), protocol="tcp",
                             dport=443).matches()
    assert match.keys() == ["0x00060000/0x00ff0000+8", "0x0a010200/0xffffff00+16",
                            "0x000001bb/0x0000ffff+20"]


def test_ipv6_selector_keys_cover_all_four_words() -> None:
    (match,) = PartitionSpec(iface="eth0", src=("fd48:43::1",), protocol="udp").matches()
    assert match.keys() == ["0x00001100/0x0000ff00+4", "0xfd480043/0xffffffff+8",
                            "0x00000000/0xffffffff+12", "0x00000000/0xffffffff+16",
                            "0x00000001/0xffffffff+20"]


def test_mixed_families_and_ports_without_protocol() -> None:
    spec = PartitionSpec(iface="eth0", dst=("10.0.0.0/8", "fd00::/8"), dport=53)
    assert sorted((m.family, m.protocol) for m in spec.matches()) == [
        (4, 6), (4, 17), (6, 6), (6, 17)]


def test_ingress_mirrors_selectors() -> None:
    (match,) = PartitionSpec(iface="eth0", dst=("10.0.0.5",), protocol="tcp",
                             dport=80).matches()
    back = match.mirrored()
    assert back.src == net("10.0.0.5/32") and back.dst is None
    assert back.sport == 80 and back.dport is None


def test_overlap_rules() -> None:
    a = PartitionSpec(iface="eth0", dst=("10.0.0.0/8",))
    assert a.overlaps(LatencySpec(iface="eth0", dst=("10.2.0.0/16",), ms=5))
    assert not a.overlaps(LatencySpec(iface="eth0", dst=("192.0.2.0/24",), ms=5))
    assert not a.overlaps(LatencySpec(iface="eth1", dst=("10.2.0.0/16",), ms=5))
    assert not a.overlaps(LatencySpec(iface="eth0", netns="x", dst=("10.2.0.0/16",), ms=5))
    assert not a.overlaps(LatencySpec(iface="eth0", dst=("10.2.0.0/16",), ms=5,
                                      direction="ingress"))
    assert a.overlaps(LatencySpec(iface="eth0", ms=5, direction="both"))
    tcp80 = PartitionSpec(iface="eth0", protocol="tcp", dport=80)
    assert not tcp80.overlaps(PartitionSpec(iface="eth0", protocol="tcp", dport=443))
    assert not tcp80.overlaps(PartitionSpec(iface="eth0", protocol="udp"))
    assert not PartitionSpec(iface="eth0", dst=("fd00::/8",)).overlaps(a)


def test_combine_narrows_or_refuses() -> None:
    fault = Match(4, None, dst=net("10.0.0.0/8"))
    ssh = Match(4, 6, dst=net("10.1.1.1/32"), sport=22)
    both = combine(fault, ssh)
    assert both == Match(4, 6, dst=net("10.1.1.1/32"), sport=22)
    assert combine(fault, Match(4, 6, dst=net("192.0.2.1/32"))) is None
    assert combine(fault, Match(6, 58, icmp_type=(0x84, 0xFC))) is None


@pytest.mark.parametrize(("text", "expected"), [
    ("10.0.0.0/8", (net("10.0.0.0/8"), None)),
    ("10.0.0.1:22", (net("10.0.0.1/32"), 22)),
    ("[fd00::/8]:443", (net("fd00::/8"), 443)),
    ("fd00::1", (net("fd00::1/128"), None)),
])
def test_parse_protect(text: str, expected: object) -> None:
    assert parse_protect(text) == expected


@pytest.mark.parametrize(("kwargs", "fragment"), [
    ({"dst": ("10.0.0.300",)}, "not an IPv4 or IPv6"),
    ({"dst": ("nonsense",)}, "not an IPv4 or IPv6"),
    ({"dport": 70000}, "--dport must be 1-65535"),
    ({"sport": 0}, "--sport must be 1-65535"),
    ({"protocol": "sctp"}, "--protocol must be one of"),
    ({"protocol": "icmp", "dport": 80}, "need --protocol tcp or udp"),
    ({"protocol": "icmpv6", "dst": ("10.0.0.1",)}, "exclude each other"),
    ({"direction": "sideways"}, "--direction must be one of"),
    ({"protect": ("10.0.0.1:99999",)}, "port must be 1-65535"),
    ({"netns": "a", "pid": 5}, "at most one of"),
])
def test_bad_selectors(kwargs: dict[str, object], fragment: str) -> None:
    with pytest.raises(SpecError, match=fragment):
        PartitionSpec(iface="eth0", **kwargs)  # type: ignore[arg-type]


def test_kind_validation() -> None:
    with pytest.raises(SpecError, match="reorder needs a delay"):
        ReorderSpec(iface="eth0", percent=25)
    with pytest.raises(SpecError, match="above 0 and at most 100"):
        CorruptSpec(iface="eth0", percent=101)
    with pytest.raises(SpecError, match="exactly one of --percent and --ge"):
        LossSpec(iface="eth0", percent=5, ge=(1.0, 2.0))
    with pytest.raises(SpecError, match="--distribution needs --jitter"):
        LatencySpec(iface="eth0", ms=10, distribution="normal")
    with pytest.raises(SpecError, match="out of range: tbf takes 8kbit"):
        RateSpec(iface="eth0", rate="10bit")
    with pytest.raises(SpecError, match="not a rate"):
        RateSpec(iface="eth0", rate="fast")


def test_rate_and_ge_options() -> None:
    assert parse_rate("1mbit") == 1_000_000 and parse_rate("10mbps") == 80_000_000
    opts = RateFault(RateSpec(iface="eth0", rate="1mbit")).leaf_options()
    assert opts == {"rate": 125_000, "burst": 3000, "limit": 31250}  # bytes per second
    on_loopback = RateFault(RateSpec(iface="lo", rate="1mbit")).leaf_options(mtu=65536)
    assert on_loopback["burst"] >= 65536  # a bucket smaller than one packet never sends it
    ge = LossFault(LossSpec(iface="eth0", ge=(5.0, 50.0))).leaf_options()
    assert ge == {"gemodel": (5.0, 50.0, 100.0, 0.0)}


def test_spec_round_trips_through_json_lists() -> None:
    spec = PartitionSpec(iface="eth0", dst=("10.0.0.0/8",), protect=("10.1.1.1:22",))
    data = spec.to_dict()
    data["dst"] = list(data["dst"])  # as it comes back from a journal record
    data["protect"] = list(data["protect"])
    assert PartitionSpec.from_dict(data) == spec


@pytest.mark.parametrize(("args", "code", "fragment"), [
    (["partition", "--iface", "lo", "--dst", "10.0.0.0/33"], 2, "not an IPv4 or IPv6"),
    (["partition", "--iface", "lo", "--dport", "70000", "--protocol", "tcp"], 2, "1-65535"),
    (["corrupt", "--iface", "lo", "--percent", "101"], 2, "above 0 and at most 100"),
    (["duplicate", "--iface", "lo", "--percent", "101"], 2, "above 0 and at most 100"),
    (["reorder", "--iface", "lo", "--percent", "20"], 2, "reorder needs a delay"),
    (["rate", "--iface", "lo", "--rate", "lots"], 2, "not a rate"),
    (["loss", "--iface", "lo", "--ge", "a,b"], 2, "--ge"),
    (["partition", "--iface", "lo", "--container", "hc-no-such-container"], 4,
     "container hc-no-such-container"),
    (["partition", "--iface", "lo", "--pid", "999999999"], 4, "process 999999999 not found"),
    (["partition", "--iface", "lo", "--netns", "a", "--pid", "1"], 2, "at most one of"),
])
def test_bad_network_input_is_one_line(args: list[str], code: int, fragment: str,
                                       state_dir: Path) -> None:
    result = hostchaos("inject", *args, state_dir=state_dir)
    assert result.returncode == code, result.stderr
    assert fragment in one_line_error(result)


def test_protection_filters_follow_the_options(monkeypatch: pytest.MonkeyPatch) -> None:
    """SSH peer and --protect become pass filters within the selection; --no-protect-ssh drops
    the SSH one; neighbour discovery always passes (two masked ICMPv6 type matches)."""
    from hostchaos.faults.partition import PartitionFault

    monkeypatch.setenv("SSH_CONNECTION", "192.0.2.7 50000 192.0.2.1 22")
    ssh_keys = ["0x00060000/0x00ff0000+8", "0xc0000207/0xffffffff+16", "0x00160000/0xffff0000+20"]

    def passed(spec: PartitionSpec, direction: str = "egress") -> list[list[str]]:
        return [keys for _, keys in PartitionFault(spec).apply_filters(direction).passed]

    protected = passed(PartitionSpec(iface="eth0", netns="x"))
    assert ssh_keys in protected
    assert ["0x00003a00/0x0000ff00+4", "0x84000000/0xfc000000+40"] in protected
    assert ["0x00003a00/0x0000ff00+4", "0x88000000/0xfe000000+40"] in protected
    assert ssh_keys not in passed(PartitionSpec(iface="eth0", netns="x", protect_ssh=False))
    # ingress mirrors it: traffic *from* the operator to our port 22
    assert ["0x00060000/0x00ff0000+8", "0xc0000207/0xffffffff+12",
            "0x00000016/0x0000ffff+20"] in passed(PartitionSpec(iface="eth0", netns="x"),
                                                   "ingress")
    extra = passed(PartitionSpec(iface="eth0", netns="x", protect_ssh=False,
                                 protect=("198.51.100.0/24",)))
    assert ["0xc6336400/0xffffff00+16"] in extra
    # a selection that cannot contain the peer gets no pass filter for it
    assert ssh_keys not in passed(PartitionSpec(iface="eth0", netns="x", dst=("10.0.0.0/8",)))
