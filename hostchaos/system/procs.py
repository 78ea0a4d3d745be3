"""Process identity read straight from /proc: cheap enough for every CLI call.

A PID alone is not an identity (PIDs are reused), so hostchaos always pairs it
with the process's start time in clock ticks since boot (field 22 of
``/proc/PID/stat``).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass


def _stat(pid: int) -> bytes | None:
    """The text of /proc/PID/stat, or None if the process is gone (one open, one read)."""
    try:
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    try:
        return os.read(fd, 4096)  # the kernel writes the whole line in one read
    except OSError:  # ESRCH: it exited between the open and the read
        return None
    finally:
        os.close(fd)


def _after_comm(raw: bytes) -> list[bytes]:
    # comm (field 2) may hold spaces and parentheses: split after the last ')'.
    return raw[raw.rindex(b")") + 2 :].split()


def start_ticks(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot, or None if it is gone."""
    raw = _stat(pid)
    return None if raw is None else int(_after_comm(raw)[19])


def state_letter(pid: int) -> str | None:
    """The one-letter state of ``pid`` (R, S, T, Z ...) or None if it is gone."""
    raw = _stat(pid)
    return None if raw is None else _after_comm(raw)[0].decode()


#: ProcessRef.current by pid (one entry: this process's)
_CURRENT: dict[int, ProcessRef] = {}


