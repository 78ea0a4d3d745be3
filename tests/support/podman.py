"""A throwaway podman image (a busybox-static root, no registry) and containers from it.

On the build machine (cgroup v1 hybrid) crun refuses the hierarchy, so
containers run with ``--runtime runc`` and explicit nofile/nproc ulimits.
Podman creates ``libpod_parent`` cgroups for its containers and conmon and
leaves them behind; :func:`remove_podman_cgroups` removes those it left,
only if they did not exist before and are empty.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

BUSYBOX = Path("/bin/busybox")
# --network none: a container network would add a bridge and NAT rules to the host itself
RUN_OPTIONS = ["--runtime", "runc", "--network", "none", "--ulimit", "nofile=1024:1024",
               "--ulimit", "nproc=1024:1024"]


def podman(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout,
                          check=False)


def build_image(workdir: Path, tag: str) -> None:
    root = workdir / "rootfs"
    (root / "bin").mkdir(parents=True)
    for sub in ("proc", "sys", "dev", "etc", "tmp"):
        (root / sub).mkdir()
    shutil.copy2(BUSYBOX, root / "bin/busybox")
    for applet in ("sh", "sleep", "cat", "ls"):
        os.symlink("busybox", root / "bin" / applet)
    tarball = workdir / "rootfs.tar"
    with tarfile.open(tarball, "w") as tar:
        tar.add(root, arcname=".")
    result = podman("import", str(tarball), tag)
    assert result.returncode == 0, result.stderr


def run(tag: str, name: str, *command: str) -> int:
    """Start container ``name``; return its init PID on the host."""
    result = podman("run", "-d", "--name", name, *RUN_OPTIONS, tag, *command)
    assert result.returncode == 0, result.stderr
    inspect = podman("inspect", "--format", "{{.State.Pid}}", name)
    assert inspect.returncode == 0, inspect.stderr
    return int(inspect.stdout.strip())


def remove(name: str) -> None:
    podman("rm", "-f", "-t", "0", name)


def podman_cgroup_dirs() -> set[Path]:
    return {p for p in Path("/sys/fs/cgroup").glob("*/libpod_parent") if p.is_dir()}


def remove_podman_cgroups(existed_before: set[Path], timeout: float = 15.0) -> None:
    """rmdir the libpod_parent trees podman created during the tests (deepest first).

    Only empty cgroups are removed; conmon may still be leaving its cgroup right
    after `podman rm`, so this retries for a while before giving up.
    """
    deadline = time.monotonic() + timeout
    while True:
        left = []
        for top in podman_cgroup_dirs() - existed_before:
            dirs = sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
            for path in [*dirs, top]:
                try:
                    if not (path / "cgroup.procs").read_text().split():
                        path.rmdir()
                        continue
                except FileNotFoundError:
                    continue
                except OSError:
                    pass
                left.append(path)
        if not left or time.monotonic() > deadline:
            return
        time.sleep(0.2)


@contextmanager
def container(purpose: str, *command: str, volumes: tuple[str, ...] = ()) -> Iterator[
        tuple[str, int]]:
    """A throwaway container running ``command``: (name, init PID on the host).

    Image, container and the cgroups podman made for them are removed afterwards,
    even when the test fails. ``volumes`` are ``HOST:CONTAINER`` bind mounts.
    """
    before = podman_cgroup_dirs()
    tag = f"localhost/hostchaos-{purpose}-test:{os.getpid()}"
    name = f"hc-test-{purpose}-{os.getpid()}"
    workdir = Path(f"/tmp/hc-test-image-{purpose}-{os.getpid()}")
    try:
        build_image(workdir, tag)
        mounts = [arg for volume in volumes for arg in ("-v", volume)]
        result = podman("run", "-d", "--name", name, *RUN_OPTIONS, *mounts, tag, *command)
        assert result.returncode == 0, result.stderr
        inspect = podman("inspect", "--format", "{{.State.Pid}}", name)
        assert inspect.returncode == 0, inspect.stderr
        yield name, int(inspect.stdout.strip())
    finally:
        remove(name)
        podman("rmi", "-f", tag)
        remove_podman_cgroups(before)
        shutil.rmtree(workdir, ignore_errors=True)
