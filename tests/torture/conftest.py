from __future__ import annotations

import pytest

from hostchaos.system import capabilities
from tests.support.capability import need


@pytest.fixture(autouse=True)
def _root() -> None:
    need(capabilities.is_root())
