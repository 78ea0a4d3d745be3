"""Fill files: the only code that creates, grows and removes the files that fill a disk.

A fill file is ``.hostchaos-<fault id>.fill`` inside the target directory. It is
created relative to an open descriptor of that directory with
O_CREAT|O_EXCL|O_NOFOLLOW (a planted file or symlink makes creation fail, never
redirect it), tagged with the extended attribute ``trusted.hostchaos.fault``
where the filesystem keeps one (only root can set trusted.* attributes), and
grown with fallocate(2) in chunks; a filesystem without fallocate
(EOPNOTSUPP: ext2, some FUSE) gets the bytes written instead. ENOSPC means the
disk is full: the target is reached.

Removal checks that the name still holds the same (device, inode) as created,
truncates it to 0 and then unlinks it, so the space comes back even while
another process keeps the file open.

Paths inside a container are resolved with openat2(RESOLVE_IN_ROOT) from the
container's root (``/proc/PID/root``), so a symlink inside the container can
never lead outside it.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from hostchaos.errors import (
    ApplyError,
    ConflictError,
    HostchaosError,
    SpecError,
    TargetNotFoundError,
)

XATTR = "trusted.hostchaos.fault"
PREFIX = ".hostchaos-"
SUFFIX = ".fill"
#: the largest step fallocate or write takes at once; smaller ones near the end
CHUNK = 64 << 20
SMALLEST_CHUNK = 4096

#: statfs f_type of filesystems hostchaos will not fill: the space is not this host's
NETWORK_FS = {
    0x6969: "nfs", 0xFF534D42: "cifs", 0xFE534D42: "smb2", 0x517B: "smb",
    0x01021997: "9p", 0x00C36400: "ceph", 0x65735546: "fuse", 0x5346414F: "afs",
    0x564C: "ncp", 0x6B414653: "afs", 0x013111A8: "ibrix", 0x19830326: "fhgfs",
    0x47504653: "gpfs", 0x0BD00BD0: "lustre",
}
PROC_SUPER_MAGIC, SYSFS_MAGIC = 0x9FA0, 0x62656572

_SYS_OPENAT2 = 437  # x86-64 and arm64 alike (a "common" syscall number)
_RESOLVE_IN_ROOT = 0x10
_RESOLVE_NO_MAGICLINKS = 0x02
_FALLOC_EXTEND_SIZE = 0  # mode 0: allocate and grow the file size (ls shows it)
_libc = ctypes.CDLL(None, use_errno=True)


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                ("resolve", ctypes.c_uint64)]


class _Statfs(ctypes.Structure):
    _fields_ = [("f_type", ctypes.c_long), ("f_bsize", ctypes.c_long),
                ("f_blocks", ctypes.c_ulong), ("f_bfree", ctypes.c_ulong),
                ("f_bavail", ctypes.c_ulong), ("f_files", ctypes.c_ulong),
                ("f_ffree", ctypes.c_ulong), ("f_fsid", ctypes.c_int * 2),
                ("f_namelen", ctypes.c_long), ("f_frsize", ctypes.c_long),
                ("f_flags", ctypes.c_long), ("f_spare", ctypes.c_long * 4)]


@dataclass(frozen=True)
class Usage:
    """A filesystem's space as statvfs reports it, in bytes."""

    total: int
    free: int       # free blocks, root's reserve included
    available: int  # what unprivileged programs may still use
    read_only: bool
    fs_type: int

    @property
    def used(self) -> int:
        return self.total - self.free

    @property
    def reserved(self) -> int:
        return max(self.free - self.available, 0)

    @property
    def use_percent(self) -> float:
        """Use% as df prints it: used / (used + available)."""
        room = self.used + self.available
        return 100.0 * self.used / room if room else 100.0


