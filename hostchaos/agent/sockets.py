"""The agent's listening sockets: the unix socket made safely, loopback TCP only.

The socket's directory is created 0755 and must belong to the agent's user and
be writable by nobody else; a stale socket is replaced, a live one (another
agent) is refused; the socket is created 0600 (under umask 0177: no window)
and, with a configured group, chowned to it and made 0660. TCP only on a
loopback address literal.
"""

from __future__ import annotations

import contextlib
import grp
import ipaddress
import os
import socket
import stat
from pathlib import Path

from hostchaos.errors import ConflictError, PreconditionError, SpecError


def prepare_unix_socket(path: Path, group: str | None) -> socket.socket:
    """A listening unix socket at ``path``: 0600, or 0660 owned by ``group``."""
    gid = check_socket_path(path, group)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    old = os.umask(0o177)
    try:
        sock.bind(str(path))
    except OSError as exc:
        sock.close()
        raise PreconditionError(f"cannot bind {path}: {exc.strerror}") from exc
    finally:
        os.umask(old)
    if gid is not None:
        os.chown(path, -1, gid)
        os.chmod(path, 0o660)
    sock.listen(128)
    sock.setblocking(False)
    return sock


def check_socket_path(path: Path, group: str | None) -> int | None:
    """Make the socket's directory, check it, remove a stale socket; the group's gid.

    ConflictError if another agent answers there: nothing else happens then.
    """
    gid = group_id(group) if group else None
    directory = path.parent
    with contextlib.suppress(FileExistsError):
        os.makedirs(directory, mode=0o755)
    info = os.lstat(directory)
    if not stat.S_ISDIR(info.st_mode):
        raise PreconditionError(f"socket directory {directory} is not a directory (a symlink?); "
                                "remove it or choose another socket path")
    if info.st_uid != os.geteuid() or info.st_mode & 0o022:
        raise PreconditionError(f"socket directory {directory} must belong to uid "
                                f"{os.geteuid()} and be writable by nobody else (it is uid "
                                f"{info.st_uid}, mode {stat.S_IMODE(info.st_mode):o})")
    _remove_stale(path)
    return gid


def _remove_stale(path: Path) -> None:
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(info.st_mode):
        raise ConflictError(f"{path} exists and is not a socket; remove it or choose another "
                            "socket path")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
    except OSError:
        path.unlink(missing_ok=True)  # nobody listens: a stale socket
        return
    finally:
        probe.close()
    raise ConflictError(f"another agent already answers on {path}; stop it first")


def group_id(name: str) -> int:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        raise PreconditionError(f"group {name!r} does not exist (set group in "
                                "/etc/hostchaos/config.toml to an existing group)") from None


def tcp_address(text: str) -> tuple[str, int]:
    """``127.0.0.1:8470`` or ``[::1]:8470``; SpecError unless the host is loopback."""
    host, sep, port = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    try:
        address = ipaddress.ip_address(host)
        number = int(port)
    except ValueError:
        raise SpecError(f"tcp {text!r} must be a loopback address and port, e.g. "
                        "127.0.0.1:8470 or [::1]:8470") from None
    if not sep or not address.is_loopback or not 0 < number < 65536:
        raise SpecError(f"tcp {text!r} must be a loopback address and port (127.0.0.1 or ::1); "
                        "hostchaos never listens on other addresses")
    return str(address), number


def prepare_tcp_socket(text: str) -> socket.socket:
    host, port = tcp_address(text)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise PreconditionError(f"cannot listen on tcp {text}: {exc.strerror}") from exc
    sock.listen(128)
    sock.setblocking(False)
    return sock
