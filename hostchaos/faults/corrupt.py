"""Kind ``corrupt``: flip a bit in a share of packets with netem."""

from __future__ import annotations

import dataclasses
from typing import Any

from hostchaos.faults.traffic import ShareFault
from hostchaos.faults.traffic_spec import ShareSpec


@dataclasses.dataclass(frozen=True, kw_only=True)
class CorruptSpec(ShareSpec):
    """Flip a random bit in ``percent`` of the selected packets."""


class CorruptFault(ShareFault):
    """Flip a random bit in a share of selected IP packets (netem).

    Mechanism: netem ``corrupt`` in a class of the hostchaos tree; receivers
    drop the packets on their checksum.

    Rollback: as for latency. Does not survive a reboot.

    Example: ``sudo hostchaos inject corrupt --iface eth0 --percent 5 --protocol udp``
    """

    spec_type = CorruptSpec
    spec: CorruptSpec
    verb = "corrupt"


    def leaf_options(self, mtu: int = 1500) -> dict[str, Any]:
        return {"prob_corrupt": self.spec.percent, "corr_corrupt": self.spec.correlation}
