"""What traffic-control fields can hold, and the kernel's time unit for them.

The kernel keeps netem delays and tbf's bucket as *psched ticks* in 32-bit
fields; ``/proc/net/psched`` says how many ticks make a microsecond (15.625 on
every current kernel: one tick is 64 ns). Specs check their values against
these ranges, and the netlink codecs encode with the same functions, so a
value a spec accepts is exactly what the kernel receives.

Reads one small /proc file; imports nothing heavy.
"""

from __future__ import annotations

from functools import cache

U32_MAX = (1 << 32) - 1
U64_MAX = (1 << 64) - 1
USEC_PER_SEC = 1_000_000


@cache
def ticks_per_usec() -> float:
    """psched ticks per microsecond, as `tc` computes it (15.625 when /proc says nothing)."""
    try:
        with open("/proc/net/psched") as handle:
            t2us, us2t, clock_res, _ = (int(v, 16) for v in handle.read().split()[:4])
    except (OSError, ValueError):
        return 15.625
    return t2us / us2t * (clock_res / USEC_PER_SEC)


def usec_to_ticks(usec: float) -> int:
    """A duration in microseconds as psched ticks (netem's delay and jitter fields)."""
    return round(usec * ticks_per_usec())


def max_usec() -> float:
    """The longest duration a u32 tick field holds, in microseconds (about 274.9 s)."""
    return U32_MAX / ticks_per_usec()


def xmit_ticks(size_bytes: int, rate_bytes_per_s: int) -> int:
    """psched ticks to send ``size_bytes`` at ``rate_bytes_per_s`` (tbf's bucket, ``buffer``)."""
    return int(ticks_per_usec() * USEC_PER_SEC * size_bytes / rate_bytes_per_s)


def max_bucket_bytes(rate_bytes_per_s: int) -> int:
    """The largest tbf bucket (burst) whose send time at the rate fits tbf's u32 tick field."""
    size = min(U32_MAX, int(U32_MAX / (ticks_per_usec() * USEC_PER_SEC) * rate_bytes_per_s))
    while size > 0 and xmit_ticks(size, rate_bytes_per_s) > U32_MAX:  # float rounding
        size -= 1
    return size
