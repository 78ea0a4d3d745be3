"""Network faults: netem and tbf leaves in the hostchaos-owned tree of an interface.

Every network kind shares one target and selector model (:class:`NetworkSpec`)
and one mechanism (:class:`NetworkFault`): a class of its own in the HTB tree
of the interface (egress) and/or of the interface's IFB (ingress), u32 filters
selecting its traffic, and pass filters for protected traffic (the operator's
SSH sessions, IPv6 neighbour discovery, ``--protect``) that are checked first.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import re
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from hostchaos.config import Config
from hostchaos.errors import (
    HostchaosError,
    PreconditionError,
    RollbackError,
    SpecError,
    TargetNotFoundError,
)
from hostchaos.faults.base import Fault, Peer, Spec, require
from hostchaos.journal import UndoLog

if TYPE_CHECKING:
    from hostchaos.system.namespaces import NetnsIdentity
    from hostchaos.system.netlink import FilterSet, Namespace
    from hostchaos.system.u32 import Match

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_IFNAME = re.compile(r"[^/\s:]{1,15}")
_NETNS = re.compile(r"[A-Za-z0-9_.-]{1,64}")
DIRECTIONS = ("egress", "ingress", "both")
PROTOCOLS = ("tcp", "udp", "icmp", "icmpv6")
PROTOCOL_NUMBERS = {"icmp": 1, "tcp": 6, "udp": 17, "icmpv6": 58}
#: ICMPv6 router/neighbour discovery (133-137) as two masked type matches:
#: 132-135 (0x84/0xfc; 132 is MLD done, harmless to spare) and 136-137 (0x88/0xfe)
ND_TYPE_BLOCKS = ((0x84, 0xFC), (0x88, 0xFE))


def parse_network(text: str, option: str) -> IPNetwork:
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise SpecError(f"{option} {text!r} is not an IPv4 or IPv6 address or CIDR") from None


def parse_protect(text: str) -> tuple[IPNetwork, int | None]:
    """``CIDR``, ``CIDR:PORT`` or ``[IPv6CIDR]:PORT``."""
    raw = text.strip()
    port: int | None = None
    if raw.startswith("["):
        close = raw.find("]")
        require(close > 0, f"--protect {text!r}: unbalanced [ ]")
        rest = raw[close + 1:]
        raw = raw[1:close]
        if rest:
            require(rest.startswith(":") and rest[1:].isdigit(),
                    f"--protect {text!r}: expected [CIDR]:PORT")
            port = int(rest[1:])
    elif raw.count(":") == 1:
        raw, _, port_text = raw.partition(":")
        require(port_text.isdigit(), f"--protect {text!r}: port must be a number")
        port = int(port_text)
    if port is not None:
        require(0 < port < 65536, f"--protect {text!r}: port must be 1-65535")
    return parse_network(raw, "--protect"), port


@dataclasses.dataclass(frozen=True, kw_only=True)
class NetworkSpec(Spec):
    """Where a network fault goes and which traffic it selects.

    Target: ``iface`` in the host namespace, a named ``netns``, or the namespace
    of ``pid`` (``container`` is resolved to such a pid). Selectors describe
    packets as they *leave* the interface: ``dst`` is the remote side. For
    ingress the same selectors are mirrored, so ``--dst X --direction both``
    affects traffic to and from X. No selector means all IPv4 and IPv6 traffic.
    """

    iface: str
    netns: str | None = None
    pid: int | None = None
    pid_start_ticks: int | None = None
    container: str | None = None
    direction: str = "egress"
    dst: tuple[str, ...] = ()
    src: tuple[str, ...] = ()
    hosts: tuple[str, ...] = ()
    dport: int | None = None
    sport: int | None = None
    protocol: str | None = None
    protect: tuple[str, ...] = ()
    protect_ssh: bool = True
    force: bool = False

    def __post_init__(self) -> None:
        for name in ("dst", "src", "hosts", "protect"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        require(bool(_IFNAME.fullmatch(self.iface)), f"interface name {self.iface!r} is not valid")
        if self.netns is not None:
            require(bool(_NETNS.fullmatch(self.netns)) and self.netns not in (".", ".."),
                    f"network namespace name {self.netns!r} is not valid (a name from "
                    "`ip netns list`, not a path)")
        require(self.netns is None or self.pid is None,
                "give at most one of --netns, --pid and --container")
        if self.pid is not None:
            require(self.pid > 0, f"--pid must be a positive number, got {self.pid}")
        require(self.direction in DIRECTIONS,
                f"--direction must be one of {', '.join(DIRECTIONS)}, got {self.direction!r}")
        for option, values in (("--dst", self.dst), ("--src", self.src)):
            for value in values:
                parse_network(value, option)
        for option, port in (("--dport", self.dport), ("--sport", self.sport)):
            if port is not None:
                require(0 < port < 65536, f"{option} must be 1-65535, got {port}")
        if self.protocol is not None:
            require(self.protocol in PROTOCOLS,
                    f"--protocol must be one of {', '.join(PROTOCOLS)}, got {self.protocol!r}")
            require(not (self.protocol.startswith("icmp") and (self.dport or self.sport)),
                    "--dport/--sport need --protocol tcp or udp")
        for entry in self.protect:
            parse_protect(entry)
        require(bool(self.matches()), "the selectors exclude each other: no traffic would match "
                "(e.g. an IPv4 --dst with --protocol icmpv6)")

    # -- target ------------------------------------------------------------
    def where(self) -> str:
        if self.container:
            return f"container {self.container}"
        if self.pid is not None:
            return f"pid {self.pid}"
        return self.netns or "default"

    def target_label(self) -> str:
        if self.netns:
            return f"{self.iface} (netns {self.netns})"
        where = "" if self.where() == "default" else f" ({self.where()})"
        return f"{self.iface}{where}"

    def namespace_key(self) -> tuple[str, object]:
        if self.pid is not None:
            return ("pid", self.pid)
        return ("netns", self.netns)

    def directions(self) -> tuple[str, ...]:
        return ("egress", "ingress") if self.direction == "both" else (self.direction,)

    # -- selectors ---------------------------------------------------------
    def networks(self, which: str) -> list[IPNetwork]:
        return [parse_network(v, f"--{which}") for v in getattr(self, which)]

    def matches(self) -> list[Match]:
        """The egress view of the selected traffic, as conjunctions of header fields."""
        from hostchaos.system.u32 import Match

        dsts, srcs = self.networks("dst"), self.networks("src")
        out = []
        for family in (4, 6):
            fam_dst = [n for n in dsts if n.version == family]
            fam_src = [n for n in srcs if n.version == family]
            if (dsts and not fam_dst) or (srcs and not fam_src):
                continue
            icmp_family = {"icmp": 4, "icmpv6": 6}.get(self.protocol or "")
            if icmp_family is not None and family != icmp_family:
                continue
            if self.protocol:
                protos: list[int | None] = [PROTOCOL_NUMBERS[self.protocol]]
            else:
                protos = [6, 17] if (self.dport or self.sport) else [None]
            dst_options: list[IPNetwork | None] = [*fam_dst] or [None]
            src_options: list[IPNetwork | None] = [*fam_src] or [None]
            for d in dst_options:
                for s in src_options:
                    for proto in protos:
                        out.append(Match(family, proto, s, d, self.sport, self.dport))
        return out

    def selector_label(self) -> str:
        parts = []
        if self.hosts:
            parts.append("host " + ",".join(self.hosts))
        elif self.dst:
            parts.append("to " + ",".join(self.dst))
        if self.src:
            parts.append("from " + ",".join(self.src))
        if self.protocol:
            parts.append(self.protocol)
        if self.dport:
            parts.append(f"dport {self.dport}")
        if self.sport:
            parts.append(f"sport {self.sport}")
        return " ".join(parts) if parts else "all IP traffic"

    def overlaps(self, other: NetworkSpec, *, same_namespace: bool | None = None) -> bool:
        """Could a packet be selected by both specs on the same interface and direction?

        ``same_namespace``: whether both target the same network namespace, as
        judged by its identity; None compares the spellings (``--netns`` name,
        ``--pid``), for records written before identities were noted.
        """
        if same_namespace is None:
            same_namespace = other.namespace_key() == self.namespace_key()
        if not same_namespace or other.iface != self.iface:
            return False
        if not set(self.directions()) & set(other.directions()):
            return False
        return any(_matches_overlap(a, b) for a in self.matches() for b in other.matches())


def _matches_overlap(a: Match, b: Match) -> bool:
    if a.family != b.family:
        return False
    for i, j in ((a.protocol, b.protocol), (a.sport, b.sport), (a.dport, b.dport),
                 (a.icmp_type, b.icmp_type)):
        if i is not None and j is not None and i != j:
            return False
    for x, y in ((a.src, b.src), (a.dst, b.dst)):
        if x is not None and y is not None and (
            x.version != y.version or not x.overlaps(y)
        ):
            return False
    return True


def combine(a: Match, b: Match) -> Match | None:
    """The conjunction of two matches, or None if no packet can satisfy both."""
    if not _matches_overlap(a, b):
        return None

    def pick(x: Any, y: Any) -> Any:
        if x is None:
            return y
        if y is None:
            return x
        if isinstance(x, ipaddress.IPv4Network | ipaddress.IPv6Network):
            return x if x.prefixlen >= y.prefixlen else y
        return x

    return dataclasses.replace(
        a, protocol=pick(a.protocol, b.protocol), src=pick(a.src, b.src),
        dst=pick(a.dst, b.dst), sport=pick(a.sport, b.sport), dport=pick(a.dport, b.dport),
        icmp_type=pick(a.icmp_type, b.icmp_type))


def _percent(value: float, name: str, *, allow_zero: bool = False) -> None:
    low_ok = value >= 0 if allow_zero else value > 0
    require(math.isfinite(value) and low_ok and value <= 100,
            f"{name} must be {'between 0' if allow_zero else 'above 0'} and 100, got {value:g}")


#: netem's policy cap on a delay; the kernel's own limit (a u32 of 64 ns ticks) is ~274.9 s
MAX_DELAY_MS = 60_000.0
#: netem takes delays in whole microseconds (as `tc` does)
MIN_DELAY_MS = 0.001


def _delay_ms(value: float, name: str, *, allow_zero: bool = False) -> None:
    """A netem delay: whole microseconds that fit the kernel's u32 tick field."""
    from hostchaos.system.tc_units import max_usec

    high = min(MAX_DELAY_MS, max_usec() / 1000)
    ok = math.isfinite(value) and (
        (allow_zero and value == 0) or (value <= high and round(value * 1000) >= 1))
    zero = "0 or " if allow_zero else ""
    require(ok, f"{name} must be {zero}between {MIN_DELAY_MS:g} and {high:g} ms (netem counts "
                f"whole microseconds), got {value:g}")


