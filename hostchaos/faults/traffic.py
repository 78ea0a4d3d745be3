"""The mechanism every network kind shares: a class of its own in the hostchaos tc tree.

:class:`NetworkFault` puts a kind's leaf qdisc (netem or tbf) in a class of the
HTB tree hostchaos owns on the interface (egress) and/or on the interface's IFB
(ingress), u32 filters selecting its traffic, and pass filters for protected
traffic (the operator's SSH sessions, IPv6 neighbour discovery, ``--protect``)
that are checked first. A kind provides only ``leaf_options`` (and
``leaf_kind`` for tbf) and its describe line.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from hostchaos.config import Config
from hostchaos.errors import (
    HostchaosError,
    PreconditionError,
    RollbackError,
    TargetNotFoundError,
)
from hostchaos.faults.base import Fault, Peer
from hostchaos.faults.traffic_spec import (
    ND_TYPE_BLOCKS,
    NetworkSpec,
    ShareSpec,
    combine,
    parse_protect,
)

S = TypeVar("S", bound=NetworkSpec)

#: how long what preflight read of a tree may stand in for apply's own dump
SIGHTING_SECONDS = 0.5

if TYPE_CHECKING:
    from hostchaos.faults.network_namespace import Held, Prelude
    from hostchaos.journal import UndoLog
    from hostchaos.system.namespaces import NetnsIdentity
    from hostchaos.system.netlink import FilterSet, QdiscInfo
    from hostchaos.system.tc_namespace import Namespace
    from hostchaos.system.u32 import Match


SELECTORS_HELP = """\b
Selectors describe packets as they leave the interface (--dst is the remote
side); ingress mirrors them, so --dst X --direction both affects traffic to
and from X. No selector means all IPv4 and IPv6 traffic. ARP, IPv6
neighbour discovery, the operator's SSH session and --protect peers are
never touched. The interface's original root qdisc (a foreign one only with
--force) is put back exactly on rollback."""


def resolved(spec: S) -> S:
    """``spec`` with its target pinned: a container's pid, a pid's start time, a host's addresses.

    Asks container runtimes and DNS, so it runs before the state lock.
    """
    from hostchaos.system.procs import start_ticks

    changes: dict[str, Any] = {}
    pid = spec.pid
    if spec.container is not None and spec.pid_start_ticks is None:
        from hostchaos.system.containers import container_pid

        pid, _runtime = container_pid(spec.container)
    if pid is not None and spec.pid_start_ticks is None:
        ticks = start_ticks(pid)
        if ticks is None:
            raise TargetNotFoundError(f"process {pid} not found")
        changes.update(pid=pid, pid_start_ticks=ticks)
    if spec.hosts and not changes.get("dst"):
        extra = [address for name in spec.hosts for address in resolve_host(name)]
        changes["dst"] = tuple(dict.fromkeys([*spec.dst, *extra]))
    return dataclasses.replace(spec, **changes) if changes else spec


def resolve_host(name: str) -> list[str]:
    """Every A and AAAA address of ``name``, as host CIDRs."""
    import socket

    try:
        infos = socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as exc:
        raise TargetNotFoundError(f"host {name} does not resolve ({exc})") from exc
    addresses = sorted({str(info[4][0]).split("%")[0] for info in infos})
    return [f"{a}/128" if ":" in a else f"{a}/32" for a in addresses]


class NetworkFault(Fault):
    """Common mechanism of the network kinds (see each kind's docstring).

    The target namespace is known by its identity (see
    :mod:`hostchaos.faults.network_namespace`): resolved at inject, noted before
    the first change, and held by a handle until rollback, which works from the
    notes alone.
    """

    spec: NetworkSpec
    #: the target namespace: resolved before inject, read from the notes for rollback
    identity: NetnsIdentity | None = None
    #: how the target was named (``default``, ``blue``, ``pid 42``), for messages
    label: str | None = None
    #: the egress qdiscs preflight read, and where and when (see :meth:`_sighted`)
    _sighting: tuple[NetnsIdentity, str, float, list[QdiscInfo]] | None = None
    #: the namespace preflight opened, and when (see :meth:`_take_held`)
    _held: tuple[Held, float] | None = None

    needs = ("root", "sch_netem", "sch_htb", "cls_u32")
    notes_first = True
    needs_with: ClassVar[dict[str, tuple[str, ...]]] = {
        "--direction ingress or both": ("ifb", "sch_ingress", "act_mirred")}
    help_epilog = SELECTORS_HELP

    # -- what each kind provides ---------------------------------------------
    leaf_kind: ClassVar[str] = "netem"

    def leaf_options(self, mtu: int = 1500) -> dict[str, Any]:
        """The leaf qdisc's settings; ``mtu`` is the device's (a token bucket must hold one)."""
        raise NotImplementedError

    @classmethod
    def warm_up(cls) -> None:
        import hostchaos.faults.network_namespace
        import hostchaos.system.netlink
        import hostchaos.system.u32  # noqa: F401

    # -- target ----------------------------------------------------------------
    def resolve(self) -> None:
        from hostchaos.faults import network_namespace

        self.spec = resolved(self.spec)
        self.identity = network_namespace.resolve(self.spec)
        self.label = self.spec.where()

    def preflight(self) -> None:
        from hostchaos.faults import network_namespace
        from hostchaos.system import capabilities

        root = capabilities.is_root()
        if not root.ok:
            raise PreconditionError(f"network faults need root ({root.detail}): {root.fix}")
        self._release_held()
        held = network_namespace.hold(self.spec, self.identity)
        try:
            ns = held.ns
            tree = ns.tree(self.spec.iface)
            if "egress" in self.spec.directions() and not self.spec.force:
                qdiscs = tree.egress_qdiscs()
                foreign = tree.foreign_root(qdiscs)
                if foreign is not None:
                    tree.check_root_replaceable(foreign)  # raises ConflictError
                if self.identity is not None:
                    self._sighting = (self.identity, self.spec.iface, time.monotonic(), qdiscs)
            if "ingress" in self.spec.directions():
                name, _index = ns.ifb_for(self.spec.iface)
                ns.check_ifb_free(self.spec.iface, ours=self._ifb_of_peer(name))
            self._preflight_modules()
        except BaseException:
            held.close()
            raise
        if self.identity is None:
            held.close()
        else:  # apply, if it follows at once, works through it (see _take_held)
            self._held = (held, time.monotonic())

    def _preflight_modules(self) -> None:
        from hostchaos.system import capabilities

        if self.leaf_kind == "netem":
            netem = capabilities.netem()
            if not netem.ok:
                raise PreconditionError(
                    f"kernel module sch_netem is not available: {netem.detail}; {netem.fix}")
        if "ingress" in self.spec.directions():
            ifb = capabilities.ifb()
            if not ifb.ok:
                raise PreconditionError(f"ingress faults need the ifb module: {ifb.detail}; "
                                        f"{ifb.fix}")

    def conflicts(self, peer: Peer) -> str | None:
        from hostchaos.faults.network_namespace import peer_identity

        other = peer.spec
        if not isinstance(other, NetworkSpec):
            return None
        theirs = peer_identity(peer)
        same = self.identity == theirs if self.identity and theirs else None
        if self.spec.overlaps(other, same_namespace=same):
            return (f"{other.selector_label()} on {other.target_label()} "
                    f"({other.direction})")
        return None

    # -- peers in the same namespace ----------------------------------------------
    def _peer_notes_here(self, step: str) -> list[dict[str, Any]]:
        """``step`` notes of the other open faults in this fault's namespace."""
        from hostchaos.faults.network_namespace import same_namespace

        return [{"fault": peer.id, **note} for peer in self.peers
                if same_namespace(self.identity, self.label, self.spec, peer)
                for note in peer.notes if note.get("step") == step]

    def _claimed_slots(self, device: str) -> set[int]:
        return {int(n["slot"]) for n in self._peer_notes_here("class")
                if n.get("device") == device}

    def _inherited_snapshot(self, device: str) -> dict[str, list[str]] | None:
        for note in self._peer_notes_here("root"):
            if note.get("device") == device and note.get("snapshot"):
                snapshot: dict[str, list[str]] = note["snapshot"]
                return snapshot
        return None

    def _ifb_of_peer(self, name: str) -> bool:
        """Did another open fault in this namespace set up the IFB ``name``?"""
        return any(n.get("name") == name for n in self._peer_notes_here("ifb"))

    # -- protection --------------------------------------------------------------
    def _protected(self) -> list[Match]:
        """Egress view of traffic this fault must let through untouched."""
        from hostchaos.system import ssh
        from hostchaos.system.u32 import Match

        out: list[Match] = []
        for nd in ND_TYPE_BLOCKS:
            out.append(Match(6, 58, icmp_type=nd))
        peers: list[tuple[str, int]] = []
        if self.spec.protect_ssh:
            peer = ssh.ssh_connection_peer()
            if peer:
                peers.append(peer)
            if self.spec.pid is None and self.spec.netns is None:
                peers.extend(ssh.sshd_session_peers())
        for address, server_port in peers:
            client = ipaddress.ip_network(address)
            out.append(Match(client.version, 6, dst=client, sport=server_port))
        for entry in self.spec.protect:
            net, port = parse_protect(entry)
            if port is None:
                out.append(Match(net.version, dst=net))
            else:
                for proto in (6, 17):
                    out.append(Match(net.version, proto, dst=net, dport=port))
                    out.append(Match(net.version, proto, dst=net, sport=port))
        return out

    def apply_filters(self, direction: str) -> FilterSet:
        """The pass and selected filters this fault installs for ``direction``."""
        from hostchaos.system.netlink import ETH_P_IP, ETH_P_IPV6, FilterSet

        selected = self.spec.matches()
        passed = [m for p in self._protected() for s in selected
                  if (m := combine(s, p)) is not None]
        if direction == "ingress":
            selected = [m.mirrored() for m in selected]
            passed = [m.mirrored() for m in passed]

        def rules(matches: list[Match]) -> list[tuple[int, list[str]]]:
            return [(ETH_P_IP if m.family == 4 else ETH_P_IPV6, m.keys()) for m in matches]

        return FilterSet(rules(passed), rules(selected))

    # -- apply ---------------------------------------------------------------------
    def apply(self, undo: UndoLog) -> None:
        from hostchaos.faults import network_namespace

        state_dir = undo.journal.state_dir if undo.journal else Config.load().state_dir
        with network_namespace.enter_for_apply(
                self.spec, self.identity, undo.record.id,
                state_dir / "netns", held=self._take_held()) as (ns, identity, prelude):
            self.identity, self.label = identity, self.spec.where()
            for direction in self.spec.directions():
                device = self.spec.iface
                if direction == "ingress":
                    name, index = ns.ifb_for(self.spec.iface)
                    ns.check_ifb_free(self.spec.iface, ours=self._ifb_of_peer(name))
                    prelude.note(undo, [("ifb", {"name": name, "iface": self.spec.iface,
                                                 "index": index})])
                    device = ns.ensure_ifb(self.spec.iface)
                self._apply_on(ns, undo, device, direction, prelude)

    def _apply_on(self, ns: Namespace, undo: UndoLog, device: str, direction: str,
                  prelude: Prelude) -> None:
        """Decide from one qdisc dump and the journal, note it all, then change in one batch.

        The notes (root, class, filters) are persisted by one write before the
        batch; rollback from them is right whatever part of the batch the
        kernel applied (filters go by priority, the class by slot, our root
        when no class is left on it).
        """
        tree = ns.tree(device)
        sighted = self._sighted(device, direction)
        qdiscs = sighted if sighted is not None else tree.egress_qdiscs()
        original = tree.root(qdiscs)
        notes: list[tuple[str, dict[str, Any]]] = []
        fresh = original is None or not original.is_hostchaos
        foreign = None
        if fresh:
            if sighted is None:  # preflight refused a sighted tree with a foreign root
                foreign = tree.foreign_root(qdiscs)
            if foreign is not None and not (self.spec.force and direction == "egress"):
                tree.check_root_replaceable(foreign)  # raises ConflictError
            notes.append(("root", {"device": device,
                                   "original": original.to_dict() if original else None,
                                   "snapshot": tree.snapshot() if foreign else None}))
        else:
            inherited = self._inherited_snapshot(device)
            if inherited is not None:  # whoever leaves last puts the original back
                notes.append(("root", {"device": device, "joined": True,
                                       "snapshot": inherited}))
        claimed = self._claimed_slots(device)
        # a tree of ours not yet made has no classes: only the journal's claims count
        slot = (min(set(range(1, len(claimed) + 2)) - claimed) if fresh
                else tree.free_slot(claimed))
        filters = self.apply_filters(direction)
        notes.append(("class", {"device": device, "slot": slot, "where": self.spec.where(),
                                "direction": direction}))
        notes.append(("filters", {"device": device, "slot": slot,
                                  "protected": len(filters.passed),
                                  "selected": len(filters.selected)}))
        prelude.note(undo, notes)
        if foreign is not None:
            tree.delete_foreign_root(foreign)
        tree.build_fault(slot, self.leaf_kind, self.leaf_options(tree.mtu()), filters,
                         create_root=fresh)

    def _take_held(self) -> Held | None:
        """The namespace preflight opened, if apply follows it within SIGHTING_SECONDS (under
        the same hold of the state lock); used once."""
        held, self._held = self._held, None
        if held is None:
            return None
        if time.monotonic() - held[1] > SIGHTING_SECONDS:
            held[0].close()
            return None
        return held[0]

    def _release_held(self) -> None:
        held, self._held = self._held, None
        if held is not None:
            held[0].close()

    def _sighted(self, device: str, direction: str) -> list[QdiscInfo] | None:
        """The egress qdiscs preflight read on ``device``, if apply follows it at once.

        Preflight and apply run under one hold of the state lock, so no other
        hostchaos command changed the tree between them; a change made meanwhile
        by anyone else races apply's own dump just the same. Used once, and only
        within SIGHTING_SECONDS, in the namespace preflight read.
        """
        if direction != "egress" or self._sighting is None:
            return None
        (identity, iface, when, qdiscs), self._sighting = self._sighting, None
        if (identity != self.identity or iface != device
                or time.monotonic() - when > SIGHTING_SECONDS):
            return None
        return qdiscs

    # -- rollback --------------------------------------------------------------------
    def rollback(self, undo: UndoLog) -> None:
        """Undo from the notes alone (``self.spec`` may be None)."""
        from hostchaos.faults import network_namespace
        from hostchaos.system.namespaces import NetnsIdentity

        note = network_namespace.netns_note(undo.record.undo)
        if note is None:
            self._rollback_without_netns_note(undo)
            return
        self.identity = NetnsIdentity.from_note(note)
        self.label = str(note.get("label") or "")
        with network_namespace.enter_noted(note) as ns:
            if ns is not None:  # None: the namespace is gone, and the fault with it
                self._undo_in(ns, undo)
        try:
            network_namespace.release(note, undo.record.id)
        except HostchaosError:
            pass  # the fault is out; sweep removes a handle left behind

    def _rollback_without_netns_note(self, undo: UndoLog) -> None:
        """Records written before the ``netns`` note existed: the spec says where."""
        from hostchaos.system import tc_namespace
        from hostchaos.system.namespaces import NetnsIdentity

        if self.spec is None:
            raise RollbackError(
                f"fault {undo.record.id} has no netns note (written by an older hostchaos) and "
                "its spec no longer validates, so its network namespace is unknown; remove its "
                "qdiscs by hand (`tc qdisc show`), then its record")
        self.label = self.spec.where()
        try:
            path = network_namespace_path(self.spec)
            self.identity = NetnsIdentity.of_path(path or "/proc/thread-self/ns/net")
            with tc_namespace.open_namespace(path, self.spec.where()) as ns:
                self._undo_in(ns, undo)
        except TargetNotFoundError:
            return  # namespace or process gone: as older versions judged it

    def _undo_in(self, ns: Namespace, undo: UndoLog) -> None:
        for note in reversed(undo.steps("class")):
            self._remove_class(ns, str(note["device"]), int(note["slot"]))
        for note in undo.steps("root"):
            if not undo.steps("class"):  # apply stopped before its class: tidy up here
                self._remove_tree_if_unused(ns, str(note["device"]))
            if note.get("snapshot"):
                self._restore_if_last(ns, str(note["device"]), note["snapshot"])
        for note in undo.steps("ifb"):
            name = str(note["name"])
            if self._ifb_of_peer(name):
                continue  # another fault in this namespace still feeds it
            index = note.get("index")  # older notes lack it
            ns.remove_ifb(name, int(index) if index is not None else None)

    def _remove_class(self, ns: Namespace, device: str, slot: int) -> None:
        try:
            tree = ns.tree(device)
        except TargetNotFoundError:
            return
        tree.remove_fault(slot, others=bool(self._claimed_slots(device)))

    def _restore_if_last(self, ns: Namespace, device: str,
                         snapshot: dict[str, list[str]]) -> None:
        try:
            tree = ns.tree(device)
        except TargetNotFoundError:
            return
        if not tree.is_ours() and not any(n.get("device") == device
                                          for n in self._peer_notes_here("class")):
            tree.restore(snapshot)

    def _remove_tree_if_unused(self, ns: Namespace, device: str) -> None:
        try:
            tree = ns.tree(device)
        except TargetNotFoundError:
            return
        if tree.is_ours() and not tree.used_slots() and not self._claimed_slots(device):
            tree.remove_root(known_ours=True)

    @classmethod
    def sweep_leftovers(cls, state_dir: Path, open_ids: set[str]) -> list[str]:
        """Release namespace handles whose fault is closed (its rollback could not)."""
        from hostchaos.system import namespaces

        removed = []
        for handle in namespaces.stale_handles(state_dir / "netns", open_ids):
            namespaces.release_handle(str(handle))
            removed.append(str(handle))
        return removed

    def observe(self, undo: UndoLog) -> dict[str, Any]:
        from hostchaos.faults import network_namespace
        from hostchaos.system import tc_namespace

        classes = undo.steps("class")
        if not classes:
            return {"present": False}
        out: dict[str, Any] = {"present": True, "directions": {}}
        note = network_namespace.netns_note(undo.record.undo)
        try:
            with (network_namespace.enter_noted(note) if note else
                  tc_namespace.open_namespace(network_namespace_path(self.spec),
                                         self.spec.where())) as ns:
                if ns is None:
                    return {"present": False, "problem": "its network namespace is gone"}
                for entry in classes:
                    tree = ns.tree(str(entry["device"]))
                    slot = int(entry["slot"])
                    counters = tree.slot_stats(slot)
                    out["present"] = out["present"] and counters is not None
                    out["directions"][entry.get("direction", "egress")] = {
                        "device": entry["device"], "class": counters,
                        self.leaf_kind: tree.leaf_stats(slot)}
        except TargetNotFoundError as exc:
            return {"present": False, "problem": str(exc)}
        first = next(iter(out["directions"].values()))
        out["class"] = first["class"]  # the egress (or only) direction, for quick reading
        return out


def network_namespace_path(spec: NetworkSpec) -> str | None:
    """The namespace path of a spec as older versions opened it (None: our own)."""
    from hostchaos.system import tc_namespace
    from hostchaos.system.procs import start_ticks

    if spec.netns:
        return tc_namespace.netns_path(spec.netns)
    if spec.pid is not None:
        ticks = start_ticks(spec.pid)
        if ticks is None or (spec.pid_start_ticks is not None and ticks != spec.pid_start_ticks):
            raise TargetNotFoundError(f"process {spec.pid} ({spec.where()}) is gone")
        return f"/proc/{spec.pid}/ns/net"
    return None



class ShareFault(NetworkFault):
    """A network kind acting on a share of the selected packets (corrupt, duplicate)."""

    spec: ShareSpec
    #: what is done to the share, for the describe line
    verb: ClassVar[str]

    def describe(self) -> str:
        s = self.spec
        return (f"{self.verb} {s.percent:g}% of {s.selector_label()} on {s.target_label()} "
                f"({s.direction})")