def usage(dir_fd: int) -> Usage:
    """Space of the filesystem holding the open directory ``dir_fd``."""
    info = os.fstatvfs(dir_fd)
    buf = _Statfs()
    if _libc.fstatfs(dir_fd, ctypes.byref(buf)) != 0:
        err = ctypes.get_errno()
        raise ApplyError(f"fstatfs: {os.strerror(err)}")
    return Usage(total=info.f_blocks * info.f_frsize, free=info.f_bfree * info.f_frsize,
                 available=info.f_bavail * info.f_frsize,
                 read_only=bool(info.f_flag & os.ST_RDONLY), fs_type=buf.f_type & 0xFFFFFFFF)


def bytes_to_add(now: Usage, *, size: int | None = None, percent: float | None = None,
                 leave_free: int | None = None, include_reserve: bool = False) -> int:
    """How many bytes a fill file must take to reach its target (may be <= 0: reached).

    ``percent`` is the Use% df would then show (counted against what
    unprivileged programs can use), or with ``include_reserve`` the share of
    the whole filesystem; ``leave_free`` is what stays available (with
    ``include_reserve``: free, the reserve included).
    """
    room = now.free if include_reserve else now.available
    if size is not None:
        return min(size, room)
    if percent is not None:
        whole = now.total if include_reserve else now.used + now.available
        return min(int(percent / 100.0 * whole) - now.used, room)
    assert leave_free is not None
    return room - leave_free


def open_directory(path: str, root_pid: int | None = None) -> int:
    """An O_DIRECTORY descriptor of ``path``; inside ``root_pid``'s root when given."""
    try:
        if root_pid is None:
            return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        root = os.open(f"/proc/{root_pid}/root", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            return _openat2_in_root(root, path)
        finally:
            os.close(root)
    except FileNotFoundError:
        where = f" in the root of process {root_pid}" if root_pid else ""
        raise TargetNotFoundError(f"directory {path} not found{where}") from None
    except NotADirectoryError:
        raise SpecError(f"--path {path} is not a directory") from None
    except PermissionError as exc:
        raise TargetNotFoundError(f"directory {path}: {exc.strerror}") from None


def _openat2_in_root(root_fd: int, path: str) -> int:
    how = _OpenHow(os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, 0,
                   _RESOLVE_IN_ROOT | _RESOLVE_NO_MAGICLINKS)
    fd = _libc.syscall(_SYS_OPENAT2, root_fd, path.encode(), ctypes.byref(how),
                       ctypes.sizeof(how))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), path)
    return int(fd)


def check_fillable(dir_fd: int, label: str) -> Usage:
    """The filesystem's usage, or ConflictError if it is read-only, remote or virtual."""
    now = usage(dir_fd)
    if now.read_only:
        raise ConflictError(f"{label} is on a read-only filesystem; nothing to fill")
    kind = NETWORK_FS.get(now.fs_type)
    if kind:
        raise ConflictError(f"{label} is on a network filesystem ({kind}); hostchaos fills only "
                            "local disks (their space is this host's)")
    if now.fs_type in (PROC_SUPER_MAGIC, SYSFS_MAGIC) or now.total == 0:
        raise ConflictError(f"{label} is on a virtual filesystem with no space to fill")
    return now


def name_for(fault_id: str) -> str:
    return f"{PREFIX}{fault_id}{SUFFIX}"


@dataclass(frozen=True)
class FillFile:
    """A fill file as created: where, and which inode, so removal never hits another file."""

    name: str
    device: int
    inode: int


def create(dir_fd: int, fault_id: str) -> tuple[int, FillFile]:
    """Create the fill file (never following or reusing anything); (fd, identity)."""
    name = name_for(fault_id)
    try:
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600, dir_fd=dir_fd)
    except FileExistsError:
        raise ConflictError(f"{name} already exists; hostchaos never reuses or follows a file "
                            "it did not just create") from None
    except OSError as exc:
        raise ApplyError(f"creating {name}: {exc.strerror}") from exc
    info = os.fstat(fd)
    try:
        os.setxattr(fd, XATTR, fault_id.encode())
    except OSError:
        pass  # the filesystem keeps no trusted xattrs: (device, inode) alone identify it
    return fd, FillFile(name, info.st_dev, info.st_ino)


