"""tbf options for pyroute2, with rates above 4 GB/s (34 Gbit/s).

pyroute2 0.9.7's ``sched_tbf`` plugin puts the rate only in ``tc_tbf_qopt``'s
32-bit bytes-per-second field, so ``40gbit`` does not fit, and it leaves the
bucket size to be derived from a tick count. This drop-in replacement does
what `tc` does: the 32-bit field saturates and ``TCA_TBF_RATE64`` carries the
real rate (kernels since 3.13), and ``TCA_TBF_BURST`` gives the bucket in
bytes so the kernel does not round it through ticks. :func:`install`
registers it.

Parameters (already validated by the spec, see :mod:`hostchaos.system.tc_units`):
``rate`` in bytes per second, ``burst`` and ``limit`` in bytes.
"""

from __future__ import annotations

import sys
from typing import Any

from pyroute2.netlink.rtnl import TC_H_ROOT
from pyroute2.netlink.rtnl.tcmsg import plugins
from pyroute2.netlink.rtnl.tcmsg.common import nla_plus_rtab

from hostchaos.system.tc_units import U32_MAX, xmit_ticks

parent = TC_H_ROOT


def fix_request(request: dict[str, Any]) -> None:
    request.pop("rate", None)  # not a tcmsg field: it lives in the options only


def get_parameters(kwarg: dict[str, Any]) -> dict[str, Any]:
    rate, burst, limit = int(kwarg["rate"]), int(kwarg["burst"]), int(kwarg["limit"])
    parms = {"rate": min(rate, U32_MAX), "mtu": 0, "limit": limit,
             "buffer": xmit_ticks(burst, rate)}
    attrs: list[list[Any]] = [["TCA_TBF_PARMS", parms], ["TCA_TBF_RTAB", True],
                              ["TCA_TBF_BURST", burst]]
    if rate > U32_MAX:
        attrs.append(["TCA_TBF_RATE64", rate])
    return {"attrs": attrs}


class options(nla_plus_rtab):
    nla_map = (
        ("TCA_TBF_UNSPEC", "none"),
        ("TCA_TBF_PARMS", "tbf_parms"),
        ("TCA_TBF_RTAB", "rtab"),
        ("TCA_TBF_PTAB", "ptab"),
        ("TCA_TBF_RATE64", "uint64"),
        ("TCA_TBF_PRATE64", "uint64"),
        ("TCA_TBF_BURST", "uint32"),
        ("TCA_TBF_PBURST", "uint32"),
        ("TCA_TBF_PAD", "hex"),
    )

    class tbf_parms(nla_plus_rtab.parms):
        fields = (
            ("rate_cell_log", "B"), ("rate___reserved", "B"), ("rate_overhead", "H"),
            ("rate_cell_align", "h"), ("rate_mpu", "H"), ("rate", "I"),
            ("peak_cell_log", "B"), ("peak___reserved", "B"), ("peak_overhead", "H"),
            ("peak_cell_align", "h"), ("peak_mpu", "H"), ("peak", "I"),
            ("limit", "I"), ("buffer", "I"), ("mtu", "I"),
        )


def install() -> None:
    """Make pyroute2 use this module for qdisc kind ``tbf``."""
    plugins["tbf"] = sys.modules[__name__]
