"""sd_notify(3) without libsystemd: READY=1, WATCHDOG=1, STOPPING=1 to ``$NOTIFY_SOCKET``.

A datagram on an AF_UNIX socket; a name starting with ``@`` is in the abstract
namespace (a NUL byte). Without ``$NOTIFY_SOCKET`` (not run by systemd) every
call does nothing. Errors are swallowed: systemd being away must never stop
the agent from rolling faults back.
"""

from __future__ import annotations

import os
import socket


def notify(state: str) -> bool:
    """Send ``state`` (e.g. ``"READY=1"``); True if a notify socket took it."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(state.encode(), address)
    except OSError:
        return False
    return True


SD_LISTEN_FDS_START = 3


def listen_fds() -> list[int]:
    """Sockets systemd passed (socket activation: ``$LISTEN_FDS`` for ``$LISTEN_PID``)."""
    pid, count = os.environ.get("LISTEN_PID", ""), os.environ.get("LISTEN_FDS", "")
    if not pid.isdigit() or int(pid) != os.getpid() or not count.isdigit():
        return []
    fds = list(range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + int(count)))
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)  # not for the warden this process starts
    return fds


def watchdog_interval() -> float | None:
    """How often to send WATCHDOG=1 (half of ``$WATCHDOG_USEC``), or None when not asked.

    ``$WATCHDOG_PID``, when set, must be this process (systemd's rule).
    """
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) <= 0:
        return None
    if pid and (not pid.isdigit() or int(pid) != os.getpid()):
        return None
    return int(usec) / 1e6 / 2
