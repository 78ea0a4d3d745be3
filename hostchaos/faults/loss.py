"""Kind ``loss``: drop a share of packets with netem."""

from __future__ import annotations

import dataclasses
from typing import Any

from hostchaos.errors import SpecError
from hostchaos.faults.base import require
from hostchaos.faults.options import option
from hostchaos.faults.traffic import NetworkFault
from hostchaos.faults.traffic_spec import NetworkSpec
from hostchaos.quantities import check_percent


def parse_ge(text: str) -> tuple[float, ...]:
    """``p,r[,1-h[,1-k]]`` percentages -> a tuple of floats."""
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise SpecError(f"--ge {text!r}: expected p,r[,1-h[,1-k]] as percentages") from None


@dataclasses.dataclass(frozen=True, kw_only=True)
class LossSpec(NetworkSpec):
    """Drop ``percent`` of the selected packets, or follow a Gilbert-Elliott model (``ge``)."""

    percent: float | None = option("--percent", "Share of packets to drop (0-100].",
                                   default=None)
    correlation: float = option("--correlation", "Percent correlation with the previous "
                                "packet's fate (bursty loss).", default=0.0)
    ge: tuple[float, ...] | None = option(
        "--ge", "Gilbert-Elliott model instead of --percent: P good->bad, R bad->good, 1-H "
        "loss in bad state (default 100), 1-K loss in good state (default 0), all "
        "percentages.", default=None, parse=parse_ge, metavar="P,R[,1-H[,1-K]]")

    def __post_init__(self) -> None:
        if isinstance(self.ge, list):
            object.__setattr__(self, "ge", tuple(self.ge))
        super().__post_init__()
        require((self.percent is None) != (self.ge is None),
                "give exactly one of --percent and --ge")
        if self.percent is not None:
            check_percent(self.percent, "--percent")
        check_percent(self.correlation, "--correlation", allow_zero=True)
        if self.ge is not None:
            require(len(self.ge) in (2, 3, 4), "--ge takes p,r[,1-h[,1-k]] (percentages)")
            for value in self.ge:
                check_percent(value, "--ge values", allow_zero=True)
            require(not self.correlation, "--correlation does not apply to --ge")


class LossFault(NetworkFault):
    """Drop a share of selected IP packets (netem).

    Mechanism: a netem leaf with random loss (optionally correlated) or a
    Gilbert-Elliott model (``--ge p,r[,1-h,1-k]``: p = good->bad, r = bad->good,
    1-h = loss in bad state (default 100), 1-k = loss in good state (default 0))
    in a class of the hostchaos HTB tree, fed by u32 filters for the selected
    traffic; ARP, neighbour discovery and the operator's SSH session are spared.

    Rollback: as for latency: the class and filters go, and with the last
    fault the tree and IFB. Does not survive a reboot.

    Example: ``sudo hostchaos inject loss --iface eth0 --percent 30 --for 2m``
    """

    spec_type = LossSpec
    spec: LossSpec

    def describe(self) -> str:
        s = self.spec
        if s.ge is not None:
            how = f"Gilbert-Elliott loss (p,r,1-h,1-k = {','.join(f'{v:g}' for v in s.ge)}%)"
        else:
            corr = f" ({s.correlation:g}% correlated)" if s.correlation else ""
            how = f"{s.percent:g}% loss{corr}"
        return f"{how} for {s.selector_label()} on {s.target_label()} ({s.direction})"

    def leaf_options(self, mtu: int = 1500) -> dict[str, Any]:
        s = self.spec
        if s.ge is not None:
            ge = (*s.ge, 100.0, 0.0)[:4] if len(s.ge) == 2 else (*s.ge, 0.0)[:4]
            return {"gemodel": ge}
        opts: dict[str, Any] = {"loss": s.percent}
        if s.correlation:
            opts["loss_corr"] = s.correlation
        return opts
