"""RLIMIT_NOFILE of running processes, through prlimit(2) (``resource.prlimit``)."""

from __future__ import annotations

import errno
import resource

from hostchaos.errors import ApplyError, PreconditionError, TargetNotFoundError

INFINITY = resource.RLIM_INFINITY


class ProcessGone(TargetNotFoundError):
    """The process exited: for rollback, that is success."""


def nr_open() -> int:
    """The kernel's ceiling for RLIMIT_NOFILE (fs.nr_open)."""
    try:
        with open("/proc/sys/fs/nr_open") as handle:
            return int(handle.read())
    except OSError:
        return 1048576


CAP_SYS_RESOURCE = 24


def can_raise_hard_limits() -> bool:
    """Does this process hold CAP_SYS_RESOURCE (needed to raise a hard limit back up)?"""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> CAP_SYS_RESOURCE & 1)
    except OSError:
        pass
    return False


def _fail(exc: OSError, action: str) -> Exception:
    if exc.errno == errno.ESRCH:
        return ProcessGone(f"{action}: the process is gone")
    if exc.errno == errno.EPERM and not can_raise_hard_limits():
        return PreconditionError(
            f"{action}: not permitted (without CAP_SYS_RESOURCE, prlimit reaches only "
            "processes of the same user and cannot raise a hard limit)")
    return ApplyError(f"{action}: the kernel refused ({exc.strerror})")


def get_nofile(pid: int) -> tuple[int, int]:
    """(soft, hard) RLIMIT_NOFILE of ``pid``; -1 is unlimited."""
    try:
        soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    except OSError as exc:
        raise _fail(exc, f"reading the open-files limit of process {pid}") from exc
    return int(soft), int(hard)


def set_nofile(pid: int, soft: int, hard: int) -> None:
    try:
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))
    except OSError as exc:
        raise _fail(exc, f"setting the open-files limit of process {pid} to "
                         f"{soft}:{hard}") from exc
    except ValueError as exc:
        raise ApplyError(f"setting the open-files limit of process {pid} to {soft}:{hard}: "
                         f"{exc}") from exc
