"""What every network kind targets and selects: the interface, its namespace, the traffic.

:class:`NetworkSpec` is the target and selector model all network kinds share
(their options are its fields); the helpers check values against what the
kernel's netem and tbf fields can carry.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import re
from typing import TYPE_CHECKING, Any

from hostchaos.errors import SpecError
from hostchaos.faults.base import Spec, require
from hostchaos.faults.options import option

if TYPE_CHECKING:
    from hostchaos.system.u32 import Match

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_IFNAME = re.compile(r"[^/\s:]{1,15}")
_NETNS = re.compile(r"[A-Za-z0-9_.-]{1,64}")
DIRECTIONS = ("egress", "ingress", "both")
DISTRIBUTIONS = ("normal", "pareto", "paretonormal", "uniform")
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

    iface: str = option("--iface", "Interface whose traffic is affected.", required=True,
                        metavar="NAME")
    netns: str | None = option("--netns", "Named network namespace (see `ip netns list`) "
                               "holding --iface.", default=None, metavar="NAME")
    pid: int | None = option("--pid", "Use the network namespace of this process.",
                             default=None, metavar="PID")
    #: set by resolve(): the start time of ``pid``, so a reused pid is never mistaken for it
    pid_start_ticks: int | None = None
    container: str | None = option("--container", "Use the network namespace of this "
                                   "container (docker, podman, nerdctl or crictl).",
                                   default=None, metavar="NAME|ID")
    direction: str = option("--direction", "Outgoing traffic, incoming traffic (through an "
                            "IFB device), or both.", default="egress", choices=DIRECTIONS)
    dst: tuple[str, ...] = option("--dst", "Only traffic to this IPv4/IPv6 address or network.",
                                  default=(), multiple=True, metavar="CIDR")
    src: tuple[str, ...] = option("--src", "Only traffic from this local address or network.",
                                  default=(), multiple=True, metavar="CIDR")
    hosts: tuple[str, ...] = option("--host", "Only traffic to this host: all its A and AAAA "
                                    "records, resolved at inject and recorded.", default=(),
                                    multiple=True, metavar="NAME")
    dport: int | None = option("--dport", "Only this destination port.", default=None,
                               metavar="PORT")
    sport: int | None = option("--sport", "Only this source port.", default=None,
                               metavar="PORT")
    protocol: str | None = option("--protocol", "Only this protocol.", default=None,
                                  choices=PROTOCOLS)
    protect: tuple[str, ...] = option("--protect", "Never touch traffic with this peer (and "
                                      "port).", default=(), multiple=True,
                                      metavar="CIDR[:PORT]")
    protect_ssh: bool = option("--no-protect-ssh", "Do not exempt the operator's SSH sessions "
                               "(exempt by default).", default=True, flag_negates=True)
    force: bool = option("--force", "Replace a root qdisc set up by someone else: its whole "
                         "tree is snapshotted and put back exactly on rollback.", default=False)

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
        targets = [self.netns, self.container,
                   self.pid if self.container is None or self.pid_start_ticks is None else None]
        require(sum(t is not None for t in targets) <= 1,
                "give at most one of --netns, --pid and --container")
        if self.pid is not None:
            require(self.pid > 0, f"--pid must be a positive number, got {self.pid}")
        require(self.direction in DIRECTIONS,
                f"--direction must be one of {', '.join(DIRECTIONS)}, got {self.direction!r}")
        for flag, values in (("--dst", self.dst), ("--src", self.src)):
            for value in values:
                parse_network(value, flag)
        for flag, port in (("--dport", self.dport), ("--sport", self.sport)):
            if port is not None:
                require(0 < port < 65536, f"{flag} must be 1-65535, got {port}")
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


#: netem's policy cap on a delay; the kernel's own limit (a u32 of 64 ns ticks) is ~274.9 s
MAX_DELAY_MS = 60_000.0
#: netem takes delays in whole microseconds (as `tc` does)
MIN_DELAY_MS = 0.001


def check_delay_ms(value: float, name: str, *, allow_zero: bool = False) -> None:
    """A netem delay: whole microseconds that fit the kernel's u32 tick field."""
    from hostchaos.system.tc_units import max_usec

    high = min(MAX_DELAY_MS, max_usec() / 1000)
    ok = math.isfinite(value) and (
        (allow_zero and value == 0) or (value <= high and round(value * 1000) >= 1))
    zero = "0 or " if allow_zero else ""
    require(ok, f"{name} must be {zero}between {MIN_DELAY_MS:g} and {high:g} ms (netem counts "
                f"whole microseconds), got {value:g}")


def check_u32(value: int, name: str) -> None:
    from hostchaos.system.tc_units import U32_MAX

    require(0 <= value <= U32_MAX, f"{name} must be between 0 and {U32_MAX}, got {value}")



@dataclasses.dataclass(frozen=True, kw_only=True)
class ShareSpec(NetworkSpec):
    """A kind that acts on ``percent`` of the selected packets, optionally correlated."""

    percent: float = option("--percent", "Share of the selected packets (0-100].",
                            required=True)
    correlation: float = option("--correlation", "Percent correlation with the previous "
                                "packet.", default=0.0)

    def __post_init__(self) -> None:
        from hostchaos.quantities import check_percent

        super().__post_init__()
        check_percent(self.percent, "--percent")
        check_percent(self.correlation, "--correlation", allow_zero=True)
