"""cgroup v1 and v2 behind one adapter: the only code in hostchaos that touches cgroupfs.

Version: ``/sys/fs/cgroup/cgroup.controllers`` exists -> v2, the unified
hierarchy mounted at /sys/fs/cgroup. Otherwise v1 (legacy or hybrid): one
hierarchy per controller group, mounted at ``/sys/fs/cgroup/<names>``
(``cpu``, ``memory``, ``cpu,cpuacct``, ``systemd`` for name=systemd ...); a
hybrid host's ``unified`` v2 mount carries no controllers and is not used.

Which library does what:

- **cgroupspy** (v1 only, where it has a typed file): reading and writing
  ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` (``CpuController``) and
  ``memory.limit_in_bytes`` (``MemoryController``), ``cpu.stat`` and
  ``memory.oom_control`` for `status`, and creating/removing hostchaos's own
  cgroups (``Node.create_cgroup`` / ``Node.delete_cgroup``). Its tree is built
  for the one cgroup concerned (a chain of ``Node`` objects), never by walking
  the whole filesystem.
- **plain file I/O** everywhere else: all of v2; the v1 ``pids`` controller
  (cgroupspy has none); a v1 controller co-mounted under a name cgroupspy does
  not map (``cpu,cpuacct``); moving tasks (the kernel takes one id per
  write(2), while cgroupspy's ``tasks``/``procs`` setters write the whole
  list in one); listings of ``cgroup.procs`` / ``tasks`` / ``cgroup.threads``;
  ``/proc/PID/cgroup``.

Every OSError is turned into a hostchaos error here: ENOENT/ENODEV/ESRCH
(the cgroup or process is gone) -> :class:`TargetNotFoundError`, which rollback
treats as success; anything else -> :class:`ApplyError` naming file, value and
errno. Values are handled as the exact strings the kernel shows, so rollback
can write back and compare exactly what it read.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hostchaos.errors import (
    ApplyError,
    HostchaosError,
    PreconditionError,
    TargetNotFoundError,
)
from hostchaos.system.cgroup_refs import V1 as V1
from hostchaos.system.cgroup_refs import V2 as V2
from hostchaos.system.cgroup_refs import CgroupRef as CgroupRef
from hostchaos.system.cgroup_refs import Hierarchy as Hierarchy
from hostchaos.system.cgroup_refs import clean_path as clean_path

ROOT = Path("/sys/fs/cgroup")
#: name prefix of every cgroup hostchaos creates: hostchaos-<fault id>
PREFIX = "hostchaos-"

#: v1 files with a typed cgroupspy descriptor: file -> (controller class name, attribute)
_CGROUPSPY_FILES = {
    "cpu.cfs_quota_us": "cfs_quota_us",
    "cpu.cfs_period_us": "cfs_period_us",
    "memory.limit_in_bytes": "limit_in_bytes",
}

_GONE = (errno.ENOENT, errno.ENODEV, errno.ESRCH)


class Gone(TargetNotFoundError):
    """The cgroup or process vanished: for rollback, "already gone" is success."""


def warm_up() -> None:
    """Import what rollback needs (cgroupspy, /proc helpers) ahead of time, for the warden."""
    import cgroupspy.nodes  # noqa: F401

    import hostchaos.system.procs  # noqa: F401


# -- errors at the boundary ----------------------------------------------------


def _fail(exc: OSError, action: str) -> HostchaosError:
    reason = exc.strerror or errno.errorcode.get(exc.errno or 0, str(exc))
    if exc.errno in _GONE:
        return Gone(f"{action}: {reason}")
    if exc.errno in (errno.EACCES, errno.EPERM) and os.geteuid() != 0:
        return PreconditionError(f"{action}: {reason} (resource faults need root)")
    return ApplyError(f"{action}: the kernel refused ({reason})")


# -- the adapter ------------------------------------------------------------------


class Cgroups:
    """The host's cgroup filesystem, v1 or v2."""

    def __init__(self, root: Path = ROOT, proc: Path = Path("/proc")) -> None:
        self.root = root
        self.proc = proc
        if (root / "cgroup.controllers").exists():
            self.version = V2
            self.hierarchies = [Hierarchy(V2, root, tuple(self._read_words(
                root / "cgroup.controllers")))]
        else:
            self.version = V1
            self.hierarchies = self._v1_hierarchies()

    # -- discovery ---------------------------------------------------------------
    def _v1_hierarchies(self) -> list[Hierarchy]:
        found = []
        try:
            entries = sorted(self.root.iterdir())
        except OSError:
            return []
        for entry in entries:
            if entry.is_symlink() or not (entry / "cgroup.procs").exists():
                continue
            if entry.name == "unified":
                continue  # the hybrid layout's v2 mount: no controllers on it
            names = tuple("name=systemd" if n == "systemd" else n
                          for n in entry.name.split(","))
            found.append(Hierarchy(V1, entry, names))
        return found

    @staticmethod
    def _read_words(path: Path) -> list[str]:
        try:
            return path.read_text().split()
        except OSError:
            return []

    def hierarchy_for(self, controller: str) -> Hierarchy | None:
        """The hierarchy where ``controller`` can be used, or None."""
        for hierarchy in self.hierarchies:
            if controller in hierarchy.controllers:
                return hierarchy
        return None

    def require(self, controller: str) -> Hierarchy:
        hierarchy = self.hierarchy_for(controller)
        if hierarchy is not None:
            return hierarchy
        if self.version == V2:
            raise PreconditionError(
                f"cgroup controller {controller} is not available in the unified hierarchy "
                f"({self.root}/cgroup.controllers lists: "
                f"{' '.join(self.hierarchies[0].controllers) or 'nothing'}); "
                f"boot with it enabled (cgroup_enable={controller})")
        raise PreconditionError(
            f"cgroup v1 controller {controller} is not mounted under {self.root}; "
            f"mount it: mkdir {self.root}/{controller} && "
            f"mount -t cgroup -o {controller} cgroup {self.root}/{controller}")

    # -- membership ----------------------------------------------------------------
    def _memberships(self, proc_cgroup: Path) -> dict[str, str]:
        """Parse /proc/PID/cgroup into controller (or "" for v2) -> path."""
        try:
            text = proc_cgroup.read_text()
        except OSError as exc:
            raise _fail(exc, f"reading {proc_cgroup}") from exc
        out: dict[str, str] = {}
        for line in text.splitlines():
            parts = line.split(":", 2)
            if len(parts) != 3:
                continue
            _, names, path = parts
            for name in names.split(",") if names else [""]:
                out[name] = path
        return out

    def cgroup_of(self, pid: int, hierarchy: Hierarchy, tid: int | None = None) -> CgroupRef:
        """The cgroup of process ``pid`` (or its thread ``tid``) in ``hierarchy``."""
        where = self.proc / str(pid) / (f"task/{tid}/cgroup" if tid else "cgroup")
        members = self._memberships(where)
        key = "" if hierarchy.version == V2 else hierarchy.controllers[0]
        path = members.get(key)
        if path is None:
            raise Gone(f"process {pid} has no cgroup in the {hierarchy.name} hierarchy")
        return CgroupRef(hierarchy, path.removesuffix(" (deleted)"))

    def thread_cgroups(self, pid: int, hierarchy: Hierarchy) -> dict[int, str]:
        """tid -> cgroup path for every thread of ``pid`` (v1: threads may differ)."""
        out = {}
        try:
            tids = sorted(int(t) for t in os.listdir(self.proc / str(pid) / "task"))
        except OSError as exc:
            raise _fail(exc, f"listing threads of process {pid}") from exc
        for tid in tids:
            try:
                out[tid] = self.cgroup_of(pid, hierarchy, tid).path
            except Gone:
                continue  # the thread ended meanwhile
        return out

    def ref(self, hierarchy: Hierarchy, path: str) -> CgroupRef:
        """A cgroup named by the user: relative to the hierarchy root, or a full /sys path.

        Every spelling of one cgroup gives the same ref: ``x``, ``/x/``,
        ``//x``, ``/x/.``, ``/sys/fs/cgroup/cpu,cpuacct/x`` and, on v1,
        ``/sys/fs/cgroup/cpu/x`` (another name of the same hierarchy).
        """
        text = path.strip()
        if text.startswith("/"):
            text = clean_path(text)
            mount, root = clean_path(str(hierarchy.mount)), clean_path(str(self.root))
            if text == mount or text.startswith(mount + "/"):
                text = text[len(mount):]
            elif text.startswith(root + "/") and hierarchy.version == V1:
                # /sys/fs/cgroup/<other hierarchy>/x: the same path in this hierarchy
                text = "/".join(text[len(root) + 1:].split("/")[1:])
        return CgroupRef(hierarchy, clean_path(text))

    def exists(self, ref: CgroupRef) -> bool:
        return (ref.dir / "cgroup.procs").exists()

    def inode(self, ref: CgroupRef) -> int:
        """The inode of ``ref``'s directory: tells a cgroup from a later one of the same name."""
        try:
            return os.stat(ref.dir).st_ino
        except OSError as exc:
            raise _fail(exc, f"reading cgroup {ref.label()}") from exc

    def children(self, ref: CgroupRef) -> list[str]:
        try:
            return sorted(e.name for e in ref.dir.iterdir() if e.is_dir())
        except OSError as exc:
            raise _fail(exc, f"listing cgroup {ref.label()}") from exc

    def _ids(self, ref: CgroupRef, filename: str) -> list[int]:
        try:
            text = (ref.dir / filename).read_text()
        except OSError as exc:
            raise _fail(exc, f"reading {ref.dir / filename}") from exc
        return [int(x) for x in text.split()]

    def procs(self, ref: CgroupRef) -> list[int]:
        """Processes (thread-group ids) directly in ``ref``."""
        return self._ids(ref, "cgroup.procs")

    def tasks(self, ref: CgroupRef) -> list[int]:
        """Threads directly in ``ref`` (v1 ``tasks``, v2 ``cgroup.threads``)."""
        return self._ids(ref, "tasks" if ref.hierarchy.version == V1 else "cgroup.threads")

    def subtree_procs(self, ref: CgroupRef) -> list[int]:
        """Processes in ``ref`` and all its descendants."""
        found: set[int] = set()
        for dirpath, _dirs, files in os.walk(ref.dir):
            if "cgroup.procs" in files:
                try:
                    found.update(int(x) for x in Path(dirpath, "cgroup.procs").read_text().split())
                except OSError:
                    continue  # removed while walking
        return sorted(found)

    # -- moving --------------------------------------------------------------------
    def _write_raw(self, path: Path, value: str, action: str) -> None:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise _fail(exc, action) from exc
        try:
            os.write(fd, value.encode())
        except OSError as exc:
            raise _fail(exc, action) from exc
        finally:
            os.close(fd)

    def move_process(self, pid: int, ref: CgroupRef) -> None:
        """Move process ``pid`` with all its threads into ``ref``."""
        self._write_raw(ref.dir / "cgroup.procs", str(pid),
                        f"moving process {pid} into cgroup {ref.label()}")

    def move_thread(self, tid: int, ref: CgroupRef) -> None:
        """Move the single thread ``tid`` into ``ref`` (v1 ``tasks``, v2 ``cgroup.threads``)."""
        filename = "tasks" if ref.hierarchy.version == V1 else "cgroup.threads"
        self._write_raw(ref.dir / filename, str(tid),
                        f"moving thread {tid} into cgroup {ref.label()}")

    def move_to_nearest(self, task: int, ref: CgroupRef, *, thread: bool = False) -> CgroupRef:
        """Move ``task`` into ``ref`` or, if that is gone or refuses it, its nearest ancestor
        that accepts it; return where it went.

        ``thread``: move the single thread (v1), else the whole process. On v1
        every cgroup accepts tasks. On v2 a cgroup that hands controllers to its
        children refuses processes with EBUSY (the "no internal processes"
        rule), but the root cgroup is exempt from that rule, so the walk up
        always ends. Raises :class:`Gone` when the task itself is gone.
        """
        move = self.move_thread if thread else self.move_process
        refused: HostchaosError = Gone(f"no ancestor of cgroup {ref.label()} exists")
        for candidate in reversed(ref.ancestors()):
            if not self.exists(candidate):
                continue
            try:
                move(task, candidate)
                return candidate
            except Gone:
                if self.exists(candidate):
                    raise  # the task exited
            except ApplyError as exc:
                refused = exc
        raise refused

    # -- creating and removing (hostchaos's own cgroups only) ------------------------
    def _v1_node(self, ref: CgroupRef) -> Any:
        """A cgroupspy Node chain for ``ref`` (v1), without walking the filesystem."""
        from cgroupspy.nodes import Node

        mount = ref.hierarchy.mount
        node = Node(str(mount.parent).encode())
        node = Node(mount.name.encode(), parent=node)
        for part in ref.path.strip("/").split("/"):
            if part:
                node = Node(part.encode(), parent=node)
        return node

    def create(self, ref: CgroupRef) -> None:
        """Create ``ref`` (its parent must exist). Only ever called for hostchaos-* cgroups."""
        assert ref.name.startswith(PREFIX), ref
        parent = ref.parent()
        assert parent is not None
        try:
            if ref.hierarchy.version == V1:
                self._v1_node(parent).create_cgroup(ref.name)
            else:
                os.mkdir(ref.dir)
        except FileExistsError:
            return  # a retried apply: ours already
        except OSError as exc:
            raise _fail(exc, f"creating cgroup {ref.label()}") from exc

    def remove(self, ref: CgroupRef) -> None:
        """Remove the (empty) hostchaos cgroup ``ref``; already gone is fine."""
        assert ref.name.startswith(PREFIX), ref
        parent = ref.parent()
        assert parent is not None
        try:
            if ref.hierarchy.version == V1:
                self._v1_node(parent).delete_cgroup(ref.name)
            else:
                os.rmdir(ref.dir)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise _fail(exc, f"removing cgroup {ref.label()}") from exc

    # -- v2 controller delegation ---------------------------------------------------
    def enabled(self, ref: CgroupRef) -> set[str]:
        """Controllers ``ref`` hands to its children (v2 cgroup.subtree_control)."""
        return set(self._read_words(ref.dir / "cgroup.subtree_control"))

    def set_enabled(self, ref: CgroupRef, controller: str, on: bool) -> None:
        sign = "+" if on else "-"
        self._write_raw(ref.dir / "cgroup.subtree_control", f"{sign}{controller}",
                        f"writing {sign}{controller} to {ref.label()}/cgroup.subtree_control")

    def cgroup_type(self, ref: CgroupRef) -> str:
        try:
            return (ref.dir / "cgroup.type").read_text().strip()
        except OSError:
            return "domain"

    # -- values ----------------------------------------------------------------------
    def has_file(self, ref: CgroupRef, filename: str) -> bool:
        return (ref.dir / filename).exists()

    def read(self, ref: CgroupRef, filename: str) -> str:
        """The exact text of a cgroup file, stripped."""
        try:
            if ref.hierarchy.version == V1 and filename in _CGROUPSPY_FILES:
                controller = self._v1_node(ref).controller
                if controller is not None:
                    value = getattr(controller, _CGROUPSPY_FILES[filename])
                    return "-1" if value is None else str(value)
            return (ref.dir / filename).read_text().strip()
        except OSError as exc:
            raise _fail(exc, f"reading {ref.label()}/{filename}") from exc

    def write(self, ref: CgroupRef, filename: str, value: str) -> None:
        action = f"writing {value} to {ref.label()}/{filename}"
        if ref.hierarchy.version == V1 and filename in _CGROUPSPY_FILES:
            controller = self._v1_node(ref).controller
            if controller is not None:
                try:
                    setattr(controller, _CGROUPSPY_FILES[filename], int(value))
                except OSError as exc:
                    raise _fail(exc, action) from exc
                return
        self._write_raw(ref.dir / filename, value, action)

    def read_stat(self, ref: CgroupRef, filename: str) -> dict[str, int]:
        """A flat "key value" file (cpu.stat, memory.events, memory.oom_control, pids.events)."""
        if ref.hierarchy.version == V1 and filename in ("cpu.stat", "memory.oom_control"):
            controller = self._v1_node(ref).controller
            attr = "stat" if filename == "cpu.stat" else "oom_control"
            if controller is not None:
                try:
                    data = getattr(controller, attr)
                except OSError as exc:
                    raise _fail(exc, f"reading {ref.label()}/{filename}") from exc
                if isinstance(data, dict):
                    return {str(k): int(v) for k, v in data.items()}
        text = self.read(ref, filename)
        out = {}
        for line in text.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[1].lstrip("-").isdigit():
                out[parts[0]] = int(parts[1])
        return out


