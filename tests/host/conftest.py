from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from hostchaos.sandbox import NetnsPair
from hostchaos.system import capabilities
from tests.support.capability import need


@pytest.fixture(autouse=True)
def _root() -> None:
    need(capabilities.is_root())


@pytest.fixture
def pair() -> Iterator[NetnsPair]:
    with NetnsPair(prefix=f"hc-test{os.getpid() % 1000}") as created:
        yield created
