"""Traffic control over netlink (pyroute2): the hostchaos-owned qdisc tree.

One tree per interface, all handles under the reserved major ``0x4843``
("HC")::

    htb 4843: root, default 0      unmatched traffic goes through HTB's direct
     |                             queue: never shaped, never delayed
     +- class 4843:<slot>          one class per fault, rate = line rate
         +- <leaf> 49xx:           the fault itself (netem, tbf ...)
    filters on 4843:               u32 per fault and protocol at
                                   prio 1000 + 10*slot (+1 for IPv6)

HTB rather than prio: prio is not built into every kernel (this project's
build machine lacks it), HTB is everywhere, and its direct queue lets
unmatched traffic bypass shaping entirely.

Every netlink error is turned into a hostchaos error here and nowhere else.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from hostchaos.errors import ApplyError, ConflictError, PreconditionError, TargetNotFoundError

ROOT_MAJOR = 0x4843
ROOT_HANDLE = ROOT_MAJOR << 16
LEAF_MAJOR_BASE = 0x4900
MAX_SLOT = 250
TC_H_ROOT = 0xFFFFFFFF
ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
NETNS_DIR = "/run/netns"
CLONE_NEWNET = 0x40000000

#: Root qdiscs the kernel attaches by itself; replacing one is harmless because
#: deleting our root makes the kernel attach its default again.
KERNEL_DEFAULT_ROOTS = frozenset({"noqueue", "pfifo_fast", "fq_codel", "mq", "fq", "noop"})

# htb stores rates in bytes/s; 100 Gbit/s keeps a fault class from shaping.
LINE_RATE = "100gbit"


@dataclass(frozen=True)
class QdiscInfo:
    """One qdisc as the kernel reports it."""

    kind: str
    handle: int
    parent: int

    @property
    def is_root(self) -> bool:
        return self.parent == TC_H_ROOT

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "handle": f"{self.handle >> 16:x}:{self.handle & 0xFFFF:x}",
                "parent": self.parent}


def netns_exists(name: str) -> bool:
    return os.path.exists(os.path.join(NETNS_DIR, name))


def where(iface: str, netns: str | None) -> str:
    return f"interface {iface} (network namespace: {netns or 'default'})"


def _slot_class(slot: int) -> int:
    return ROOT_HANDLE | slot


def _leaf_handle(slot: int) -> int:
    return (LEAF_MAJOR_BASE + slot) << 16


def _filter_prio(slot: int, family: int) -> int:
    return 1000 + 10 * slot + (1 if family == ETH_P_IPV6 else 0)


class TrafficTree:
    """The hostchaos qdisc tree on one interface of one network namespace.

    Open it with :func:`open_tree`; every method talks to the kernel directly
    and keeps no cached state, so two processes never disagree about it.
    """

    def __init__(self, ipr: Any, index: int, iface: str, netns: str | None) -> None:
        self._ipr = ipr
        self.index = index
        self.iface = iface
        self.netns = netns

    # -- reading ---------------------------------------------------------
    def qdiscs(self) -> list[QdiscInfo]:
        out = []
        for msg in self._call("read qdiscs", self._ipr.get_qdiscs, index=self.index):
            out.append(QdiscInfo(str(msg.get_attr("TCA_KIND")), msg["handle"], msg["parent"]))
        return out

    def root(self) -> QdiscInfo | None:
        for qdisc in self.qdiscs():
            if qdisc.is_root:
                return qdisc
        return None

    def is_ours(self) -> bool:
        root = self.root()
        return root is not None and root.handle == ROOT_HANDLE and root.kind == "htb"

    def check_root_replaceable(self) -> QdiscInfo | None:
        """Raise ConflictError unless the root is ours or a kernel default. Returns the root."""
        root = self.root()
        if root is None or self.is_ours():
            return root
        if root.kind in KERNEL_DEFAULT_ROOTS and (root.handle >> 16) == 0:
            return root
        raise ConflictError(
            f"{where(self.iface, self.netns)} has a root qdisc set up by someone else "
            f"({root.kind} {root.handle >> 16:x}:); hostchaos will not replace it "
            "(remove it, or pass --force to snapshot and restore it)"
        )

    def used_slots(self) -> set[int]:
        used = set()
        for msg in self._call("read classes", self._ipr.get_classes, index=self.index):
            handle = msg["handle"]
            if handle >> 16 == ROOT_MAJOR and handle & 0xFFFF:
                used.add(handle & 0xFFFF)
        return used

    def free_slot(self) -> int:
        used = self.used_slots()
        for slot in range(1, MAX_SLOT + 1):
            if slot not in used:
                return slot
        raise ConflictError(f"{where(self.iface, self.netns)} already carries {MAX_SLOT} faults")

    def slot_stats(self, slot: int) -> dict[str, int] | None:
        """Kernel counters of one fault's class and leaf, or None if it is gone."""
        for msg in self._call("read classes", self._ipr.get_classes, index=self.index):
            if msg["handle"] == _slot_class(slot):
                return _stats(msg)
        return None

    def leaf_stats(self, slot: int) -> dict[str, int] | None:
        for msg in self._call("read qdiscs", self._ipr.get_qdiscs, index=self.index):
            if msg["handle"] == _leaf_handle(slot):
                return _stats(msg)
        return None

    # -- changing ----------------------------------------------------------
    def create_root(self) -> None:
        self._call(
            "add root htb", self._ipr.tc, "replace", "htb", self.index,
            ROOT_HANDLE, parent=TC_H_ROOT, default=0,
        )

    def remove_root(self) -> None:
        """Delete our root (the kernel puts its default back). Foreign roots are left alone."""
        if not self.is_ours():
            return
        self._call("delete root", self._ipr.tc, "del", index=self.index, handle=ROOT_HANDLE,
                   parent=TC_H_ROOT, missing_ok=True)

    def add_fault_class(self, slot: int, leaf_kind: str, leaf_options: dict[str, Any]) -> None:
        self._call(
            "add class", self._ipr.tc, "add-class", "htb", self.index, _slot_class(slot),
            parent=ROOT_HANDLE, rate=LINE_RATE, quantum=60000,
        )
        self._call(
            f"add {leaf_kind}", self._ipr.tc, "add", leaf_kind, self.index, _leaf_handle(slot),
            parent=_slot_class(slot), **leaf_options,
        )

    def remove_fault_class(self, slot: int) -> None:
        self._call("delete class", self._ipr.tc, "del-class", index=self.index,
                   handle=_slot_class(slot), parent=ROOT_HANDLE, missing_ok=True)

    def add_match_all_filters(self, slot: int) -> None:
        """Send every IPv4 and IPv6 packet to the fault's class (non-IP, e.g. ARP, passes)."""
        for family in (ETH_P_IP, ETH_P_IPV6):
            self._call(
                "add filter", self._ipr.tc, "add-filter", "u32", self.index,
                parent=ROOT_HANDLE, prio=_filter_prio(slot, family), protocol=family,
                target=_slot_class(slot), keys=["0x0/0x0+0"],
            )

    def remove_filters(self, slot: int) -> None:
        for family in (ETH_P_IP, ETH_P_IPV6):
            self._call(
                "delete filter", self._ipr.tc, "del-filter", index=self.index,
                parent=ROOT_HANDLE, prio=_filter_prio(slot, family), protocol=family,
                missing_ok=True,
            )

    # -- the one error boundary -------------------------------------------
    def _call(self, what: str, func: Any, *args: Any, missing_ok: bool = False,
              **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except NetlinkError as exc:
            code = exc.code
            if missing_ok and code in (errno.ENOENT, errno.EINVAL, errno.ENODEV):
                return None
            if code == errno.ENOENT and what.startswith("add ") and what[4:] not in (
                "class", "filter", "root htb"
            ):
                raise PreconditionError(
                    f"the kernel has no qdisc {what[4:]!r} ({missing_module_hint(what[4:])})"
                ) from exc
            if code == errno.ENODEV:
                raise TargetNotFoundError(f"{where(self.iface, self.netns)} vanished") from exc
            raise ApplyError(
                f"kernel refused to {what} on {where(self.iface, self.netns)}: "
                f"{os.strerror(code) if isinstance(code, int) else exc}"
            ) from exc


def _stats(msg: Any) -> dict[str, int]:
    stats = msg.get_attr("TCA_STATS") or {}
    return {
        "bytes": int(stats.get("bytes", 0)),
        "packets": int(stats.get("packets", 0)),
        "drops": int(stats.get("drops", 0)),
        "overlimits": int(stats.get("overlimits", 0)),
        "qlen": int(stats.get("qlen", 0)),
    }


def missing_module_hint(kind: str) -> str:
    module = {"netem": "sch_netem", "tbf": "sch_tbf", "htb": "sch_htb"}.get(kind, f"sch_{kind}")
    return (
        f"kernel module {module} is missing on kernel {os.uname().release}: "
        f"install the distribution kernel's modules and run `modprobe {module}`"
    )


def _socket_in_netns(name: str) -> socket.socket:
    """A rtnetlink socket bound to namespace ``name``.

    A netlink socket stays in the namespace it was created in, so this thread
    steps into the namespace just long enough to create it. (pyroute2's own
    ``IPRoute(netns=...)`` forks a helper process for that: ~8 ms against ~0.3 ms.)
    SOCK_DGRAM because asyncio, under pyroute2, only accepts datagram sockets.
    """
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        target = os.open(os.path.join(NETNS_DIR, name), os.O_RDONLY | os.O_CLOEXEC)
        try:
            _setns(target)
            try:
                return socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, 0)  # NETLINK_ROUTE
            finally:
                _setns(own)
        finally:
            os.close(target)
    finally:
        os.close(own)


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


@contextmanager
def open_tree(iface: str, netns: str | None) -> Iterator[TrafficTree]:
    """Open ``iface`` in ``netns`` (None: the host namespace), or raise TargetNotFoundError."""
    if netns is not None and not netns_exists(netns):
        raise TargetNotFoundError(f"network namespace {netns} not found (see `ip netns list`)")
    try:
        ipr = IPRoute(use_socket=_socket_in_netns(netns)) if netns else IPRoute()
    except (OSError, NetlinkError) as exc:
        raise TargetNotFoundError(f"cannot enter network namespace {netns}: {exc}") from exc
    try:
        found = ipr.link_lookup(ifname=iface)
        if not found:
            raise TargetNotFoundError(f"interface {iface} not found (network namespace: "
                                      f"{netns or 'default'})")
        yield TrafficTree(ipr, int(found[0]), iface, netns)
    finally:
        ipr.close()