# -- limits --------------------------------------------------------------------------


def write_limits(fs: Cgroups, ref: CgroupRef, values: dict[str, str]) -> None:
    """Write ``values`` (file -> text) in their order (the kind chose an order the kernel takes)."""
    for filename, value in values.items():
        fs.write(ref, filename, value)


def read_limits(fs: Cgroups, ref: CgroupRef, files: list[str]) -> dict[str, str]:
    return {filename: fs.read(ref, filename) for filename in files}


def same_value(wanted: str, got: str) -> bool:
    """Does a read-back value equal the one written? ("no limit" has several spellings in v1)."""
    if wanted == got:
        return True

    def unlimited(v: str) -> bool:
        return v in ("-1", "max") or (v.isdigit() and int(v) >= 2**62)

    return unlimited(wanted) and unlimited(got)


def iter_hostchaos_cgroups(fs: Cgroups) -> Iterator[CgroupRef]:
    """Every hostchaos-* cgroup on the host, in every hierarchy (for tests and doctor)."""
    for hierarchy in fs.hierarchies:
        for dirpath, dirs, _files in os.walk(hierarchy.mount):
            for name in dirs:
                if name.startswith(PREFIX):
                    rel = os.path.relpath(os.path.join(dirpath, name), hierarchy.mount)
                    yield CgroupRef(hierarchy, "/" + rel)
