"""A network namespace as tc sees it: its interfaces' traffic trees and hostchaos's IFBs.

:func:`open_namespace` enters a namespace by path (a netlink socket opened
inside it, never by switching this process's namespace) and yields a
:class:`Namespace`; ingress faults go through an IFB device per interface,
``hcifb<index>``, that only hostchaos creates and only its own faults reuse.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pyroute2.netlink.exceptions import NetlinkError

from hostchaos.errors import ConflictError, TargetNotFoundError
from hostchaos.system.netlink import (
    ETH_P_IP,
    ETH_P_IPV6,
    IFB_PREFIX,
    INGRESS_HANDLE,
    NETNS_DIR,
    TC_H_INGRESS,
    QdiscInfo,
    TrafficTree,
    _Boundary,
    socket_in_netns,
)
from hostchaos.system.rtnl import Rtnl


def netns_exists(name: str) -> bool:
    return os.path.exists(os.path.join(NETNS_DIR, name))


class Namespace(_Boundary):
    """An open rtnetlink connection to one network namespace."""

    def __init__(self, ipr: Any, where: str, path: str | None = None) -> None:
        self._ipr = ipr
        self.where = where
        self.path = path
        self.label = f"network namespace {where}"

    def index_of(self, iface: str) -> int | None:
        found = self._ipr.interface(iface)
        return found[0] if found else None

    def tree(self, iface: str) -> TrafficTree:
        found = self._ipr.interface(iface)
        if found is None:
            raise TargetNotFoundError(f"interface {iface} not found (network namespace: "
                                      f"{self.where})")
        index, mtu = found
        return TrafficTree(self._ipr, index, iface, self.where, self.path, mtu=mtu or None)

    # -- ingress through an IFB device -------------------------------------
    @staticmethod
    def ifb_name(iface_index: int) -> str:
        return f"{IFB_PREFIX}{iface_index}"

    def ifb_for(self, iface: str) -> tuple[str, int]:
        """(name of the IFB hostchaos uses for ``iface``, ``iface``'s index)."""
        index = self.tree(iface).index
        return self.ifb_name(index), index

    def ingress_qdisc(self, index: int) -> QdiscInfo | None:
        for msg in self._call("read qdiscs", self._ipr.get_qdiscs, index=index, brief=True):
            if msg["parent"] == TC_H_INGRESS:
                return QdiscInfo(str(msg.get_attr("TCA_KIND")), msg["handle"], msg["parent"])
        return None

    def check_ifb_free(self, iface: str, *, ours: bool) -> None:
        """Refuse an IFB or ingress qdisc on ``iface`` that no open hostchaos fault set up.

        ``ours``: an open fault in this namespace noted the IFB, so it and the
        ingress qdisc feeding it may be shared.
        """
        if ours:
            return
        name, index = self.ifb_for(iface)
        inside = "" if self.where == "default" else f" inside network namespace {self.where}"
        if self.index_of(name) is not None:
            raise ConflictError(
                f"interface {name} (network namespace: {self.where}) already exists but no "
                "open hostchaos fault created it; hostchaos only uses an IFB it made itself: "
                f"if it is a leftover, remove it with `ip link del {name}`{inside}")
        if self.ingress_qdisc(index) is not None:
            raise ConflictError(
                f"interface {iface} (network namespace: {self.where}) already has an ingress "
                "qdisc that hostchaos did not set up; remove it to inject ingress faults "
                f"(`tc qdisc del dev {iface} ingress`{inside})")

    def ensure_ifb(self, iface: str) -> str:
        """Set up (or complete) the IFB fed by ``iface``'s ingress; returns its name.

        Call after :meth:`check_ifb_free`. Idempotent: whatever of the IFB, the
        ingress qdisc and the two redirects (IPv4, IPv6) is missing is added, and
        redirects left from an IFB that no longer exists are replaced.
        """
        name, index = self.ifb_for(iface)
        ifb_index = self.index_of(name)
        fresh = ifb_index is None
        if fresh:
            self._call("create ifb", self._ipr.link, "add", ifname=name, kind="ifb")
            ifb_index = self.index_of(name)
        self._call("bring up ifb", self._ipr.link, "set", index=ifb_index, state="up")
        if self.ingress_qdisc(index) is None:
            self._call("add qdisc ingress", self._ipr.tc, "add", "ingress", index,
                       INGRESS_HANDLE)
        present = {msg["info"] >> 16 for msg in self._call(
            "read filters", self._ipr.get_filters, index=index, parent=INGRESS_HANDLE) or []}
        for prio, family in ((1, ETH_P_IP), (2, ETH_P_IPV6)):
            if prio in present and not fresh:
                continue
            if prio in present:  # a redirect to the IFB this one replaces
                self._call("delete mirred filter", self._ipr.tc, "del-filter", index=index,
                           parent=INGRESS_HANDLE, info=(prio << 16) | socket.htons(family),
                           missing_ok=True)
            self._call("add mirred filter", self._ipr.tc, "add-filter", "u32", index,
                       parent=INGRESS_HANDLE, prio=prio, protocol=family, target=0x1,
                       keys=["0x0/0x0+0"],
                       action={"kind": "mirred", "direction": "egress", "action": "redirect",
                               "ifindex": ifb_index})
        return name

    def remove_ifb(self, name: str, iface_index: int | None) -> None:
        """Undo :meth:`ensure_ifb` from what was noted: the IFB ``name`` and the ingress
        qdisc of the interface that had ``iface_index``. Safe to repeat.

        The interface may have gone (its ingress qdisc went with it) or been
        renamed; the IFB is removed by its own name either way, unless a fault's
        class is still on it. Without ``iface_index`` (notes of older versions)
        the IFB's name says it.
        """
        if iface_index is None and name.removeprefix(IFB_PREFIX).isdigit():
            iface_index = int(name.removeprefix(IFB_PREFIX))
        ifb_index = self.index_of(name)
        if ifb_index is not None and TrafficTree(self._ipr, ifb_index, name,
                                                 self.where).used_slots():
            return  # another ingress fault still uses it
        if iface_index is not None and self.ingress_qdisc(iface_index) is not None:
            self._call("delete ingress qdisc", self._ipr.tc, "del", index=iface_index,
                       handle=INGRESS_HANDLE, parent=TC_H_INGRESS, missing_ok=True)
        if ifb_index is not None:
            self._call("delete ifb", self._ipr.link, "del", index=ifb_index, missing_ok=True)


@contextmanager
def open_namespace(path: str | None, where: str) -> Iterator[Namespace]:
    """Open the namespace at ``path`` (None: this process's), named ``where`` in messages."""
    from hostchaos.system import netem_codec, tbf_codec

    netem_codec.install()
    tbf_codec.install()
    try:
        ipr = Rtnl(socket_in_netns(path) if path else None)
    except FileNotFoundError as exc:
        raise TargetNotFoundError(f"network namespace {where} not found") from exc
    except (OSError, NetlinkError) as exc:
        raise TargetNotFoundError(f"cannot enter network namespace {where}: {exc}") from exc
    try:
        yield Namespace(ipr, where, path)
    finally:
        ipr.close()


def netns_path(name: str) -> str:
    if not netns_exists(name):
        raise TargetNotFoundError(f"network namespace {name} not found (see `ip netns list`)")
    return os.path.join(NETNS_DIR, name)


@contextmanager
def open_tree(iface: str, netns: str | None) -> Iterator[TrafficTree]:
    """Open ``iface`` in the named ``netns`` (None: the host's), or raise TargetNotFoundError."""
    path = netns_path(netns) if netns else None
    with open_namespace(path, netns or "default") as ns:
        yield ns.tree(iface)
