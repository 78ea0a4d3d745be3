"""The cgroup freezer, v1 and v2: freeze every task of a cgroup, thaw it, and know when it took.

- v1: the ``freezer`` hierarchy's ``freezer.state``: write ``FROZEN``; the
  kernel reports ``FREEZING`` until every task has stopped, then ``FROZEN``;
  ``THAWED`` undoes it.
- v2: ``cgroup.freeze``: write ``1``; ``cgroup.events`` says ``frozen 1`` once
  every task has stopped; ``0`` undoes it.

A freeze that has not completed within its timeout is undone at once and
reported (a task stuck in an uninterruptible wait can hold a freeze off
forever; runc leaves such a half-frozen cgroup behind, hostchaos does not).
"""

from __future__ import annotations

import time

from hostchaos.errors import ApplyError
from hostchaos.system.cgroups import CgroupRef, Cgroups

FREEZE_TIMEOUT = 5.0


def is_frozen(fs: Cgroups, ref: CgroupRef) -> bool:
    """Has every task of ``ref`` stopped (frozen, not merely freezing)?"""
    if ref.hierarchy.version == 1:
        return fs.read(ref, "freezer.state") == "FROZEN"
    return fs.read_stat(ref, "cgroup.events").get("frozen") == 1


def wants_frozen(fs: Cgroups, ref: CgroupRef) -> bool:
    """Has someone asked for ``ref`` to be frozen (it may still be freezing)?"""
    if ref.hierarchy.version == 1:
        return fs.read(ref, "freezer.state") in ("FROZEN", "FREEZING")
    return fs.read(ref, "cgroup.freeze") == "1"


def freeze(fs: Cgroups, ref: CgroupRef, timeout: float = FREEZE_TIMEOUT) -> float:
    """Freeze ``ref`` and wait until it is frozen; returns the seconds it took.

    ApplyError (after thawing it again) when it does not complete in time.
    """
    _write(fs, ref, frozen=True)
    try:
        return wait_frozen(fs, ref, timeout)
    except ApplyError:
        thaw(fs, ref)
        raise


def wait_frozen(fs: Cgroups, ref: CgroupRef, timeout: float = FREEZE_TIMEOUT) -> float:
    """Wait until every task of ``ref`` has stopped; ApplyError after ``timeout``."""
    started = time.monotonic()
    while not is_frozen(fs, ref):
        if time.monotonic() - started > timeout:
            raise ApplyError(f"cgroup {ref.label()} did not finish freezing within "
                             f"{timeout:g} s (a task may be stuck in the kernel); it was thawed "
                             "again")
        time.sleep(0.01)
    return time.monotonic() - started


def thaw(fs: Cgroups, ref: CgroupRef) -> None:
    """Let every task of ``ref`` run again."""
    _write(fs, ref, frozen=False)


def _write(fs: Cgroups, ref: CgroupRef, *, frozen: bool) -> None:
    if ref.hierarchy.version == 1:
        fs.write(ref, "freezer.state", "FROZEN" if frozen else "THAWED")
    else:
        fs.write(ref, "cgroup.freeze", "1" if frozen else "0")
