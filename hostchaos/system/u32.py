"""u32 match keys for IPv4 and IPv6 headers, as pyroute2's ``keys=[...]`` strings.

Offsets count from the start of the network header. Ports and ICMP types are
read at the fixed offset right after the base header (20 bytes for IPv4, 40
for IPv6): packets with IPv4 options or IPv6 extension headers are not matched
by port selectors. That is the same trade-off iproute2's ``match ip dport``
makes, and it is documented in docs/faults/network-selectors.md.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

PROTOCOLS = {"icmp": 1, "tcp": 6, "udp": 17, "icmpv6": 58}


@dataclass(frozen=True)
class Match:
    """One conjunction of header fields; None means "any"."""

    family: int  # 4 or 6
    protocol: int | None = None
    src: IPNetwork | None = None
    dst: IPNetwork | None = None
    sport: int | None = None
    dport: int | None = None
    icmp_type: tuple[int, int] | None = None  # (type, mask)

    def mirrored(self) -> Match:
        """The same flow seen in the other direction (for ingress)."""
        return replace(self, src=self.dst, dst=self.src, sport=self.dport, dport=self.sport)

    def keys(self) -> list[str]:
        keys: list[str] = []
        v4 = self.family == 4
        if self.protocol is not None:
            keys.append(_key(self.protocol, 0xFF, 9 if v4 else 6, 1))
        for net, offset in ((self.src, 12 if v4 else 8), (self.dst, 16 if v4 else 24)):
            if net is not None and net.prefixlen:
                keys.extend(_network_keys(net, offset))
        transport = 20 if v4 else 40
        if self.sport is not None:
            keys.append(_key(self.sport, 0xFFFF, transport, 2))
        if self.dport is not None:
            keys.append(_key(self.dport, 0xFFFF, transport + 2, 2))
        if self.icmp_type is not None:
            value, mask = self.icmp_type
            keys.append(_key(value, mask, transport, 1))
        return keys or ["0x0/0x0+0"]


def _key(value: int, mask: int, offset: int, width: int) -> str:
    """A key for a field of ``width`` bytes at byte ``offset``, as an aligned 32-bit word."""
    aligned = offset & ~3
    shift = 8 * (4 - width - (offset - aligned))
    return f"0x{(value & mask) << shift:08x}/0x{mask << shift:08x}+{aligned}"


def _network_keys(net: IPNetwork, offset: int) -> list[str]:
    raw = int(net.network_address)
    bits = net.max_prefixlen
    mask_all = ((1 << net.prefixlen) - 1) << (bits - net.prefixlen)
    keys = []
    for word in range(bits // 32):
        shift = bits - 32 * (word + 1)
        mask = (mask_all >> shift) & 0xFFFFFFFF
        if mask:
            value = (raw >> shift) & mask
            keys.append(f"0x{value:08x}/0x{mask:08x}+{offset + 4 * word}")
    return keys
