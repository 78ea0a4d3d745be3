"""Kind ``partition``: cut selected traffic off with netem."""

from __future__ import annotations

import dataclasses
from typing import Any

from hostchaos.faults.traffic import NetworkFault
from hostchaos.faults.traffic_spec import NetworkSpec


@dataclasses.dataclass(frozen=True, kw_only=True)
class PartitionSpec(NetworkSpec):
    """Drop all of the selected traffic."""


class PartitionFault(NetworkFault):
    """Cut selected traffic off entirely (100% loss, netem), in the chosen direction(s).

    Mechanism: netem ``loss 100%`` in a class of the hostchaos tree.
    Unselected traffic, ARP, neighbour discovery, the operator's SSH session
    and --protect peers keep flowing.

    Rollback: as for latency. Does not survive a reboot.

    Example: ``sudo hostchaos inject partition --iface eth0 --dst 10.0.3.0/24 --direction both``
    """

    spec_type = PartitionSpec
    spec: PartitionSpec

    def describe(self) -> str:
        s = self.spec
        return f"drop all {s.selector_label()} on {s.target_label()} ({s.direction})"

    def leaf_options(self, mtu: int = 1500) -> dict[str, Any]:
        return {"loss": 100}
