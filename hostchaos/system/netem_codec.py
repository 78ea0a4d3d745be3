"""netem options for pyroute2, complete enough for hostchaos.

pyroute2 0.9.7 encodes delay, jitter, loss, duplicate, reorder, corrupt,
correlations and rate, but not the two attributes a chaos tool needs most
after those: the delay distribution table (``TCA_NETEM_DELAY_DIST``) and the
Gilbert-Elliott loss model (``TCA_NETEM_LOSS`` / ``NETEM_LOSS_GE``). This module
is a drop-in replacement for pyroute2's ``sched_netem`` plugin that adds both;
:func:`install` registers it.

Distribution tables are iproute2's own ``*.dist`` files (inverse CDFs scaled
by 8192): data, not a `tc` subprocess.
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path
from typing import Any

from pyroute2.netlink import nla
from pyroute2.netlink.rtnl import TC_H_ROOT
from pyroute2.netlink.rtnl.tcmsg import plugins
from pyroute2.netlink.rtnl.tcmsg.common import get_rate, percent2u32

from hostchaos.errors import PreconditionError
from hostchaos.system.tc_units import usec_to_ticks

parent = TC_H_ROOT

DIST_DIRS = ("/usr/lib/x86_64-linux-gnu/tc", "/usr/lib/tc", "/usr/lib64/tc", "/usr/share/tc")
DISTRIBUTIONS = ("normal", "pareto", "paretonormal", "uniform")


def distribution_table(name: str) -> bytes | None:
    """The kernel's table for ``name`` as packed int16, or None for uniform (the default)."""
    if name == "uniform":
        return None
    for directory in DIST_DIRS:
        path = Path(directory) / f"{name}.dist"
        if path.is_file():
            values = [int(v) for line in path.read_text().splitlines()
                      for v in line.partition("#")[0].split()]
            return struct.pack(f"={len(values)}h", *values)
    raise PreconditionError(
        f"netem distribution table {name}.dist not found in {', '.join(DIST_DIRS)} "
        "(apt-get install iproute2)"
    )


def get_parameters(kwarg: dict[str, Any]) -> dict[str, Any]:
    attrs: list[list[Any]] = []
    opts: dict[str, Any] = {
        "delay": usec_to_ticks(kwarg.get("delay", 0)),  # microseconds, as the spec checked
        "jitter": usec_to_ticks(kwarg.get("jitter", 0)),
        "limit": kwarg.get("limit", 1000),
        "loss": percent2u32(kwarg.get("loss", 0)),
        "gap": kwarg.get("gap", 0),
        "duplicate": percent2u32(kwarg.get("duplicate", 0)),
        "attrs": attrs,
    }
    corr = {k: percent2u32(kwarg.get(k, 0)) for k in ("delay_corr", "loss_corr", "dup_corr")}
    if any(corr.values()):
        attrs.append(["TCA_NETEM_CORR", corr])
    if kwarg.get("prob_reorder"):
        # the kernel reorders only with a gap; like tc, a missing gap means 1 (any packet)
        opts["gap"] = kwarg.get("gap") or 1
        attrs.append(["TCA_NETEM_REORDER", {
            "prob_reorder": percent2u32(kwarg["prob_reorder"]),
            "corr_reorder": percent2u32(kwarg.get("corr_reorder", 0))}])
    if kwarg.get("prob_corrupt"):
        attrs.append(["TCA_NETEM_CORRUPT", {
            "prob_corrupt": percent2u32(kwarg["prob_corrupt"]),
            "corr_corrupt": percent2u32(kwarg.get("corr_corrupt", 0))}])
    if kwarg.get("gemodel"):
        p, r, one_minus_h, one_minus_k = kwarg["gemodel"]
        attrs.append(["TCA_NETEM_LOSS", {"attrs": [["NETEM_LOSS_GE", {
            "p": percent2u32(p), "r": percent2u32(r),
            "h": percent2u32(100 - one_minus_h), "k1": percent2u32(one_minus_k)}]]}])
    if kwarg.get("distribution"):
        table = distribution_table(kwarg["distribution"])
        if table is not None:
            attrs.append(["TCA_NETEM_DELAY_DIST", table])
    if kwarg.get("rate"):
        attrs.append(["TCA_NETEM_RATE", {"rate": get_rate(kwarg["rate"]), "packet_overhead": 0,
                                         "cell_size": 0, "cell_overhead": 0}])
    return opts


class options(nla):
    nla_map = (
        ("TCA_NETEM_UNSPEC", "none"),
        ("TCA_NETEM_CORR", "netem_corr"),
        ("TCA_NETEM_DELAY_DIST", "cdata"),
        ("TCA_NETEM_REORDER", "netem_reorder"),
        ("TCA_NETEM_CORRUPT", "netem_corrupt"),
        ("TCA_NETEM_LOSS", "netem_loss"),
        ("TCA_NETEM_RATE", "netem_rate"),
    )
    fields = (("delay", "I"), ("limit", "I"), ("loss", "I"), ("gap", "I"),
              ("duplicate", "I"), ("jitter", "I"))

    class netem_corr(nla):
        fields = (("delay_corr", "I"), ("loss_corr", "I"), ("dup_corr", "I"))

    class netem_reorder(nla):
        fields = (("prob_reorder", "I"), ("corr_reorder", "I"))

    class netem_corrupt(nla):
        fields = (("prob_corrupt", "I"), ("corr_corrupt", "I"))

    class netem_rate(nla):
        fields = (("rate", "I"), ("packet_overhead", "i"), ("cell_size", "I"),
                  ("cell_overhead", "i"))

    class netem_loss(nla):
        nla_map = (("NETEM_LOSS_UNSPEC", "none"), ("NETEM_LOSS_GI", "gimodel"),
                   ("NETEM_LOSS_GE", "gemodel"))

        class gimodel(nla):
            fields = (("p13", "I"), ("p31", "I"), ("p32", "I"), ("p14", "I"), ("p23", "I"))

        class gemodel(nla):
            fields = (("p", "I"), ("r", "I"), ("h", "I"), ("k1", "I"))


def install() -> None:
    """Make pyroute2 use this module for qdisc kind ``netem``."""
    plugins["netem"] = sys.modules[__name__]
