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
import tempfile
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


def _writable(directory: Path) -> bool:
    """Whether files can be made in ``directory`` (access(2) and statvfs say yes on the
    VM's read-only 9p mount; only trying tells)."""
    try:
        fd, name = tempfile.mkstemp(dir=directory, prefix=".hc-probe-")
    except OSError:
        return False
    os.close(fd)
    os.unlink(name)
    return True


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
    # in the VM the cache is a read-only mount: every write goes to a tmpfs over it
    volatile = [] if _writable(root.parent) else ["--volatile=overlay"]
    log = scratch / "nspawn.log"
    output = log.open("wb")
    nspawn = subprocess.Popen(
        ["systemd-nspawn", "-q", "-D", str(root), "-b", "--register=no", "--keep-unit",
         f"--machine={name}", "--console=pipe", *volatile, f"--bind-ro={REPO}",
         f"--bind-ro={Path(sys.base_prefix).resolve()}", f"--bind={scratch}:{SCRATCH}",
         *[f"--bind={b}" for b in binds],
         *([f"--capability={','.join(capabilities)}"] if capabilities else [])],
        env={**os.environ, "SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "1"},
        stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT)
    output.close()  # the child has it
    leader = 0
    try:
        def found() -> bool:
            nonlocal leader
            assert nspawn.poll() is None, f"systemd-nspawn exited: {log.read_text()[-2000:]}"
            kids = procs.children_map().get(nspawn.pid, [])
            leader = kids[0] if kids else 0
            return bool(leader) and procs.comm(leader) == "systemd"
        try:
            wait_for(found, 60)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; systemd-nspawn said: {log.read_text()[-2000:]}") from None

        last = ""

        def up() -> bool:  # until its bus answers, systemctl cannot even ask
            nonlocal last
            state = inside(leader, "systemctl", "is-system-running", "--wait", timeout=200)
            last = (state.stdout + state.stderr).strip()
            return state.stdout.strip() in ("running", "degraded")
        try:  # about a second on the host; minutes in the VM (TCG, a rootfs over 9p)
            wait_for(up, 240, step=0.2)
        except AssertionError as exc:
            jobs = inside(leader, "systemctl", "list-jobs", "--no-pager").stdout
            raise AssertionError(f"{exc}: {last!r}; jobs: {jobs[-1500:]}") from None
        yield leader
    finally:
        if leader:
            inside(leader, "systemctl", "poweroff", timeout=30)
        try:
            nspawn.wait(timeout=30)
        except subprocess.TimeoutExpired:
            nspawn.kill()
            nspawn.wait()
