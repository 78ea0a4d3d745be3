"""Who the operator is: SSH peers whose traffic a network fault must never touch."""

from __future__ import annotations

import os


def ssh_connection_peer() -> tuple[str, int] | None:
    """(client address, server port) from ``$SSH_CONNECTION``, if this runs under ssh."""
    parts = os.environ.get("SSH_CONNECTION", "").split()
    if len(parts) != 4 or not parts[3].isdigit():
        return None
    return parts[0], int(parts[3])


def sshd_session_peers() -> list[tuple[str, int]]:
    """(client address, server port) of every established sshd session in this namespace.

    Covers `sudo`, which drops ``$SSH_CONNECTION``, and other operators'
    sessions. Reads the socket table through psutil (imported here, lazily).
    """
    import psutil

    peers = []
    names: dict[int, str] = {}
    try:
        connections = psutil.net_connections(kind="tcp")
    except (psutil.Error, OSError):
        return []
    for conn in connections:
        if conn.status != psutil.CONN_ESTABLISHED or not conn.raddr or conn.pid is None:
            continue
        if conn.pid not in names:
            try:
                names[conn.pid] = psutil.Process(conn.pid).name()
            except psutil.Error:
                names[conn.pid] = ""
        if names[conn.pid] == "sshd":
            remote: tuple[str, int] = tuple(conn.raddr)  # type: ignore[assignment]
            local: tuple[str, int] = tuple(conn.laddr)  # type: ignore[assignment]
            peers.append((remote[0], local[1]))
    return peers
