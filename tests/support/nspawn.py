"""A throwaway Debian container booted with systemd as PID 1 (systemd-nspawn), for the
systemd tier: units, drop-ins and systemctl are real there, and nothing of the host's own
services is touched.

The rootfs is built once and cached by ``scripts/systemd-rootfs``. The container gets its
own cgroup v2 hierarchy, the repository and the Python installation bound read-only at the
same paths (so hostchaos runs inside from this checkout's venv), and a scratch directory of
the test's own bound read-write at ``/hc-test``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hostchaos.system import procs
from tests.support.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
SCRATCH = "/hc-test"


def inside(leader: int, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` in every namespace of the container whose init is ``leader``."""
    return subprocess.run(["nsenter", "-t", str(leader), "-a", *argv], capture_output=True,
                          text=True, timeout=timeout, check=False)


def hostchaos_inside(leader: int, *args: str) -> subprocess.CompletedProcess[str]:
    return inside(leader, "env", "HOSTCHAOS_STATE_DIR=/run/hostchaos-test",
                  "HOSTCHAOS_RUN_DIR=/run/hostchaos",  # the container's own /run
                  str(REPO / ".venv/bin/python"), "-m", "hostchaos", *args)


def rootfs() -> Path:
    """The cached Debian rootfs (built on first use by scripts/systemd-rootfs)."""
    built = subprocess.run([str(REPO / "scripts/systemd-rootfs")], capture_output=True,
                           text=True, timeout=900, check=False)
    assert built.returncode == 0, built.stderr
    return Path(built.stdout.strip().splitlines()[-1])


@contextmanager
def booted_container(scratch: Path, *, binds: tuple[str, ...] = (),
                     capabilities: tuple[str, ...] = ()) -> Iterator[int]:
    """Boot the cached rootfs; yield the PID (on the host) of its systemd.

    ``binds``: more ``SRC:DEST`` read-write binds (e.g. a writable copy of the
    container's /etc/systemd/system, so units persist across its reboots
    without touching the cache); ``capabilities``: more than nspawn's default set.
    """
    root = rootfs()
    name = f"hc-test-sd-{os.getpid()}"
    nspawn = subprocess.Popen(
        ["systemd-nspawn", "-q", "-D", str(root), "-b", "--register=no", "--keep-unit",
         f"--machine={name}", "--console=pipe", f"--bind-ro={REPO}",
         f"--bind-ro={Path(sys.base_prefix).resolve()}", f"--bind={scratch}:{SCRATCH}",
         *[f"--bind={b}" for b in binds],
         *([f"--capability={','.join(capabilities)}"] if capabilities else [])],
        env={**os.environ, "SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "1"},
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    leader = 0
    try:
        def found() -> bool:
            nonlocal leader
            kids = procs.children_map().get(nspawn.pid, [])
            leader = kids[0] if kids else 0
            return bool(leader) and procs.comm(leader) == "systemd"
        wait_for(found, 30)

        def up() -> bool:  # until its bus answers, systemctl cannot even ask
            state = inside(leader, "systemctl", "is-system-running", "--wait")
            return state.stdout.strip() in ("running", "degraded")
        wait_for(up, 60, step=0.2)
        yield leader
    finally:
        if leader:
            inside(leader, "systemctl", "poweroff", timeout=30)
        try:
            nspawn.wait(timeout=30)
        except subprocess.TimeoutExpired:
            nspawn.kill()
            nspawn.wait()