def grow(fd: int, offset: int, want: int, *, chunk: int = CHUNK) -> tuple[int, bool]:
    """Allocate up to ``want`` more bytes after ``offset``: (bytes added, disk full)."""
    added = 0
    step = chunk
    while added < want:
        n = min(step, want - added)
        try:
            _allocate(fd, offset + added, n)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                if step <= SMALLEST_CHUNK:
                    return added, True
                step = max(step // 16, SMALLEST_CHUNK)  # close in on the last free blocks
                continue
            raise ApplyError(f"filling: {exc.strerror}") from exc
        added += n
    return added, False


def _allocate(fd: int, offset: int, length: int) -> None:
    result = _libc.fallocate(fd, _FALLOC_EXTEND_SIZE, ctypes.c_long(offset),
                             ctypes.c_long(length))
    if result == 0:
        return
    err = ctypes.get_errno()
    if err not in (errno.EOPNOTSUPP, errno.ENOSYS):
        raise OSError(err, os.strerror(err))
    _write_zeros(fd, offset, length)


def _write_zeros(fd: int, offset: int, length: int) -> None:
    """The filesystem has no fallocate: write the bytes (and sync, so they are really taken)."""
    block = bytes(min(length, 1 << 20))
    done = 0
    while done < length:
        written = os.pwrite(fd, block[:length - done], offset + done)
        if written <= 0:
            raise OSError(errno.EIO, "write wrote nothing")
        done += written
    os.fdatasync(fd)


def size_of(dir_fd: int, fill: FillFile) -> int | None:
    """Bytes the fill file holds on disk now, or None if it is gone (or not ours)."""
    try:
        info = os.stat(fill.name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None
    if (info.st_dev, info.st_ino) != (fill.device, fill.inode):
        return None
    return int(info.st_blocks) * 512


def remove(dir_fd: int, fill: FillFile) -> str:
    """Truncate and unlink the fill file; "removed", "gone" or why it was left alone."""
    try:
        info = os.stat(fill.name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return "gone"
    if not stat.S_ISREG(info.st_mode) or (info.st_dev, info.st_ino) != (fill.device, fill.inode):
        return (f"left alone: {fill.name} is now another file (device {info.st_dev}, inode "
                f"{info.st_ino}), not the one hostchaos created")
    try:
        fd = os.open(fill.name, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except FileNotFoundError:
        return "gone"
    try:
        if (os.fstat(fd).st_dev, os.fstat(fd).st_ino) != (fill.device, fill.inode):
            return f"left alone: {fill.name} was replaced while hostchaos looked"
        os.ftruncate(fd, 0)  # frees the blocks even if another process holds the file open
    finally:
        os.close(fd)
    try:
        os.unlink(fill.name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass
    settle(dir_fd)
    return "removed"


def settle(dir_fd: int) -> None:
    """Commit the filesystem (syncfs), so statvfs shows what was just freed or taken.

    btrfs gives freed space back only when its transaction commits (every 30 s
    by default); without this a fill would read its own removal as not done.
    """
    _libc.syncfs(dir_fd)


def reopen_directory(path: str, device: int, inode: int) -> int | None:
    """The directory a fill was made in, if ``path`` still names it (same device and inode)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None
    info = os.fstat(fd)
    if (info.st_dev, info.st_ino) != (device, inode):
        os.close(fd)
        return None
    return fd


def find_fill_files(path: Path) -> list[Path]:
    """Fill files directly under ``path`` (for sweep and tests)."""
    try:
        return sorted(p for p in path.iterdir() if p.name.startswith(PREFIX)
                      and p.name.endswith(SUFFIX))
    except OSError as exc:
        raise HostchaosError(f"listing {path}: {exc.strerror}") from exc
