"""Small filesystems of a test's own."""

from __future__ import annotations

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
