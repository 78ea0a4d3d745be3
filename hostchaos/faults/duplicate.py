"""Kind ``duplicate``: send a share of packets twice with netem."""

from __future__ import annotations

import dataclasses
from typing import Any

from hostchaos.faults.traffic import ShareFault
from hostchaos.faults.traffic_spec import ShareSpec


@dataclasses.dataclass(frozen=True, kw_only=True)
class DuplicateSpec(ShareSpec):
    """Send ``percent`` of the selected packets twice."""


class DuplicateFault(ShareFault):
    """Send a share of selected IP packets twice (netem).

    Mechanism: netem ``duplicate`` in a class of the hostchaos tree.

    Rollback: as for latency. Does not survive a reboot.

    Example: ``sudo hostchaos inject duplicate --iface eth0 --percent 10``
    """

    spec_type = DuplicateSpec
    spec: DuplicateSpec
    verb = "duplicate"


    def leaf_options(self, mtu: int = 1500) -> dict[str, Any]:
        opts: dict[str, Any] = {"duplicate": self.spec.percent}
        if self.spec.correlation:
            opts["dup_corr"] = self.spec.correlation
        return opts
