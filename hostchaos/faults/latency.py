"""Kind ``latency``: delay packets with netem."""

from __future__ import annotations

import dataclasses
from typing import Any

from hostchaos.faults.base import require
from hostchaos.faults.options import option
from hostchaos.faults.traffic import NetworkFault
from hostchaos.faults.traffic_spec import DISTRIBUTIONS, NetworkSpec, check_delay_ms
from hostchaos.quantities import check_percent


@dataclasses.dataclass(frozen=True, kw_only=True)
class LatencySpec(NetworkSpec):
    """Delay the selected packets by ``ms`` (+- ``jitter_ms``, shaped by ``distribution``)."""

    ms: float = option("--ms", "Delay in milliseconds (0.001 to 60000).", required=True)
    jitter_ms: float = option("--jitter", "Random variation of the delay, in milliseconds.",
                              default=0.0)
    correlation: float = option("--correlation", "Percent correlation of successive delay "
                                "variations (needs --jitter).", default=0.0)
    distribution: str | None = option("--distribution", "Shape of the jitter (needs --jitter; "
                                      "default uniform).", default=None,
                                      choices=DISTRIBUTIONS)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_delay_ms(self.ms, "--ms")
        check_delay_ms(self.jitter_ms, "--jitter", allow_zero=True)
        check_percent(self.correlation, "--correlation", allow_zero=True)
        require(not self.correlation or self.jitter_ms > 0,
                "--correlation needs --jitter (it correlates successive delay variations)")
        if self.distribution is not None:
            require(self.distribution in DISTRIBUTIONS,
                    f"--distribution must be one of {', '.join(DISTRIBUTIONS)}")
            require(self.jitter_ms > 0, "--distribution needs --jitter (it shapes the jitter)")


class LatencyFault(NetworkFault):
    """Delay selected IP packets (netem).

    Mechanism: a netem leaf (delay, jitter, correlation, distribution table) in
    a class of the hostchaos HTB tree, fed by u32 filters for the selected IPv4
    and IPv6 traffic; ARP, IPv6 neighbour discovery and the operator's SSH
    session pass untouched. Ingress goes through the interface's IFB.

    Rollback: removes the filters and the class and, when no other hostchaos
    fault is left on the interface, the tree and IFB, so the interface's
    original root qdisc is back. Does not survive a reboot (nor the namespace).

    Example: ``sudo hostchaos inject latency --iface eth0 --ms 100 --jitter 10 --for 5m``
    """

    spec_type = LatencySpec
    spec: LatencySpec

    def describe(self) -> str:
        s = self.spec
        extra = f" +- {s.jitter_ms:g} ms" if s.jitter_ms else ""
        if s.distribution:
            extra += f" ({s.distribution})"
        if s.correlation:
            extra += f" ({s.correlation:g}% correlated)"
        return f"delay {s.selector_label()} on {s.target_label()} ({s.direction}) " \
               f"by {s.ms:g} ms{extra}"

    def leaf_options(self, mtu: int = 1500) -> dict[str, Any]:
        s = self.spec
        opts: dict[str, Any] = {"delay": round(s.ms * 1000), "jitter": round(s.jitter_ms * 1000)}
        if s.correlation:
            opts["delay_corr"] = s.correlation
        if s.distribution:
            opts["distribution"] = s.distribution
        return opts
