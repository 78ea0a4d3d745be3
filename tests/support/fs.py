"""Small filesystems of a test's own."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def tmpfs(point: Path, size: str = "64m", name: str = "hc-test") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted on ``point`` (made if missing); unmounted afterwards,
    even when the test fails."""
    point.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", name, str(point)],
                   check=True)
    try:
        yield point
    finally:
        subprocess.run(["umount", "--lazy", str(point)], check=False)


def settled_statvfs(path: Path) -> os.statvfs_result:
    """statvfs of ``path`` once the filesystem has counted what was just written or freed
    (hostchaos.system.fill.settle: a fill's blocks are not in f_bavail at once)."""
    from hostchaos.system import fill

    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fill.settle(fd)
    finally:
        os.close(fd)
    return os.statvfs(path)
