"""hostchaos: inject real faults into a Linux host, and always take them back out."""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (the fast path)

if TYPE_CHECKING:
    from typing import Any

__version__ = "0.1.0"


def discover(discover_system: bool = True) -> dict[str, Any]:
    """Chaos Toolkit's entry point (`chaos discover hostchaos`): see hostchaos.chaostoolkit."""
    from hostchaos.chaostoolkit import discover as chaostoolkit_discover

    return chaostoolkit_discover(discover_system)
