"""Network namespaces by identity, and handles that keep one alive for a fault's life.

A network namespace *is* its nsfs inode: ``(st_dev, st_ino)`` of
``/proc/PID/ns/net``, of a ``/run/netns/NAME`` bind mount, or of an open
descriptor of either. Names and processes are only ways to reach it: a
process exits while another keeps its namespace, ``ip netns del`` removes a
name while processes still live inside. So a network fault notes the identity
of the namespace it changed, and a *handle* on it: a bind mount of the
namespace file on an empty file of hostchaos's state directory (what ``ip
netns add`` does under /run/netns). The handle keeps the namespace, and with
it the fault's qdiscs, reachable until rollback releases it.

Rollback finds the namespace again through the handle, or, when the handle is
gone (a reboot, someone unmounted it), through any process still inside it.
Only when neither exists is the namespace gone. (A namespace's inode number
can be given to a new namespace once the old one is freed; the handle is what
keeps that from happening while a fault is open.)

This module is the only one that mounts, unmounts or enters (setns) a network
namespace.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hostchaos.errors import ApplyError, RollbackError, TargetNotFoundError

CLONE_NEWNET = 0x40000000
NS_GET_NSTYPE = 0xB703  # ioctl on an nsfs file: which kind of namespace it is
MS_BIND = 0x1000
MS_REC = 0x4000
MS_SHARED = 1 << 20
MNT_DETACH = 0x2
UMOUNT_NOFOLLOW = 0x8

_libc = ctypes.CDLL(None, use_errno=True)


@dataclass(frozen=True)
class NetnsIdentity:
    """One network namespace: the device and inode of its nsfs file."""

    dev: int
    ino: int

    @classmethod
    def of_fd(cls, fd: int) -> NetnsIdentity:
        info = os.fstat(fd)
        return cls(info.st_dev, info.st_ino)

    @classmethod
    def of_path(cls, path: str) -> NetnsIdentity | None:
        """The namespace at ``path``, or None if there is none (or it cannot be read)."""
        try:
            info = os.stat(path)
        except OSError:
            return None
        return cls(info.st_dev, info.st_ino)

    @classmethod
    def from_note(cls, note: dict[str, Any]) -> NetnsIdentity | None:
        try:
            return cls(int(note["dev"]), int(note["ino"]))
        except (KeyError, TypeError, ValueError):
            return None

    def to_note(self) -> dict[str, int]:
        return {"dev": self.dev, "ino": self.ino}

    def __str__(self) -> str:
        return f"net:[{self.ino}]"


def own() -> NetnsIdentity | None:
    """The namespace this thread is in."""
    return NetnsIdentity.of_path("/proc/thread-self/ns/net")


def initial() -> NetnsIdentity | None:
    """The namespace of PID 1, or None where it cannot be read (a sandbox may hide it)."""
    return NetnsIdentity.of_path("/proc/1/ns/net")


def open_target(path: str, label: str) -> int:
    """An open descriptor of the network namespace at ``path`` (``label`` names it in
    messages); TargetNotFoundError if there is none."""
    try:
        return open_checked(path)
    except (FileNotFoundError, ProcessLookupError):
        raise TargetNotFoundError(f"network namespace {label} not found") from None
    except OSError as exc:
        raise TargetNotFoundError(f"cannot open network namespace {label}: "
                                  f"{exc.strerror}") from None


def open_checked(path: str) -> int:
    """An O_RDONLY descriptor of the namespace file ``path``; OSError if it is not one."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        kind = fcntl.ioctl(fd, NS_GET_NSTYPE)
    except OSError:
        kind = None
    if kind != CLONE_NEWNET:
        os.close(fd)
        raise OSError(errno.EINVAL, f"{path} is not a network namespace")
    return fd


def setns(fd: int) -> None:
    """Move this thread into the network namespace open at ``fd``."""
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


# -- handles -------------------------------------------------------------------------