@dataclass(frozen=True)
class ProcessRef:
    """A process named by PID *and* start time, so a reused PID never matches."""

    pid: int
    start_ticks: int

    @classmethod
    def current(cls) -> ProcessRef:
        """This process (read once per process: a fork's child reads its own)."""
        pid = os.getpid()
        known = _CURRENT.get(pid)
        if known is None:
            _CURRENT.clear()
            known = _CURRENT[pid] = cls.of(pid)
        return known

    @classmethod
    def of(cls, pid: int) -> ProcessRef:
        ticks = start_ticks(pid)
        if ticks is None:
            raise ProcessLookupError(pid)
        return cls(pid, ticks)

    def alive(self) -> bool:
        raw = _stat(self.pid)
        if raw is None:
            return False
        fields = _after_comm(raw)
        return int(fields[19]) == self.start_ticks and fields[0] not in (b"Z", b"X")

    def terminate(self) -> None:
        """SIGTERM the process if it is still this one (never a reused PID)."""
        import signal

        if self.alive():
            try:
                os.kill(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def to_dict(self) -> dict[str, int]:
        return {"pid": self.pid, "start_ticks": self.start_ticks}

    @classmethod
    def from_dict(cls, data: object) -> ProcessRef | None:
        if not isinstance(data, dict):
            return None
        return cls(int(data["pid"]), int(data["start_ticks"]))


@functools.cache
def boot_id() -> str:
    """The kernel's id for this boot; records from another boot are judged differently.

    Read once per process: a process does not outlive the boot it started in.
    """
    with open("/proc/sys/kernel/random/boot_id") as handle:
        return handle.read().strip()


# -- process facts for resource faults -------------------------------------------------

#: PF_KTHREAD in the flags of /proc/PID/stat (field 9): the task is a kernel thread
PF_KTHREAD = 0x00200000


def _stat_fields(pid: int) -> list[bytes] | None:
    """Fields 3.. of /proc/PID/stat (after comm), or None if the process is gone."""
    raw = _stat(pid)
    return None if raw is None else _after_comm(raw)


def exists(pid: int) -> bool:
    """Is there a live (not zombie) process or thread ``pid``?"""
    return state_letter(pid) not in (None, "Z", "X")


def is_kernel_thread(pid: int) -> bool:
    """A kernel thread: PF_KTHREAD in its flags.

    Only the flag says so: in a pid namespace (a container, a sandbox) PID 2
    and the children of PID 2 are ordinary processes.
    """
    fields = _stat_fields(pid)
    return fields is not None and bool(int(fields[6]) & PF_KTHREAD)  # field 9, flags


def parent_pid(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return None if fields is None else int(fields[1])


def cpu_ticks(pid: int) -> int | None:
    """utime + stime of ``pid`` (all its threads), in clock ticks, or None if it is gone."""
    fields = _stat_fields(pid)
    if fields is None:
        return None
    return int(fields[11]) + int(fields[12])  # fields 14 and 15


def thread_group(pid: int) -> int | None:
    """The process (thread group) id of task ``pid``: itself for a process, else its leader."""
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("Tgid:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def threads(pid: int) -> list[int]:
    """Thread ids of process ``pid`` (its leader first), or [] if it is gone."""
    try:
        tids = sorted(int(name) for name in os.listdir(f"/proc/{pid}/task"))
    except (FileNotFoundError, ProcessLookupError):
        return []
    if pid in tids:
        tids.remove(pid)
        tids.insert(0, pid)
    return tids


def cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            raw = handle.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def comm(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/comm", "rb") as handle:
            return handle.read().decode(errors="replace").rstrip("\n")
    except (FileNotFoundError, ProcessLookupError):
        return None


def all_pids() -> list[int]:
    return sorted(int(name) for name in os.listdir("/proc") if name.isdigit())


def is_hostchaos(pid: int) -> bool:
    """Is ``pid`` this process, or a hostchaos CLI, warden or daemon?

    Recognised by command line: ``python -m hostchaos[.anything]`` or an
    executable named ``hostchaos``.
    """
    if pid == os.getpid():
        return True
    argv = cmdline(pid)
    if not argv:
        return False
    if os.path.basename(argv[0]) == "hostchaos":
        return True
    for i, arg in enumerate(argv[:-1]):
        if arg == "-m" and argv[i + 1].split(".")[0] == "hostchaos":
            return True
    return len(argv) > 1 and os.path.basename(argv[1]) == "hostchaos"


def protection(pid: int) -> str | None:
    """Why ``pid`` must never be a fault's target, or None if it may be."""
    if pid == 1:
        return "PID 1 (init) is protected"
    if is_kernel_thread(pid):
        return f"PID {pid} is a kernel thread ({comm(pid)}); kernel threads are protected"
    if is_hostchaos(pid):
        return f"PID {pid} is a hostchaos process; hostchaos never targets itself"
    return None


def find_by_name(name: str) -> list[int]:
    """Live processes whose comm or executable basename is exactly ``name``."""
    found = []
    for pid in all_pids():
        if comm(pid) == name[:15] and (
            len(name) <= 15 or os.path.basename((cmdline(pid) or [""])[0]) == name
        ):
            if exists(pid):
                found.append(pid)
            continue
        argv = cmdline(pid)
        if argv and os.path.basename(argv[0]) == name and exists(pid):
            found.append(pid)
    return found


def ancestors(pid: int) -> list[int]:
    """The parent, grandparent ... of ``pid`` up to (and including) PID 1."""
    chain = []
    seen = {pid}
    current = parent_pid(pid)
    while current and current not in seen:
        chain.append(current)
        seen.add(current)
        current = parent_pid(current)
    return chain


def send_signal(ref: ProcessRef, signum: int) -> bool:
    """Signal the process ``ref`` names, through a pidfd; False if it is gone.

    The pidfd pins the process that holds the PID when it is opened; reading
    the start time *after* opening proves that process is ``ref`` and not a
    newer one that got the PID after ``ref`` exited, so a reused PID is never
    signalled.
    """
    import signal

    try:
        fd = os.pidfd_open(ref.pid)
    except ProcessLookupError:
        return False
    try:
        if start_ticks(ref.pid) != ref.start_ticks:
            return False
        signal.pidfd_send_signal(fd, signum)
        return True
    except ProcessLookupError:
        return False
    finally:
        os.close(fd)


def children_map() -> dict[int, list[int]]:
    """Parent PID -> its child PIDs, for every live process (one pass over /proc)."""
    out: dict[int, list[int]] = {}
    for pid in all_pids():
        parent = parent_pid(pid)
        if parent is not None:
            out.setdefault(parent, []).append(pid)
    return out


def descendants(pid: int, children: dict[int, list[int]] | None = None) -> set[int]:
    """Every process below ``pid`` in the process tree."""
    tree = children if children is not None else children_map()
    found: set[int] = set()
    todo = list(tree.get(pid, []))
    while todo:
        current = todo.pop()
        if current not in found:
            found.add(current)
            todo.extend(tree.get(current, []))
    return found


def operator_session(pid: int | None = None) -> int | None:
    """The sshd process serving whoever runs ``pid`` (this process by default), if any.

    The nearest ancestor whose name starts with ``sshd``: ``sshd`` itself, or
    ``sshd-session`` since OpenSSH 9.8.
    """
    for ancestor in ancestors(pid or os.getpid()):
        if (comm(ancestor) or "").startswith("sshd"):
            return ancestor
    return None
