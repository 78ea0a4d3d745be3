"""The boot sweep under a real systemd: a crash leaves a disk fill; the next boot's
hostchaos-sweep.service (ordered before the agent) removes it. A container of its own
(the rootfs is locked while another container runs from it)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from tests.support.systemd_agent import (
    SCRATCH,
    boot,
    injected,
    inside,
    prepared,
    record,
    running,
    show,
)
from tests.support.waiting import wait_for


def test_the_boot_sweep_takes_out_a_fill_a_crash_left(tmp_path: Path) -> None:
    """A crash (agent and warden killed, then an immediate power-off with no service
    stopped): at the next boot hostchaos-sweep.service, ordered before the agent, removes
    the fill. A container of its own, with a scratch directory of its own."""
    with prepared(tmp_path / "crash") as scratch:
        boot_sweep_after_a_crash(scratch)


def boot_sweep_after_a_crash(scratch: Path) -> None:
    small = scratch / "small"
    with boot(scratch) as second:
        running(second)
        fault = injected(second, "disk-fill", "--path", f"{SCRATCH}/small", "--leave-free",
                         "1M", "--for", "10m")
        assert os.statvfs(small).f_bavail * os.statvfs(small).f_frsize < 2 << 20
        inside(second, "systemctl", "kill", "-s", "KILL", "hostchaos.service")
        inside(second, "systemctl", "--force", "--force", "poweroff", timeout=30)
        time.sleep(1)
    assert record(scratch, fault["id"])["state"] == "active"  # nothing rolled it back yet
    with boot(scratch) as third:
        wait_for(lambda: record(scratch, fault["id"])["state"] == "rolled-back", 60)
        assert show(third, "hostchaos-sweep.service", "Result") == "success"
    assert os.statvfs(small).f_bavail * os.statvfs(small).f_frsize > 30 << 20
