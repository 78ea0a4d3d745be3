"""Who the operator is: SSH peers whose traffic a network fault must never touch."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

#: process names that hold an SSH server's established connections: ``sshd`` up to
#: OpenSSH 9.7; from 9.8 each session runs as ``sshd-session`` (and 10.0 adds
#: ``sshd-auth`` for the pre-authentication phase)
SSHD_NAMES = frozenset({"sshd", "sshd-session", "sshd-auth"})


def ssh_connection_peer() -> tuple[str, int] | None:
    """(client address, server port) from ``$SSH_CONNECTION``, if this runs under ssh
    (or, in the agent, if the client that asked does: see :mod:`hostchaos.system.caller`)."""
    from hostchaos.system import caller

    parts = (caller.getenv("SSH_CONNECTION") or "").split()
    if len(parts) != 4 or not parts[3].isdigit():
        return None
    return parts[0], int(parts[3])


def sshd_session_peers() -> list[tuple[str, int]]:
    """(client address, server port) of every established sshd session in this namespace.

    Covers `sudo`, which drops ``$SSH_CONNECTION``, and other operators'
    sessions. Reads the socket table through psutil (imported here, lazily).
    """
    import psutil

    try:
        connections = psutil.net_connections(kind="tcp")
    except (psutil.Error, OSError):
        return []

    def name_of(pid: int) -> str:
        try:
            return psutil.Process(pid).name()
        except psutil.Error:
            return ""

    return peers_of_sshd(connections, name_of)


def peers_of_sshd(connections: Iterable[Any], name_of: Callable[[int], str]
                  ) -> list[tuple[str, int]]:
    """(remote address, local port) of the established connections an sshd process holds.

    ``connections`` are psutil's ``sconn`` tuples; ``name_of(pid)`` gives a
    process's name.
    """
    import psutil

    peers = []
    names: dict[int, str] = {}
    for conn in connections:
        if conn.status != psutil.CONN_ESTABLISHED or not conn.raddr or conn.pid is None:
            continue
        if conn.pid not in names:
            names[conn.pid] = name_of(conn.pid)
        if names[conn.pid] in SSHD_NAMES:
            peers.append((str(conn.raddr[0]), int(conn.laddr[1])))
    return peers
