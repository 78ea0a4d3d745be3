"""Who is on the other end of a connection, and whether they may use the API.

On the unix socket the kernel says (SO_PEERCRED: pid, uid, gid at connect
time; SO_PEERGROUPS: the supplementary groups). On a loopback TCP connection
the kernel's socket table (``/proc/net/tcp``, ``tcp6``) gives the uid that
owns the client's end (no pid). Allowed: uid 0, the agent's own uid, and
members of the configured group (primary or supplementary). Everyone else is
answered 403, whatever the socket file's mode says.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from dataclasses import dataclass
from typing import Any

from hostchaos.agent.service import Client

SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)
_CRED = struct.Struct("3i")


@dataclass(frozen=True)
class Peer:
    client: Client
    groups: tuple[int, ...]


def unix_peer(sock: socket.socket) -> Peer | None:
    """SO_PEERCRED and SO_PEERGROUPS of a connected unix socket (None if unknown)."""
    try:
        pid, uid, gid = _CRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                     _CRED.size))
    except OSError:
        return None
    return Peer(Client(uid, pid, gid), _peer_groups(sock, pid))


def _peer_groups(sock: socket.socket, pid: int) -> tuple[int, ...]:
    size = 4 * 256
    while size <= 4 * 65536:
        try:
            raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, size)
            return struct.unpack(f"{len(raw) // 4}I", raw[: len(raw) // 4 * 4])
        except OSError as exc:
            if exc.errno != errno.ERANGE:
                break
            size *= 4
    return _proc_groups(pid)


def _proc_groups(pid: int) -> tuple[int, ...]:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("Groups:"):
                    return tuple(int(g) for g in line.split()[1:])
    except (OSError, ValueError):
        pass
    return ()


def tcp_peer(sock: socket.socket) -> Peer | None:
    """The uid owning the client end of a loopback TCP connection, from /proc/net/tcp*."""
    try:
        local = sock.getsockname()
        remote = sock.getpeername()
    except OSError:
        return None
    want_local = _proc_address(sock.family, remote[0], remote[1])
    want_remote = _proc_address(sock.family, local[0], local[1])
    table = "/proc/net/tcp6" if sock.family == socket.AF_INET6 else "/proc/net/tcp"
    try:
        with open(table) as handle:
            next(handle)
            for line in handle:
                fields = line.split()
                if fields[1] == want_local and fields[2] == want_remote:
                    return Peer(Client(int(fields[7]), None, None), ())
    except (OSError, StopIteration, IndexError, ValueError):
        pass
    return None


def _proc_address(family: int, host: str, port: int) -> str:
    """An address as /proc/net/tcp* spells it: each 32-bit word in host order, hex."""
    packed = socket.inet_pton(family, host.split("%")[0])
    words = [packed[i:i + 4] for i in range(0, len(packed), 4)]
    text = "".join(struct.pack("=I", struct.unpack("!I", w)[0]).hex().upper() for w in words)
    return f"{text}:{port:04X}"


class PeerPolicy:
    """Allows uid 0, this process's uid and members of ``gid`` (if any)."""

    def __init__(self, gid: int | None) -> None:
        self.gid = gid
        self.own_uid = os.geteuid()

    def allows(self, peer: Peer | None) -> bool:
        if peer is None or peer.client.uid is None:
            return False
        if peer.client.uid in (0, self.own_uid):
            return True
        return self.gid is not None and (peer.client.gid == self.gid or self.gid in peer.groups)

    def judge(self, transport: Any) -> tuple[Peer | None, bool]:
        sock = transport.get_extra_info("socket")
        if sock is None:
            return None, False
        peer = unix_peer(sock) if sock.family == socket.AF_UNIX else tcp_peer(sock)
        return peer, self.allows(peer)
