"""Skip a test only for what the machine cannot do, decided by the doctor's probe.

In strict mode (HOSTCHAOS_STRICT=1, set by CI) a missing capability fails the
test instead, so a CI run can never pass by skipping.
"""

from __future__ import annotations

import os

import pytest

from hostchaos.system.capabilities import Capability


def strict() -> bool:
    return os.environ.get("HOSTCHAOS_STRICT") == "1"


def need(capability: Capability) -> None:
    if capability.ok:
        return
    message = f"needs {capability.name}: {capability.detail} ({capability.fix})"
    if strict():
        pytest.fail(f"strict mode: {message}")
    pytest.skip(message)
