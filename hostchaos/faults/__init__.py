"""Fault kinds. Modules are imported on demand so `hostchaos --help` stays fast."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from hostchaos.errors import SpecError

if TYPE_CHECKING:
    from hostchaos.faults.base import Fault

#: kind -> "module:FaultClass"
KINDS: dict[str, str] = {
    "latency": "hostchaos.faults.network:LatencyFault",
    "loss": "hostchaos.faults.network:LossFault",
    "corrupt": "hostchaos.faults.network:CorruptFault",
    "duplicate": "hostchaos.faults.network:DuplicateFault",
    "reorder": "hostchaos.faults.network:ReorderFault",
    "rate": "hostchaos.faults.network:RateFault",
    "partition": "hostchaos.faults.network:PartitionFault",
    "cpu": "hostchaos.faults.resources:CpuFault",
    "memory": "hostchaos.faults.resources:MemoryFault",
    "pids": "hostchaos.faults.resources:PidsFault",
    "nofile": "hostchaos.faults.resources:NofileFault",
}


def fault_class(kind: str) -> type[Fault]:
    try:
        target = KINDS[kind]
    except KeyError:
        raise SpecError(
            f"unknown fault kind {kind!r} (known: {', '.join(sorted(KINDS))})"
        ) from None
    module, _, name = target.partition(":")
    cls: type[Fault] = getattr(importlib.import_module(module), name)
    return cls


def build(kind: str, spec: dict[str, Any]) -> Fault:
    """The fault of ``kind`` for a spec stored as a dict (e.g. in a journal record)."""
    cls = fault_class(kind)
    return cls(cls.spec_type.from_dict(spec))
