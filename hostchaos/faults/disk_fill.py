"""Kind ``disk-fill``: take a filesystem's free space with one preallocated file."""

from __future__ import annotations

import dataclasses
import errno
import os
import time
from typing import TYPE_CHECKING, Any

from hostchaos.errors import (
    ConflictError,
    PreconditionError,
    RollbackError,
    SpecError,
    TargetNotFoundError,
)
from hostchaos.faults.base import Fault, Spec, require
from hostchaos.faults.options import option
from hostchaos.quantities import (
    check_percent,
    format_size,
    parse_byte_rate,
    parse_percent,
    parse_size,
)

if TYPE_CHECKING:
    from hostchaos.journal import UndoLog

#: what a fill leaves free (root's view) on the filesystem of hostchaos's own state
#: directory, so its records can still be written while the disk is "full"
JOURNAL_HEADROOM = 1 << 20
#: how often a gradual (--rate) fill grows its file
RATE_STEP_SECONDS = 0.25
#: rounds of "measure again, add what is missing" after the first allocation: a
#: filesystem without fallocate (ext2) spends metadata blocks that statvfs counts
CORRECTIONS = 4


@dataclasses.dataclass(frozen=True, kw_only=True)
class DiskFillSpec(Spec):
    """Which filesystem to fill (through a directory on it), and how far."""

    path: str = option("--path", "A directory on the filesystem to fill; the fill file is "
                       "created in it.", required=True, metavar="DIR")
    size: int | None = option("--size", "Take this much space (2G, 500M; binary units).",
                              default=None, parse=lambda t: parse_size(t, what="--size"),
                              metavar="SIZE")
    percent: float | None = option(
        "--percent", "Fill until df would show this Use% (counted against the space "
        "unprivileged programs can use).", default=None,
        parse=lambda t: parse_percent(t, what="--percent"), metavar="PERCENT")
    leave_free: int | None = option(
        "--leave-free", "Fill until only this much stays available.", default=None,
        parse=lambda t: parse_size(t, what="--leave-free"), metavar="SIZE")
    include_reserve: bool = option(
        "--include-reserve", "Take root's reserved blocks too (off: services see a full "
        "disk while root, hostchaos included, can still write).", default=False)
    rate: int | None = option("--rate", "Fill gradually at this many bytes per second "
                              "(50M/s); the warden grows the file.", default=None,
                              parse=lambda t: parse_byte_rate(t, what="--rate"),
                              metavar="SIZE/s")
    container: str | None = option("--container", "Fill --path as this container sees it "
                                   "(through its root), e.g. one of its volumes.",
                                   default=None, metavar="NAME|ID")
    #: set by resolve(): the container's init process, whose root --path is inside
    root_pid: int | None = None
    root_pid_start_ticks: int | None = None

    def __post_init__(self) -> None:
        from hostchaos.system import containers

        given = [f for f, v in (("--size", self.size), ("--percent", self.percent),
                                ("--leave-free", self.leave_free)) if v is not None]
        require(len(given) == 1, "give exactly one of --size, --percent and --leave-free"
                + (f" (got {' and '.join(given)})" if given else ""))
        require(bool(self.path) and "\0" not in self.path, f"--path {self.path!r} is not valid")
        if self.size is not None:
            require(self.size > 0, "--size must be above 0")
        if self.percent is not None:
            check_percent(self.percent, "--percent")
        if self.leave_free is not None:
            require(self.leave_free >= 0, "--leave-free must be 0 or more")
        if self.rate is not None:
            require(self.rate > 0, "--rate must be above 0")
        if self.container is not None:
            require(containers.valid_name(self.container),
                    f"container name or id {self.container!r} is not valid")
            require(self.path.startswith("/"), "--path must be absolute with --container")

    def target_label(self) -> str:
        return f"{self.path} (container {self.container})" if self.container else self.path

    def goal(self) -> str:
        if self.size is not None:
            return f"take {format_size(self.size)}"
        if self.percent is not None:
            return f"fill to {self.percent:g}% used"
        assert self.leave_free is not None
        return f"fill until {format_size(self.leave_free)} is left"


def _exclusive(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)


