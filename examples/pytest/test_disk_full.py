"""Example: what does my code do when the disk is full? (hostchaos's pytest plugin)

Run as root: ``sudo .venv/bin/python -m pytest examples/pytest``. Each test gets a
16 MiB tmpfs of its own, so the real disks are never filled; the plugin's fault is
rolled back when the test ends, and by its lease if the test process is killed.
"""

from __future__ import annotations

import errno
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hostchaos.pytest_plugin import FaultSession

SCRATCH = Path("/run/hostchaos-example-disk")


@pytest.fixture
def small_disk() -> Iterator[Path]:
    """A 16 MiB tmpfs at a fixed path (the marker below names it), removed afterwards."""
    SCRATCH.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "hc-example", str(SCRATCH)],
                   check=True)
    try:
        yield SCRATCH
    finally:
        subprocess.run(["umount", "--lazy", str(SCRATCH)], check=False)
        SCRATCH.rmdir()


def save(path: Path, data: bytes) -> str:
    """The code under test: write a file whole, or say why not."""
    try:
        with open(path, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:
        path.unlink(missing_ok=True)
        return errno.errorcode[exc.errno or 0]
    return "saved"


def test_a_full_disk_is_reported_not_crashed_on(hostchaos: FaultSession, small_disk: Path) -> None:
    assert save(small_disk / "before", bytes(1 << 20)) == "saved"
    hostchaos.inject("disk-fill", path=str(small_disk), leave_free="1M", for_="30s")
    assert save(small_disk / "during", bytes(4 << 20)) == "ENOSPC"
    hostchaos.rollback()
    assert save(small_disk / "after", bytes(4 << 20)) == "saved"


@pytest.mark.hostchaos("disk-fill", path=str(SCRATCH), percent=100, for_="30s")
def test_the_marker_fills_it_for_the_whole_test(small_disk: Path) -> None:
    assert save(small_disk / "data", bytes(64 << 10)) == "ENOSPC"


def test_killed_mid_test(hostchaos: FaultSession, small_disk: Path) -> None:
    """Used by hostchaos's own tests: it is killed with -9 while it sleeps here."""
    if not os.environ.get("HOSTCHAOS_EXAMPLE_SLEEP"):
        pytest.skip("only run by hostchaos's kill -9 test")
    hostchaos.inject("disk-fill", path=str(small_disk), leave_free="1M", for_="5m")
    print("injected", flush=True)
    time.sleep(600)