def private_dir(path: Path) -> Path:
    """Create ``path`` (0700) if needed and check it is a real directory only we can write."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o022:
        raise OSError(errno.EPERM, f"{path} is not a private directory of uid {os.geteuid()}")
    return path


def shared_mount(directory: Path) -> None:
    """Make ``directory`` a mount point with shared propagation, as ``ip netns add`` does
    for /run/netns.

    A process that makes a new mount namespace (``ip netns exec``, a container,
    a service with PrivateTmp) copies every mount, handles included, and a copy
    would keep the network namespace alive after rollback released ours. Under
    a shared mount the copies are its peers or slaves, so the release reaches
    them too.
    """
    target = str(directory).encode()
    made = False
    while _libc.mount(b"", target, b"none", MS_SHARED | MS_REC, None) != 0:
        err = ctypes.get_errno()
        if err != errno.EINVAL or made:  # EINVAL: not a mount point yet
            raise OSError(err, f"cannot make {directory} a shared mount: {os.strerror(err)}")
        if _libc.mount(target, target, b"none", MS_BIND | MS_REC, None) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"cannot make {directory} a mount point: {os.strerror(err)}")
        made = True


def create_handle(fd: int, handle: Path) -> None:
    """Bind-mount the namespace open at ``fd`` on a new empty file ``handle``.

    The directory must be private (:func:`private_dir`) and the file is created
    with O_EXCL|O_NOFOLLOW, so an existing file or a planted symlink is never
    mounted over. ApplyError if the file or the mount cannot be made (the file
    is removed again then).
    """
    try:
        shared_mount(private_dir(handle.parent))
        made = os.open(handle, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                       | os.O_CLOEXEC, 0o400)
    except OSError as exc:
        raise ApplyError(f"cannot create the network namespace handle {handle}: "
                         f"{exc.strerror}") from exc
    os.close(made)
    source = f"/proc/self/fd/{fd}".encode()
    if _libc.mount(source, str(handle).encode(), None, MS_BIND, None) != 0:
        err = ctypes.get_errno()
        with contextlib.suppress(OSError):
            os.unlink(handle)
        raise ApplyError(f"cannot bind-mount the network namespace on {handle}: "
                         f"{os.strerror(err)}")
    if not handle_holds(str(handle), NetnsIdentity.of_fd(fd)):
        raise ApplyError(f"the network namespace handle {handle} does not hold the namespace "
                         "it was made for")


def handle_holds(handle: str, identity: NetnsIdentity) -> bool:
    """Does ``handle`` (still) hold the namespace ``identity``?"""
    return NetnsIdentity.of_path(handle) == identity


def release_handle(handle: str) -> None:
    """Unmount and remove a handle; a handle already gone (or never mounted) is fine.

    RollbackError if it cannot be unmounted or removed.
    """
    if _libc.umount2(handle.encode(), MNT_DETACH | UMOUNT_NOFOLLOW) != 0:
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOENT):  # EINVAL: not a mount point
            raise RollbackError(f"cannot unmount network namespace handle {handle}: "
                                f"{os.strerror(err)}")
    try:
        os.unlink(handle)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise RollbackError(f"cannot remove network namespace handle {handle}: "
                            f"{exc.strerror}") from exc
    _drop_shared_mount_if_unused(Path(handle).parent)


def _drop_shared_mount_if_unused(directory: Path) -> None:
    """Unmount the shared mount :func:`shared_mount` made once it holds no handle.

    Handles are made and released under the state lock, so no handle appears
    meanwhile; the next one mounts it again. A state directory thus carries no
    mount of hostchaos's while no network fault is open.
    """
    if holds_any_handle(directory):
        return
    if _libc.umount2(str(directory).encode(), MNT_DETACH | UMOUNT_NOFOLLOW) != 0:
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOENT):  # EINVAL: not a mount point (any more)
            raise RollbackError(f"cannot unmount {directory}: {os.strerror(err)}")


def holds_any_handle(directory: Path) -> bool:
    """Is there a handle file in ``directory``? (Stops at the first: with a thousand
    namespace faults open, each release asks this.)"""
    try:
        with os.scandir(directory) as entries:
            return any(not entry.name.startswith(".") for entry in entries)
    except OSError:
        return False


def stale_handles(directory: Path, keep: set[str]) -> list[Path]:
    """Handle files in ``directory`` whose name (a fault id) is not in ``keep``."""
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    return sorted(directory / n for n in names if n not in keep and not n.startswith("."))


# -- finding a namespace again ----------------------------------------------------------


@contextlib.contextmanager
def reach(identity: NetnsIdentity, handle: str | None) -> Iterator[str | None]:
    """A path to the namespace ``identity`` for as long as the block runs; raise LookupError
    if the namespace is gone.

    Yields the handle when it still holds the namespace, None when it is this
    thread's own namespace (no path needed), else ``/proc/self/fd/N`` of a
    descriptor opened through another bind mount of it (``ip netns add``, a
    container runtime) or a process inside it (held until the block ends).
    """
    if handle is not None and handle_holds(handle, identity):
        yield handle
        return
    if own() == identity:
        yield None
        return
    fd = find_by_mount(identity)
    if fd is None:
        fd = find_by_process(identity)
    if fd is None:
        raise LookupError(f"network namespace {identity} is gone")
    try:
        yield f"/proc/self/fd/{fd}"
    finally:
        os.close(fd)


def find_by_mount(identity: NetnsIdentity) -> int | None:
    """An open descriptor of ``identity`` through a bind mount of it, or None."""
    try:
        with open("/proc/self/mountinfo", "rb") as handle:
            lines = handle.read().decode(errors="replace").splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        # ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER
        if "-" not in fields or fields[fields.index("-") + 1] != "nsfs":
            continue
        if fields[3] != f"net:[{identity.ino}]":
            continue
        path = _unescape(fields[4])
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError:
            continue
        if NetnsIdentity.of_fd(fd) == identity:
            return fd
        os.close(fd)
    return None


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash in paths as octal escapes."""
    for code in ("\\040", "\\011", "\\012", "\\134"):
        field = field.replace(code, chr(int(code[1:], 8)))
    return field


def find_by_process(identity: NetnsIdentity) -> int | None:
    """An open descriptor of ``identity`` through any process inside it, or None."""
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            fd = os.open(f"/proc/{name}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue  # exited, or hidden from us
        if NetnsIdentity.of_fd(fd) == identity:
            return fd
        os.close(fd)
    return None
