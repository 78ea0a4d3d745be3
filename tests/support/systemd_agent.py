"""The agent as a real systemd service: helpers for the systemd tier's agent tests.

The container is systemd as PID 1 of a throwaway nspawn container.

The project's own units (systemd/*) are installed into a writable copy of the
container's /etc/systemd/system (so they persist across its reboots and the cached
rootfs is never changed), with ExecStart pointing at this checkout's venv and the state
directory on the test's scratch directory. Faults target units and processes inside the
container, a tmpfs the test mounts, and a network namespace of a process the test starts.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.support.fs import tmpfs
from tests.support.nspawn import REPO, SCRATCH, booted_container, inside, rootfs
from tests.support.waiting import wait_for

UNITS = ("hostchaos.service", "hostchaos.socket", "hostchaos-sweep.service",
         "hostchaos-sweep.timer")
STATE = f"{SCRATCH}/state"
VICTIM = "hc-victim.service"
CGROUP = f"/sys/fs/cgroup/system.slice/{VICTIM}"  # the container's own cgroup v2 tree
ENABLED = {"sockets.target.wants": ["hostchaos.socket"],
           "multi-user.target.wants": ["hostchaos.service", "hostchaos-sweep.service"],
           "timers.target.wants": ["hostchaos-sweep.timer"]}


def install(scratch: Path) -> Path:
    """A copy of the container's /etc/systemd/system with hostchaos's units in it, enabled."""
    etc = scratch / "etc-systemd"
    shutil.copytree(rootfs() / "etc/systemd/system", etc, symlinks=True)
    binary = str(REPO / ".venv/bin/hostchaos")
    for unit in UNITS:
        (etc / unit).write_text((REPO / "systemd" / unit).read_text()
                                .replace("/usr/local/bin/hostchaos", binary))
    for unit, extra in (("hostchaos.service", "WatchdogSec=3s\nTimeoutAbortSec=2s\n"),
                        ("hostchaos-sweep.service", "")):
        (etc / f"{unit}.d").mkdir()
        (etc / f"{unit}.d/50-test.conf").write_text(
            f"[Service]\nEnvironment=HOSTCHAOS_STATE_DIR={STATE}\n{extra}")
    (etc / VICTIM).write_text("[Unit]\nDescription=hostchaos test victim\n"
                              "[Service]\nExecStart=/usr/bin/sleep infinity\n")
    for wants, units in ENABLED.items():
        (etc / wants).mkdir(exist_ok=True)
        for unit in units:
            (etc / wants / unit).symlink_to(f"/etc/systemd/system/{unit}")
    (scratch / "state").mkdir(mode=0o700)
    return etc


@contextmanager
def prepared(path: Path) -> Iterator[Path]:
    """``path`` set up as a container's scratch: units, state directory, a 32 MiB tmpfs."""
    install(path)
    with tmpfs(path / "small", "32m", "hc-sd-small"):
        yield path


def cli(leader: int, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """The hostchaos command inside the container, as an operator there runs it."""
    return inside(leader, "env", f"HOSTCHAOS_STATE_DIR={STATE}",
                  "HOSTCHAOS_SOCKET=/run/hostchaos/hostchaos.sock",
                  "HOSTCHAOS_RUN_DIR=/run/hostchaos", "HOSTCHAOS_CONFIG=/nonexistent",
                  str(REPO / ".venv/bin/hostchaos"), *args, timeout=timeout)


def injected(leader: int, *args: str, timeout: float = 60) -> dict[str, Any]:
    result = cli(leader, "inject", *args, "--json", timeout=timeout)
    assert result.returncode == 0, result.stdout + result.stderr
    view: dict[str, Any] = json.loads(result.stdout)
    return view


def show(leader: int, unit: str, prop: str) -> str:
    return inside(leader, "systemctl", "show", unit, "-p", prop, "--value").stdout.strip()


def cat(leader: int, path: str) -> str:
    return inside(leader, "cat", path).stdout.strip()


def record(scratch: Path, fault_id: str) -> dict[str, Any]:
    for where in ("faults", "faults/ended"):
        path = scratch / "state" / where / f"{fault_id}.json"
        if path.exists():
            data: dict[str, Any] = json.loads(path.read_text())
            return data
    raise AssertionError(f"no record {fault_id}")


def audit(scratch: Path) -> list[dict[str, Any]]:
    path = scratch / "state/audit.log"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def running(leader: int) -> int:
    wait_for(lambda: show(leader, "hostchaos.service", "ActiveState") == "active", 60)
    return int(show(leader, "hostchaos.service", "MainPID"))


def boot(scratch: Path) -> Any:
    """Boot the container with ``scratch``'s units as its /etc/systemd/system."""
    return booted_container(scratch, binds=(f"{scratch / 'etc-systemd'}:/etc/systemd/system",),
                            capabilities=("CAP_NET_ADMIN",))
