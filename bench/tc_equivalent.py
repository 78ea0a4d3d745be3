"""The `tc` command lines that build exactly the tree the engine builds for a fault.

The older ``tc-same-tree`` variants of the benchmarks build an HTB root, the
fault's class and leaf and one match-all filter per address family: six
``tc`` calls. The engine's tree has more than that: the pass filters that keep
IPv6 neighbour discovery (and, where it applies, the operator's SSH session or
``--protect`` networks) out of the fault, and, for a selective fault, only the
selected families. :func:`commands` derives the ``tc`` calls from the fault's
own filter set (the function the engine uses), and :func:`check_identical`
proves the two trees are the same by comparing ``tc -d`` dumps of each, so the
``tc-identical-tree`` variant is the same tree built the way a script would.
"""

from __future__ import annotations

import re
import subprocess
from typing import Any

from hostchaos.faults import fault_class
from hostchaos.faults.base import Spec
from hostchaos.faults.traffic import NetworkFault
from hostchaos.sandbox import tc_configuration
from hostchaos.system.netlink import (
    DIRECT,
    ETH_P_IPV6,
    LINE_RATE,
    ROOT_HANDLE,
    _filter_prio,
    _leaf_handle,
    _slot_class,
)

SLOT = 1  # the first fault on an interface gets class 1
#: the tbf leaf the engine builds for ``RateSpec(rate="1mbit")`` on a 1500-byte MTU
RATE_1MBIT_LEAF = ["tbf", "rate", "1mbit", "burst", "3000", "limit", "31250"]


def _handle(value: int) -> str:
    return f"{value >> 16:x}:{value & 0xFFFF:x}" if value & 0xFFFF else f"{value >> 16:x}:"


def _matches(keys: list[str]) -> list[str]:
    """pyroute2's u32 keys (``0xVALUE/0xMASK+OFFSET``) as `tc`'s ``match u32 V M at OFF``."""
    out = []
    for key in keys:
        value_mask, offset = key.split("+")
        value, mask = value_mask.split("/")
        out += ["match", "u32", value, mask, "at", offset]
    return out


_MATCH = re.compile(r"^  match ([0-9a-f]{8})/([0-9a-f]{8}) at (\d+)$")


def _bytewise(dump: str) -> str:
    """``dump`` with each filter's u32 ``match`` lines as the bytes they match.

    pyroute2 does not send keys as written: it lays their masked bytes over the
    header and cuts 32-bit keys from the first masked byte on, so
    ``0x00003a00/0x0000ff00+4`` reaches the kernel as ``3a000000/ff000000 at 6``,
    which `tc` cannot even be asked for (it takes word-aligned offsets only).
    The kernel matches both alike; compared byte by byte they are the same.
    """
    out: list[str] = []
    pending: dict[int, tuple[int, int]] = {}

    def flush() -> None:
        if pending:
            out.append("  match bytes " + " ".join(
                f"{offset}:{value:02x}/{mask:02x}" for offset, (value, mask)
                in sorted(pending.items())))
            pending.clear()

    for line in dump.splitlines():
        found = _MATCH.match(line)
        if found is None:
            flush()
            out.append(line)
            continue
        value, mask, at = int(found[1], 16), int(found[2], 16), int(found[3])
        if mask == 0:
            pending.setdefault(-1, (0, 0))  # the match-all key
        for byte in range(4):
            shift = 8 * (3 - byte)
            if (mask >> shift) & 0xFF:
                pending[at + byte] = ((value >> shift) & 0xFF, (mask >> shift) & 0xFF)
    flush()
    return "\n".join(out)


def commands(spec: Spec, dev: str, leaf: list[str]) -> list[list[str]]:
    """``tc`` argument lists (without ``tc -n NS``) that build the engine's tree for
    ``spec`` on ``dev`` (its first fault there), ``leaf`` being the `tc` leaf with the
    same options; the last one takes the tree down again."""
    fault = fault_class(spec.kind)(spec)
    assert isinstance(fault, NetworkFault)
    filters = fault.apply_filters("egress")
    root, klass, leaf_handle = _handle(ROOT_HANDLE), _handle(_slot_class(SLOT)), \
        _handle(_leaf_handle(SLOT))
    out = [["qdisc", "add", "dev", dev, "root", "handle", root, "htb", "default", "0"],
           ["class", "add", "dev", dev, "parent", root, "classid", klass, "htb",
            "rate", LINE_RATE, "quantum", "60000"],
           ["qdisc", "add", "dev", dev, "parent", klass, "handle", leaf_handle, *leaf]]
    for selected, rules in ((False, filters.passed), (True, filters.selected)):
        target = _handle(_slot_class(SLOT) if selected else DIRECT)
        for family, keys in rules:
            out.append(["filter", "add", "dev", dev, "parent", root,
                        "protocol", "ipv6" if family == ETH_P_IPV6 else "ip",
                        "prio", str(_filter_prio(SLOT, family, selected)), "u32",
                        *_matches(keys), "flowid", target])
    out.append(["qdisc", "del", "dev", dev, "root"])
    return out


def run(ns: str, argv: list[str]) -> None:
    subprocess.run(["tc", "-n", ns, *argv], check=True, capture_output=True)


def build_and_remove(ns: str, calls: list[list[str]]) -> None:
    for argv in calls:
        run(ns, argv)


def check_identical(ns: str, dev: str, calls: list[list[str]], engine: Any, spec: Spec) -> None:
    """Raise AssertionError unless ``calls`` (all but the last) build the tree that
    ``engine.inject(spec)`` builds, as ``tc -d`` prints them (counters aside, u32
    keys compared byte by byte, see :func:`_bytewise`)."""
    record = engine.inject(spec, 60)
    try:
        by_engine = tc_configuration(ns, dev)
    finally:
        engine.rollback(record.id)
    for argv in calls[:-1]:
        run(ns, argv)
    try:
        by_tc = tc_configuration(ns, dev)
    finally:
        run(ns, calls[-1])
    by_tc, by_engine = _bytewise(by_tc), _bytewise(by_engine)
    assert by_tc == by_engine, f"tc built another tree:\n{by_tc}\nthe engine:\n{by_engine}"