class DiskFillFault(Fault):
    """Fill a filesystem, leaving services with a full disk.

    Mechanism: one file, ``.hostchaos-<fault id>.fill``, created in ``--path``
    with O_CREAT|O_EXCL|O_NOFOLLOW relative to the directory's descriptor (a
    planted file or symlink is never followed or reused), tagged with the
    ``trusted.hostchaos.fault`` attribute where the filesystem keeps one, and
    grown with fallocate(2) in chunks (written with zeros where the
    filesystem has no fallocate, e.g. ext2). ENOSPC means the target is
    reached. ``--percent`` is the Use% df then shows; by default root's
    reserved blocks stay free, so root (and hostchaos) can still write.
    ``--rate`` grows the file gradually from the warden process.
    The record, with the file's name, is written before the file exists.

    Rollback: checks the file is still the one created (device and inode),
    truncates it to 0 (so the space comes back even while another process
    holds it open) and unlinks it. Survives a reboot: the file stays, so
    `hostchaos sweep` (run it at boot) removes fill files of past boots and
    of a dead warden. On the filesystem of hostchaos's own state directory
    the fill leaves the room a record needs, so rollback is still journaled.

    Example: ``sudo hostchaos inject disk-fill --path /var/lib/mysql --percent 95 --for 10m``
    """

    spec_type = DiskFillSpec
    spec: DiskFillSpec
    survives_reboot = True

    def __init__(self, spec: Spec) -> None:
        super().__init__(spec)
        self._dir_fd: int | None = None

    def _close(self) -> None:
        if self._dir_fd is not None:
            os.close(self._dir_fd)
            self._dir_fd = None

    def describe(self) -> str:
        s = self.spec
        how = f" at {format_size(s.rate)}/s" if s.rate else ""
        reserve = ", root's reserve included" if s.include_reserve else ""
        return f"{s.goal()} on the filesystem of {s.target_label()}{how}{reserve}"

    # -- target -----------------------------------------------------------------------
    def resolve(self) -> None:
        from hostchaos.system import containers, procs

        s = self.spec
        if s.container is not None and s.root_pid is None:
            pid, _runtime = containers.container_pid(s.container)
            self.spec = dataclasses.replace(s, root_pid=pid,
                                            root_pid_start_ticks=procs.start_ticks(pid))
        elif s.container is None and not os.path.isabs(s.path):
            from hostchaos.system import caller  # the agent's client's cwd, or ours

            self.spec = dataclasses.replace(s, path=caller.abspath(s.path, "--path"))

    def _open(self) -> int:
        from hostchaos.system import fill, procs

        s = self.spec
        if s.root_pid is not None and (procs.start_ticks(s.root_pid) != s.root_pid_start_ticks):
            raise TargetNotFoundError(f"container {s.container} (pid {s.root_pid}) is gone")
        if self._dir_fd is None:
            self._dir_fd = fill.open_directory(s.path, s.root_pid)
        return self._dir_fd

    def _want(self, dir_fd: int, held: int = 0) -> int:
        """Bytes still to add, when the fill file already holds ``held``."""
        from hostchaos.system import fill

        s = self.spec
        now = fill.check_fillable(dir_fd, s.target_label())
        size = None if s.size is None else s.size - held
        want = fill.bytes_to_add(now, size=size, percent=s.percent, leave_free=s.leave_free,
                                 include_reserve=s.include_reserve)
        return want

    def _leave_room_for_the_journal(self, dir_fd: int, fd: int) -> None:
        """On the state directory's own filesystem, give back space until a record fits.

        statvfs cannot say what root may still write (ext4 keeps clusters even
        root cannot use), so this asks the filesystem: a probe file the size of
        :data:`JOURNAL_HEADROOM` is written in the state directory, and the fill
        shrinks by that much for as long as the probe does not fit.
        """
        from hostchaos.system import fill

        if self.state_dir is None or not self._holds_state_dir(dir_fd):
            return
        probe = self.state_dir / f".probe-disk-fill-{os.getpid()}"
        probe.unlink(missing_ok=True)  # a probe a killed fill left behind
        for _ in range(16):
            try:
                with open(probe, "wb", opener=_exclusive) as handle:
                    handle.write(bytes(JOURNAL_HEADROOM))
                    handle.flush()
                    os.fsync(handle.fileno())
                return
            except OSError as exc:
                if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                    return  # not a matter of space: the fill cannot help, journaling says
                os.ftruncate(fd, max(os.fstat(fd).st_size - JOURNAL_HEADROOM, 0))
                fill.settle(dir_fd)
            finally:
                probe.unlink(missing_ok=True)

    def _holds_state_dir(self, dir_fd: int) -> bool:
        if self.state_dir is None:
            return False
        try:
            return os.stat(self.state_dir).st_dev == os.fstat(dir_fd).st_dev
        except OSError:
            return False

    def preflight(self) -> None:
        from hostchaos.system import capabilities

        root = capabilities.is_root()
        if not root.ok:
            raise PreconditionError(f"disk-fill needs root ({root.detail}): {root.fix}")
        try:
            want = self._want(self._open())
        except BaseException:
            self._close()
            raise
        if want <= 0:
            self._close()
            raise ConflictError(f"{self.spec.target_label()}: the target is already reached "
                                f"({self.spec.goal()}); nothing to fill")

    # -- apply ----------------------------------------------------------------------------
    def apply(self, undo: UndoLog) -> None:
        from hostchaos.system import fill

        try:
            dir_fd = self._open()
            here = os.fstat(dir_fd)
            undo.note("fill", name=fill.name_for(undo.record.id), path=self.spec.path,
                      root_pid=self.spec.root_pid, dir_device=here.st_dev,
                      dir_inode=here.st_ino)
            fd, made = fill.create(dir_fd, undo.record.id)
            try:
                undo.note("file", name=made.name, device=made.device, inode=made.inode)
                if self.spec.rate is None:
                    self._fill_to_target(dir_fd, fd)
            finally:
                os.close(fd)
        finally:
            self._close()

    def _fill_to_target(self, dir_fd: int, fd: int, *, budget: int | None = None) -> bool:
        """Grow the file towards the target (at most ``budget`` bytes); True once reached."""
        from hostchaos.system import fill

        for _ in range(1 + CORRECTIONS):
            want = self._want(dir_fd, os.fstat(fd).st_size)
            if budget is not None:
                want = min(want, budget)
            if want <= 0:
                return True
            _, full = fill.grow(fd, os.fstat(fd).st_size, want)
            fill.settle(dir_fd)
            self._leave_room_for_the_journal(dir_fd, fd)
            if full:
                return True
            if budget is not None:
                return self._want(dir_fd, os.fstat(fd).st_size) <= 0
        return True

    def work(self, undo: UndoLog) -> float | None:
        """A --rate fill: grow by one step's worth; seconds until the next step, None when done."""
        from hostchaos.system import fill

        if self.spec.rate is None:
            return None
        found = self._noted_file(undo)
        if found is None:
            return None
        dir_fd, made = found
        try:
            fd = os.open(made.name, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        except OSError:
            return None  # removed: rolled back meanwhile
        try:
            info = os.fstat(fd)
            if (info.st_dev, info.st_ino) != (made.device, made.inode) or info.st_nlink == 0:
                return None
            step = max(int(self.spec.rate * RATE_STEP_SECONDS), fill.SMALLEST_CHUNK)
            reached = self._fill_to_target(dir_fd, fd, budget=step)
        finally:
            os.close(fd)
            os.close(dir_fd)
        return None if reached else RATE_STEP_SECONDS

    # -- rollback -------------------------------------------------------------------------
    def _noted_file(self, undo: UndoLog) -> tuple[int, Any] | None:
        """(directory fd, FillFile) from the notes, or None if the directory is gone."""
        from hostchaos.system import fill

        where = undo.steps("fill")
        if not where:
            return None
        note = where[0]
        path, root_pid = str(note["path"]), note.get("root_pid")
        try:
            dir_fd = fill.open_directory(path, int(root_pid) if root_pid else None)
        except (TargetNotFoundError, SpecError):
            return None
        info = os.fstat(dir_fd)
        if (info.st_dev, info.st_ino) != (note["dir_device"], note["dir_inode"]):
            os.close(dir_fd)
            return None  # another directory now has that name: ours went with the old one
        made = undo.steps("file")
        if made:
            ident = fill.FillFile(str(made[0]["name"]), int(made[0]["device"]),
                                  int(made[0]["inode"]))
        else:  # created, then stopped before its identity was noted: trust our own tag
            ident = self._tagged(dir_fd, str(note["name"]), undo.record.id)
            if ident is None:
                os.close(dir_fd)
                return None
        return dir_fd, ident

    @staticmethod
    def _tagged(dir_fd: int, name: str, fault_id: str) -> Any:
        from hostchaos.system import fill

        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        except OSError:
            return None
        try:
            try:
                tag = os.getxattr(fd, fill.XATTR)
            except OSError:
                tag = fault_id.encode()  # no trusted xattrs here: the unique name is the tag
            info = os.fstat(fd)
            return fill.FillFile(name, info.st_dev, info.st_ino) if tag == fault_id.encode() \
                else None
        finally:
            os.close(fd)

    def rollback(self, undo: UndoLog) -> None:
        from hostchaos.system import fill

        found = self._noted_file(undo)
        if found is None:
            return  # never created, or its directory (and filesystem) is gone
        dir_fd, made = found
        try:
            result = fill.remove(dir_fd, made)
        finally:
            os.close(dir_fd)
        if result.startswith("left alone"):
            undo.remark(result)
        elif result not in ("removed", "gone"):
            raise RollbackError(result)

    def observe(self, undo: UndoLog) -> dict[str, Any]:
        from hostchaos.system import fill

        found = self._noted_file(undo)
        if found is None:
            return {"present": False}
        dir_fd, made = found
        try:
            held = fill.size_of(dir_fd, made)
            now = fill.usage(dir_fd)
        finally:
            os.close(dir_fd)
        return {"present": held is not None, "file": made.name, "bytes": held or 0,
                "filesystem": {"total": now.total, "available": now.available,
                               "use_percent": round(now.use_percent, 2)},
                "observed_at": time.time()}
