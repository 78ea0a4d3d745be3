"""Kind ``rate``: limit bandwidth with a token bucket (tbf)."""

from __future__ import annotations

import dataclasses
from typing import Any

from hostchaos.errors import SpecError
from hostchaos.faults.base import require
from hostchaos.faults.options import option
from hostchaos.faults.traffic import NetworkFault
from hostchaos.faults.traffic_spec import NetworkSpec
from hostchaos.quantities import parse_rate, parse_size

MIN_RATE_BITS = 8000
#: the smallest token bucket and queue: one full-size packet
MIN_BUCKET_BYTES = 1600


def tbf_rate(text: str) -> int:
    """Bits per second, within what tbf's 64-bit rate of bytes per second carries."""
    from hostchaos.system.tc_units import U64_MAX

    return parse_rate(text, minimum=MIN_RATE_BITS, maximum=U64_MAX * 8 + 7,
                      limits="tbf takes 8kbit to 2^64-1 bytes/s (about 147 Ebit/s)")


def _bytes_within(text: str, flag: str, high: int, why: str = "") -> int:
    """A size for a tbf field: one full-size packet up to ``high`` bytes."""
    try:
        value = parse_size(text, what=flag)
    except SpecError as exc:
        if "too large" not in str(exc):
            raise
        value = high + 1
    require(MIN_BUCKET_BYTES <= value <= high,
            f"{flag} must be between {MIN_BUCKET_BYTES} and {high} bytes{why}, "
            f"got {text[:40]}")
    return value


@dataclasses.dataclass(frozen=True, kw_only=True)
class RateSpec(NetworkSpec):
    """Limit the selected traffic to ``rate`` with a token bucket."""

    rate: str = option("--rate", "Bandwidth: 1mbit, 500kbit, 10mbps (bytes/s) ...",
                       required=True, metavar="RATE")
    burst: str | None = option("--burst", "Token bucket size (default rate/250, at least "
                               "3000 bytes).", default=None, metavar="SIZE")
    limit: str | None = option("--limit", "Queue length in bytes (default: 250 ms at the "
                               "rate).", default=None, metavar="SIZE")

    def __post_init__(self) -> None:
        from hostchaos.system.tc_units import U32_MAX, max_bucket_bytes

        super().__post_init__()
        rate_bytes = tbf_rate(self.rate) // 8
        if self.burst is not None:
            # tbf keeps the bucket as a u32 of bytes and as a u32 of 64 ns ticks at the rate
            _bytes_within(self.burst, "--burst", max_bucket_bytes(rate_bytes),
                          f" at --rate {self.rate} (one full-size packet up to what tbf can "
                          "count)")
        if self.limit is not None:
            _bytes_within(self.limit, "--limit", U32_MAX)


class RateFault(NetworkFault):
    """Limit the bandwidth of selected traffic (tbf, no netem needed).

    Mechanism: a tbf leaf (rate, burst, queue limit) in a class of the
    hostchaos HTB tree; tbf rather than netem's rate so it works on kernels
    without sch_netem. Rates above 4 GB/s use tbf's 64-bit rate attribute.
    Default burst is rate/250 (at least 3000 bytes and one MTU), default
    queue limit holds 250 ms at the rate.

    Rollback: as for latency. Does not survive a reboot.

    Example: ``sudo hostchaos inject rate --iface eth0 --rate 1mbit --for 10m``
    """

    spec_type = RateSpec
    spec: RateSpec
    leaf_kind = "tbf"
    needs = ("root", "sch_tbf", "sch_htb", "cls_u32")

    def describe(self) -> str:
        s = self.spec
        return f"limit {s.selector_label()} on {s.target_label()} ({s.direction}) to {s.rate}"

    def leaf_options(self, mtu: int = 1500) -> dict[str, Any]:
        from hostchaos.system.tc_units import U32_MAX, max_bucket_bytes

        s = self.spec
        rate = tbf_rate(s.rate) // 8
        # tbf never sends a packet larger than its bucket: hold at least one MTU (lo: 64 KiB)
        burst = parse_size(s.burst, what="--burst") if s.burst else min(
            max(3000, rate // 250, mtu + 14), max_bucket_bytes(rate))
        limit = parse_size(s.limit, what="--limit") if s.limit else min(
            max(3 * burst, rate // 4), U32_MAX)
        return {"rate": rate, "burst": burst, "limit": limit}
