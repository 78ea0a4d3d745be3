"""VM tier: runs inside a Debian kernel under QEMU (scripts/vm-run), where sch_netem exists."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from hostchaos.sandbox import NetnsPair
from hostchaos.system import capabilities
from tests.support.capability import need


@pytest.fixture(autouse=True)
def _needs() -> None:
    need(capabilities.is_root())
    need(capabilities.netem())


@pytest.fixture
def pair() -> Iterator[NetnsPair]:
    with NetnsPair(prefix=f"hc-vm{os.getpid() % 1000}") as created:
        created.ping(count=3, interval=0.05)  # warm up neighbour tables
        yield created


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    from tests.conftest import unmount_below

    path = tmp_path / "state"
    path.mkdir()
    yield path
    unmount_below(path)