def _u32(value: int, name: str) -> None:
    from hostchaos.system.tc_units import U32_MAX

    require(0 <= value <= U32_MAX, f"{name} must be between 0 and {U32_MAX}, got {value}")


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

        self.identity = network_namespace.resolve(self.spec)
        self.label = self.spec.where()

    def preflight(self) -> None:
        from hostchaos.faults import network_namespace
        from hostchaos.system import capabilities

        root = capabilities.is_root()
        if not root.ok:
            raise PreconditionError(f"network faults need root ({root.detail}): {root.fix}")
        with network_namespace.peek(self.spec, self.identity) as ns:
            tree = ns.tree(self.spec.iface)
            if "egress" in self.spec.directions() and not self.spec.force:
                tree.check_root_replaceable()
            if "ingress" in self.spec.directions():
                name, _index = ns.ifb_for(self.spec.iface)
                ns.check_ifb_free(self.spec.iface, ours=self._ifb_of_peer(name))
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
        from hostchaos.faults.network_namespace import noted_identity

        other = peer.spec
        if not isinstance(other, NetworkSpec):
            return None
        theirs = noted_identity(peer.notes)
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
                self.spec, self.identity, undo.record.id, state_dir / "netns",
                undo.note) as (ns, identity):
            self.identity, self.label = identity, self.spec.where()
            for direction in self.spec.directions():
                device = self.spec.iface
                if direction == "ingress":
                    name, index = ns.ifb_for(self.spec.iface)
                    ns.check_ifb_free(self.spec.iface, ours=self._ifb_of_peer(name))
                    undo.note("ifb", name=name, iface=self.spec.iface, index=index)
                    device = ns.ensure_ifb(self.spec.iface)
                self._apply_on(ns, undo, device, direction)

    def _apply_on(self, ns: Namespace, undo: UndoLog, device: str, direction: str) -> None:
        tree = ns.tree(device)
        original = tree.root()
        if original is None or not original.is_hostchaos:
            foreign = tree.foreign_root()
            if foreign is not None and not (self.spec.force and direction == "egress"):
                tree.check_root_replaceable(foreign)  # raises ConflictError
            undo.note("root", device=device,
                      original=original.to_dict() if original else None,
                      snapshot=tree.snapshot() if foreign else None)
            if foreign is not None:
                tree.delete_foreign_root(foreign)
            tree.create_root()
        else:
            inherited = self._inherited_snapshot(device)
            if inherited is not None:  # whoever leaves last puts the original back
                undo.note("root", device=device, joined=True, snapshot=inherited)
        slot = tree.free_slot(self._claimed_slots(device))
        undo.note("class", device=device, slot=slot, where=self.spec.where(),
                  direction=direction)
        tree.add_fault_class(slot, self.leaf_kind, self.leaf_options(tree.mtu()))
        filters = self.apply_filters(direction)
        undo.note("filters", device=device, slot=slot,
                  protected=len(filters.passed), selected=len(filters.selected))
        tree.add_filters(slot, filters)

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
        from hostchaos.system import netlink
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
            with netlink.open_namespace(path, self.spec.where()) as ns:
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
        tree.remove_filters(slot)
        tree.remove_fault_class(slot)
        self._remove_tree_if_unused(ns, device)

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
        from hostchaos.system import netlink

        classes = undo.steps("class")
        if not classes:
            return {"present": False}
        out: dict[str, Any] = {"present": True, "directions": {}}
        note = network_namespace.netns_note(undo.record.undo)
        try:
            with (network_namespace.enter_noted(note) if note else
                  netlink.open_namespace(network_namespace_path(self.spec),
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
    from hostchaos.system import netlink
    from hostchaos.system.procs import start_ticks

    if spec.netns:
        return netlink.netns_path(spec.netns)
    if spec.pid is not None:
        ticks = start_ticks(spec.pid)
        if ticks is None or (spec.pid_start_ticks is not None and ticks != spec.pid_start_ticks):
            raise TargetNotFoundError(f"process {spec.pid} ({spec.where()}) is gone")
        return f"/proc/{spec.pid}/ns/net"
    return None


# ----------------------------------------------------------------------- kinds

DISTRIBUTIONS = ("normal", "pareto", "paretonormal", "uniform")


@dataclasses.dataclass(frozen=True, kw_only=True)
class LatencySpec(NetworkSpec):
    """Delay the selected packets by ``ms`` (+- ``jitter_ms``, shaped by ``distribution``)."""

    kind: ClassVar[str] = "latency"
    ms: float
    jitter_ms: float = 0.0
    correlation: float = 0.0
    distribution: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        _delay_ms(self.ms, "--ms")
        _delay_ms(self.jitter_ms, "--jitter", allow_zero=True)
        _percent(self.correlation, "--correlation", allow_zero=True)
        require(not self.correlation or self.jitter_ms > 0,
                "--correlation needs --jitter (it correlates successive delay variations)")
        if self.distribution is not None:
            require(self.distribution in DISTRIBUTIONS,
                    f"--distribution must be one of {', '.join(DISTRIBUTIONS)}")
            require(self.jitter_ms > 0, "--distribution needs --jitter (it shapes the jitter)")


class LatencyFault(NetworkFault):
    """Delay selected packets with netem.

    Mechanism: a netem leaf (delay, jitter, correlation, distribution table) in
    a class of the hostchaos HTB tree, fed by u32 filters for the selected IPv4
    and IPv6 traffic; ARP, IPv6 neighbour discovery and the operator's SSH
    session pass untouched. Ingress goes through the interface's IFB.
    Rollback: removes the filters and the class and, when no other hostchaos
    fault is left on the interface, the tree and IFB, so the kernel puts its
    default root qdisc back. Does not survive a reboot (nor the namespace).

    Example: ``sudo hostchaos inject latency --iface eth0 --ms 100 --jitter 10 --dst 10.0.0.0/8``
    """

    kind = "latency"
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


@dataclasses.dataclass(frozen=True, kw_only=True)
class LossSpec(NetworkSpec):
    """Drop ``percent`` of the selected packets, or follow a Gilbert-Elliott model (``ge``)."""

    kind: ClassVar[str] = "loss"
    percent: float | None = None
    correlation: float = 0.0
    ge: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.ge, list):
            object.__setattr__(self, "ge", tuple(self.ge))
        super().__post_init__()
        require((self.percent is None) != (self.ge is None),
                "give exactly one of --percent and --ge")
        if self.percent is not None:
            _percent(self.percent, "--percent")
        _percent(self.correlation, "--correlation", allow_zero=True)
        if self.ge is not None:
            require(len(self.ge) in (2, 3, 4), "--ge takes p,r[,1-h[,1-k]] (percentages)")
            for value in self.ge:
                _percent(value, "--ge values", allow_zero=True)
            require(not self.correlation, "--correlation does not apply to --ge")


class LossFault(NetworkFault):
    """Drop a share of selected packets with netem.

    Mechanism: a netem leaf with random loss (optionally correlated) or a
    Gilbert-Elliott model (``--ge p,r[,1-h,1-k]``: p = good->bad, r = bad->good,
    1-h = loss in bad state (default 100), 1-k = loss in good state (default 0))
    in a class of the hostchaos HTB tree, fed by u32 filters for the selected
    traffic; ARP, neighbour discovery and the operator's SSH session are spared.
    Rollback: as for latency. Does not survive a reboot.

    Example: ``sudo hostchaos inject loss --iface eth0 --percent 30 --for 2m``
    """

    kind = "loss"
    spec_type = LossSpec
    spec: LossSpec

    def describe(self) -> str:
        s = self.spec
        if s.ge is not None:
            how = f"Gilbert-Elliott loss (p,r,1-h,1-k = {','.join(f'{v:g}' for v in s.ge)}%)"
        else:
            corr = f" ({s.correlation:g}% correlated)" if s.correlation else ""
            how = f"{s.percent:g}% loss{corr}"
        return f"{how} of {s.selector_label()} on {s.target_label()} ({s.direction})"

    def leaf_options(self, mtu: int = 1500) -> dict[str, Any]:
        s = self.spec
        if s.ge is not None:
            ge = (*s.ge, 100.0, 0.0)[:4] if len(s.ge) == 2 else (*s.ge, 0.0)[:4]
            return {"gemodel": ge}
        opts: dict[str, Any] = {"loss": s.percent}
        if s.correlation:
            opts["loss_corr"] = s.correlation
        return opts


@dataclasses.dataclass(frozen=True, kw_only=True)
class _ShareSpec(NetworkSpec):
    """A kind that acts on ``percent`` of the selected packets, optionally correlated."""

    percent: float
    correlation: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        _percent(self.percent, "--percent")
        _percent(self.correlation, "--correlation", allow_zero=True)


@dataclasses.dataclass(frozen=True, kw_only=True)
class CorruptSpec(_ShareSpec):
    """Flip a random bit in ``percent`` of the selected packets."""

    kind: ClassVar[str] = "corrupt"


class CorruptFault(NetworkFault):
    """Corrupt a share of selected packets (a random bit flip) with netem.

    Mechanism: netem ``corrupt`` in the hostchaos tree; receivers drop the
    packets on checksum. Rollback: as for latency. Does not survive a reboot.

    Example: ``sudo hostchaos inject corrupt --iface eth0 --percent 5 --dst 10.1.0.0/16``
    """

    kind = "corrupt"
    spec_type = CorruptSpec
    spec: CorruptSpec

    def describe(self) -> str:
        s = self.spec
        return f"corrupt {s.percent:g}% of {s.selector_label()} on {s.target_label()} " \
               f"({s.direction})"

    def leaf_options(self, mtu: int = 1500) -> dict[str, Any]:
        return {"prob_corrupt": self.spec.percent, "corr_corrupt": self.spec.correlation}


@dataclasses.dataclass(frozen=True, kw_only=True)
class DuplicateSpec(_ShareSpec):
    """Send ``percent`` of the selected packets twice."""

    kind: ClassVar[str] = "duplicate"


class DuplicateFault(NetworkFault):
    """Duplicate a share of selected packets with netem.

    Mechanism: netem ``duplicate`` in the hostchaos tree. Rollback: as for
    latency. Does not survive a reboot.

    Example: ``sudo hostchaos inject duplicate --iface eth0 --percent 10``
    """

    kind = "duplicate"
    spec_type = DuplicateSpec
    spec: DuplicateSpec

    def describe(self) -> str:
        s = self.spec
        return f"duplicate {s.percent:g}% of {s.selector_label()} on {s.target_label()} " \
               f"({s.direction})"

    def leaf_options(self, mtu: int = 1500) -> dict[str, Any]:
        opts: dict[str, Any] = {"duplicate": self.spec.percent}
        if self.spec.correlation:
            opts["dup_corr"] = self.spec.correlation
        return opts


@dataclasses.dataclass(frozen=True, kw_only=True)
class ReorderSpec(NetworkSpec):
    """Send ``percent`` of the selected packets at once and delay the rest by ``ms``."""

    kind: ClassVar[str] = "reorder"
    percent: float
    ms: float | None = None
    gap: int = 0
    correlation: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        _percent(self.percent, "--percent")
        _percent(self.correlation, "--correlation", allow_zero=True)
        require(self.ms is not None and self.ms != 0,
                "reorder needs a delay: add --ms (packets not sent early wait that long)")
        assert self.ms is not None
        _delay_ms(self.ms, "--ms")
        _u32(self.gap, "--gap")


class ReorderFault(NetworkFault):
    """Reorder selected packets with netem.

    Mechanism: netem ``delay D reorder P [gap N]``: P% of packets (every Nth
    with a gap) go out at once, the others wait D, so later packets overtake
    earlier ones. Rollback: as for latency. Does not survive a reboot.

    Example: ``sudo hostchaos inject reorder --iface eth0 --percent 25 --ms 10``
    """

    kind = "reorder"
    spec_type = ReorderSpec
    spec: ReorderSpec

    def describe(self) -> str:
        s = self.spec
        gap = f", gap {s.gap}" if s.gap else ""
        return f"reorder {s.percent:g}% of {s.selector_label()} on {s.target_label()} " \
               f"({s.direction}; others delayed {s.ms:g} ms{gap})"

    def leaf_options(self, mtu: int = 1500) -> dict[str, Any]:
        s = self.spec
        return {"delay": round((s.ms or 0) * 1000), "prob_reorder": s.percent,
                "corr_reorder": s.correlation, "gap": s.gap}


_RATE = re.compile(r"(\d+(?:\.\d+)?)\s*(bit|kbit|mbit|gbit|bps|kbps|mbps|gbps)?", re.I)
_RATE_UNITS = {"bit": 1, "kbit": 10**3, "mbit": 10**6, "gbit": 10**9, "bps": 8, "kbps": 8 * 10**3,
               "mbps": 8 * 10**6, "gbps": 8 * 10**9}
_SIZE = re.compile(r"(\d+)\s*(b|k|kb|m|mb)?", re.I)
_SIZE_UNITS = {"b": 1, "k": 1024, "kb": 1024, "m": 1024 * 1024, "mb": 1024 * 1024}
MIN_RATE_BITS = 8000
#: the smallest token bucket and queue: one full-size packet
MIN_BUCKET_BYTES = 1600


def parse_rate(text: str) -> int:
    """Bits per second from ``1mbit``, ``500kbit``, ``10mbps`` (bytes) or plain bits.

    tbf takes a 64-bit count of bytes per second, so anything from 8kbit to
    2^64-1 bytes/s (about 147 Ebit/s) is accepted; parsed exactly, never as a float.
    """
    from hostchaos.system.tc_units import U64_MAX

    found = _RATE.fullmatch(text.strip())
    require(found is not None, f"--rate {text!r} is not a rate (e.g. 1mbit, 500kbit, 10mbps)")
    assert found is not None
    bits = int(Fraction(found.group(1)) * _RATE_UNITS[(found.group(2) or "bit").lower()])
    require(MIN_RATE_BITS <= bits and bits // 8 <= U64_MAX,
            f"--rate {text[:40]!r} is out of range: tbf takes 8kbit to 2^64-1 bytes/s "
            "(about 147 Ebit/s)")
    return bits


def parse_size(text: str, option: str) -> int:
    found = _SIZE.fullmatch(text.strip())
    require(found is not None, f"{option} {text[:40]!r} is not a size (e.g. 32k, 1m, 1500)")
    assert found is not None
    return int(found.group(1)) * _SIZE_UNITS[(found.group(2) or "b").lower()]


@dataclasses.dataclass(frozen=True, kw_only=True)
class RateSpec(NetworkSpec):
    """Limit the selected traffic to ``rate`` with a token bucket."""

    kind: ClassVar[str] = "rate"
    rate: str
    burst: str | None = None
    limit: str | None = None

    def __post_init__(self) -> None:
        from hostchaos.system.tc_units import U32_MAX, max_bucket_bytes

        super().__post_init__()
        rate_bytes = parse_rate(self.rate) // 8
        if self.burst is not None:
            # tbf keeps the bucket as a u32 of bytes and as a u32 of 64 ns ticks at the rate
            high = max_bucket_bytes(rate_bytes)
            burst = parse_size(self.burst, "--burst")
            require(MIN_BUCKET_BYTES <= burst <= high,
                    f"--burst must be between {MIN_BUCKET_BYTES} and {high} bytes at --rate "
                    f"{self.rate} (one full-size packet up to what tbf can count), got {burst}")
        if self.limit is not None:
            limit = parse_size(self.limit, "--limit")
            require(MIN_BUCKET_BYTES <= limit <= U32_MAX,
                    f"--limit must be between {MIN_BUCKET_BYTES} and {U32_MAX} bytes, "
                    f"got {limit}")


class RateFault(NetworkFault):
    """Limit the bandwidth of selected traffic with a token bucket (tbf).

    Mechanism: a tbf leaf (rate, burst, queue limit) in a class of the
    hostchaos HTB tree; tbf rather than netem's rate so it works on kernels
    without sch_netem. Default burst is rate/250 (at least 3000 bytes), default
    queue limit holds 250 ms at the rate. Rollback: as for latency. Does not
    survive a reboot.

    Example: ``sudo hostchaos inject rate --container web --iface eth0 --rate 1mbit``
    """

    kind = "rate"
    spec_type = RateSpec
    spec: RateSpec
    leaf_kind = "tbf"

    def describe(self) -> str:
        s = self.spec
        return f"limit {s.selector_label()} on {s.target_label()} ({s.direction}) to {s.rate}"

    def leaf_options(self, mtu: int = 1500) -> dict[str, Any]:
        from hostchaos.system.tc_units import U32_MAX, max_bucket_bytes

        s = self.spec
        rate = parse_rate(s.rate) // 8
        # tbf never sends a packet larger than its bucket: hold at least one MTU (lo: 64 KiB)
        burst = parse_size(s.burst, "--burst") if s.burst else min(
            max(3000, rate // 250, mtu + 14), max_bucket_bytes(rate))
        limit = parse_size(s.limit, "--limit") if s.limit else min(
            max(3 * burst, rate // 4), U32_MAX)
        return {"rate": rate, "burst": burst, "limit": limit}


@dataclasses.dataclass(frozen=True, kw_only=True)
class PartitionSpec(NetworkSpec):
    """Drop all of the selected traffic."""

    kind: ClassVar[str] = "partition"


class PartitionFault(NetworkFault):
    """Cut the selected traffic off entirely (100% loss) with netem.

    Mechanism: netem ``loss 100%`` in the hostchaos tree, in the chosen
    direction(s). Unselected traffic, ARP, neighbour discovery, the operator's
    SSH session and ``--protect`` peers keep flowing. Rollback: as for latency.
    Does not survive a reboot.

    Example: ``sudo hostchaos inject partition --iface eth0 --dst 10.0.3.0/24 --direction both``
    """

    kind = "partition"
    spec_type = PartitionSpec
    spec: PartitionSpec

    def describe(self) -> str:
        s = self.spec
        return f"drop all {s.selector_label()} on {s.target_label()} ({s.direction})"

    def leaf_options(self, mtu: int = 1500) -> dict[str, Any]:
        return {"loss": 100}
