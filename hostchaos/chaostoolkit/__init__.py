"""Chaos Toolkit extension: hostchaos faults as actions, probes and rollbacks.

``chaos discover hostchaos --no-install`` lists them. In an experiment::

    {"type": "action", "name": "slow-database",
     "provider": {"type": "python", "module": "hostchaos.chaostoolkit.actions",
                  "func": "inject_fault",
                  "arguments": {"kind": "latency", "duration": "2m",
                                "options": {"iface": "eth0", "dst": "10.0.0.5/32", "ms": 200}}}}

and, under ``rollbacks``, ``hostchaos.chaostoolkit.actions.rollback_injected``. Every
fault has its own deadline (``duration``), so it ends even when Chaos Toolkit skips the
rollbacks of a failed or interrupted run (chaostoolkit #195, #258; chaostoolkit-lib #189).
Options are the command line's, named without ``--``. Needs root, like the CLI.
"""

from __future__ import annotations

from typing import Any

__all__ = ["discover"]


def discover(discover_system: bool = True) -> dict[str, Any]:
    """What ``chaos discover hostchaos`` shows: the actions and probes, and this host."""
    from chaoslib.discovery.discover import (
        discover_actions,
        discover_probes,
        initialize_discovery_result,
    )

    from hostchaos import __version__

    discovery: dict[str, Any] = initialize_discovery_result("hostchaos", __version__,
                                                            "hostchaos")
    discovery["activities"].extend(discover_actions("hostchaos.chaostoolkit.actions"))
    discovery["activities"].extend(discover_probes("hostchaos.chaostoolkit.probes"))
    if discover_system:
        from hostchaos import faults
        from hostchaos.system import capabilities

        discovery["system"] = {"hostchaos": {
            "kinds": list(faults.KINDS),
            "capabilities": [c.to_dict() for c in capabilities.all_checks()],
        }}
    return discovery
