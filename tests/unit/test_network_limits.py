"""Issue 8 point 8: values the spec accepts must fit the kernel's fields, or fail as exit 2."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hostchaos.errors import SpecError
from hostchaos.faults.latency import LatencyFault, LatencySpec
from hostchaos.faults.loss import LossSpec
from hostchaos.faults.rate import RateFault, RateSpec
from hostchaos.faults.reorder import ReorderFault, ReorderSpec
from tests.support.cli import hostchaos, one_line_error

HUGE = "1" + "0" * 400


@pytest.mark.parametrize(("build", "fragment"), [
    (lambda: LatencySpec(iface="eth0", ms=0.0001), "--ms must be between 0.001 and 60000 ms"),
    (lambda: LatencySpec(iface="eth0", ms=float("nan")), "--ms must be between 0.001"),
    (lambda: LatencySpec(iface="eth0", ms=float("inf")), "--ms must be between 0.001"),
    (lambda: LatencySpec(iface="eth0", ms=1e308), "--ms must be between 0.001"),
    (lambda: LatencySpec(iface="eth0", ms=10, jitter_ms=0.0002),
     "--jitter must be 0 or between 0.001 and 60000 ms"),
    (lambda: LatencySpec(iface="eth0", ms=10, jitter_ms=float("nan")), "--jitter must be 0 or"),
    (lambda: LatencySpec(iface="eth0", ms=10, jitter_ms=1, correlation=float("inf")),
     "--correlation must be between 0 and 100"),
    (lambda: ReorderSpec(iface="eth0", percent=5, ms=10, gap=1 << 32),
     "--gap must be between 0 and 4294967295"),
    (lambda: ReorderSpec(iface="eth0", percent=5, ms=10, gap=-1), "--gap must be between 0"),
    (lambda: ReorderSpec(iface="eth0", percent=5, ms=0.0001), "--ms must be between 0.001"),
    (lambda: LossSpec(iface="eth0", percent=float("nan")),
     "--percent must be above 0 and at most 100"),
    (lambda: RateSpec(iface="eth0", rate=f"{HUGE}bit"),
     "--rate '1000000000000000000000000000000000000000' is out of range: tbf takes 8kbit to "
     "2^64-1 bytes/s"),
    (lambda: RateSpec(iface="eth0", rate="147573952589676412928bit"), "is out of range"),
    (lambda: RateSpec(iface="eth0", rate="1mbit", burst="99999999999"),
     "--burst must be between 1600 and"),
    # at 8kbit (1000 bytes/s) tbf's u32 of 64 ns ticks holds a bucket of at most ~275 kB
    (lambda: RateSpec(iface="eth0", rate="8kbit", burst="1m"),
     "--burst must be between 1600 and 274877 bytes at --rate 8kbit"),
    (lambda: RateSpec(iface="eth0", rate="1mbit", limit="5000000000"),
     "--limit must be between 1600 and 4294967295 bytes"),
    (lambda: RateSpec(iface="eth0", rate="1mbit", limit=HUGE), "--limit must be between 1600"),
])
def test_values_beyond_the_kernels_fields_are_spec_errors(build: Any, fragment: str) -> None:
    with pytest.raises(SpecError) as caught:
        build()
    assert fragment in str(caught.value)
    assert "\n" not in str(caught.value)


def test_what_the_spec_accepts_encodes_exactly() -> None:
    from hostchaos.system import netem_codec, tc_units

    assert tc_units.ticks_per_usec() == 15.625  # every current kernel: 64 ns ticks
    smallest = LatencyFault(LatencySpec(iface="eth0", ms=0.001)).leaf_options()
    assert smallest["delay"] == 1  # microseconds
    assert netem_codec.get_parameters(smallest)["delay"] == 16  # never rounded down to 0
    longest = LatencyFault(LatencySpec(iface="eth0", ms=60_000, jitter_ms=60_000))
    params = netem_codec.get_parameters(longest.leaf_options())
    assert params["delay"] == params["jitter"] == 937_500_000 < tc_units.U32_MAX
    reorder = ReorderFault(ReorderSpec(iface="eth0", percent=5, ms=1,
                                       gap=tc_units.U32_MAX)).leaf_options()
    assert reorder["gap"] == tc_units.U32_MAX


@pytest.mark.parametrize(("rate", "rate64"), [("1mbit", None), ("40gbit", 5_000_000_000),
                                              ("34359738360bit", None),  # 2^32-1 bytes/s
                                              ("34359738368bit", 1 << 32)])
def test_tbf_uses_the_64_bit_rate_above_4_gigabytes_per_second(rate: str,
                                                               rate64: int | None) -> None:
    """Encoded through pyroute2 and decoded back, as the kernel would read it."""
    from pyroute2.netlink.rtnl.tcmsg import tcmsg

    from hostchaos.system import tbf_codec, tc_units

    tbf_codec.install()
    opts = RateFault(RateSpec(iface="eth0", rate=rate)).leaf_options()
    msg = tcmsg()
    msg["attrs"] = [["TCA_KIND", "tbf"], ["TCA_OPTIONS", tbf_codec.get_parameters(opts)]]
    msg.encode()
    back = tcmsg(msg.data)
    back.decode()
    options = back.get_attr("TCA_OPTIONS")
    parms = options.get_attr("TCA_TBF_PARMS")
    assert parms["rate"] == min(opts["rate"], tc_units.U32_MAX)
    assert options.get_attr("TCA_TBF_RATE64") == rate64
    assert options.get_attr("TCA_TBF_BURST") == opts["burst"]
    assert 0 <= parms["buffer"] <= tc_units.U32_MAX and parms["limit"] == opts["limit"]


def test_default_bucket_and_queue_fit_at_any_rate() -> None:
    from hostchaos.system import tc_units

    for rate in ("8kbit", "1gbit", "40gbit", "100000gbit", "147573952589676412920bit"):
        opts = RateFault(RateSpec(iface="lo", rate=rate)).leaf_options(mtu=65536)
        assert 1600 <= opts["burst"] <= tc_units.max_bucket_bytes(opts["rate"])
        assert opts["limit"] <= tc_units.U32_MAX
        assert tc_units.xmit_ticks(opts["burst"], opts["rate"]) <= tc_units.U32_MAX


@pytest.mark.parametrize(("args", "fragment"), [
    (["rate", "--rate", f"{HUGE}bit"], "--rate"),
    (["rate", "--rate", "1mbit", "--burst", "99999999999"], "--burst must be between"),
    (["rate", "--rate", "1mbit", "--limit", "5000000000"], "--limit must be between"),
    (["latency", "--ms", "0.0001"], "--ms must be between 0.001"),
    (["latency", "--ms", "nan"], "--ms must be between 0.001"),
    (["reorder", "--percent", "5", "--ms", "10", "--gap", str(1 << 40)], "--gap must be between"),
])
def test_cli_refuses_them_with_exit_2(args: list[str], fragment: str, state_dir: Path) -> None:
    result = hostchaos("inject", args[0], "--iface", "lo", *args[1:], state_dir=state_dir)
    assert result.returncode == 2, result.stderr
    assert fragment in one_line_error(result)
