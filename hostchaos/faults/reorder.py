"""Kind ``reorder``: let a share of packets overtake the rest, with netem."""

from __future__ import annotations

import dataclasses
from typing import Any

from hostchaos.faults.base import require
from hostchaos.faults.options import option
from hostchaos.faults.traffic import NetworkFault
from hostchaos.faults.traffic_spec import ShareSpec, check_delay_ms, check_u32


@dataclasses.dataclass(frozen=True, kw_only=True)
class ReorderSpec(ShareSpec):
    """Send ``percent`` of the selected packets at once and delay the rest by ``ms``."""

    percent: float = option("--percent", "Share of packets sent at once; the rest wait --ms.",
                            required=True)
    ms: float | None = option("--ms", "Delay of the other packets (required).", default=None)
    gap: int = option("--gap", "Reorder every Nth packet instead of at random.", default=0)

    def __post_init__(self) -> None:
        super().__post_init__()  # percent and correlation
        require(self.ms is not None and self.ms != 0,
                "reorder needs a delay: add --ms (packets not sent early wait that long)")
        assert self.ms is not None
        check_delay_ms(self.ms, "--ms")
        check_u32(self.gap, "--gap")


class ReorderFault(NetworkFault):
    """Reorder selected IP packets (netem delay + reorder).

    Mechanism: netem ``delay D reorder P [gap N]``: P% of packets (every Nth
    with a gap) go out at once, the others wait D, so later packets overtake
    earlier ones. Reordering needs a delay: without --ms nothing is overtaken.

    Rollback: as for latency. Does not survive a reboot.

    Example: ``sudo hostchaos inject reorder --iface eth0 --percent 25 --ms 10``
    """

    spec_type = ReorderSpec
    spec: ReorderSpec

    def describe(self) -> str:
        s = self.spec
        gap = f", gap {s.gap}" if s.gap else ""
        return f"reorder {s.percent:g}% of {s.selector_label()} on {s.target_label()} " \
               f"({s.direction}; others delayed {s.ms:g} ms{gap})"

    def leaf_options(self, mtu: int = 1500) -> dict[str, Any]:
        s = self.spec
        return {"delay": round((s.ms or 0) * 1000), "prob_reorder": s.percent,
                "corr_reorder": s.correlation, "gap": s.gap}
