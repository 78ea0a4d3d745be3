"""The registry of fault kinds: one line per kind, nothing else to edit.

Kind ``disk-fill`` lives in ``hostchaos/faults/disk_fill.py``; that module holds
its spec (with its command-line options), its fault (apply, rollback,
observe), what it needs from the host and the docstring that documents it.
The kind's name is taken from this list and its module, never written again:
the CLI command, `doctor`'s table and the reference page are all made from
here. Modules are imported on demand so `hostchaos --help` stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from hostchaos.errors import SpecError

if TYPE_CHECKING:
    from hostchaos.faults.base import Fault

KINDS: tuple[str, ...] = (
    "latency",
    "loss",
    "corrupt",
    "duplicate",
    "reorder",
    "rate",
    "partition",
    "cpu",
    "memory",
    "pids",
    "nofile",
    "disk-fill",
    "kill",
    "stop",
    "freeze",
    "clock",
)

_PACKAGE = __name__ + "."


def module_name(kind: str) -> str:
    """The module that holds ``kind``."""
    return _PACKAGE + kind.replace("-", "_")


def kind_of_module(module: str) -> str | None:
    """The kind a module holds, or None for a module that is not a kind's."""
    if not module.startswith(_PACKAGE):
        return None
    kind = module[len(_PACKAGE):].replace("_", "-")
    return kind if kind in KINDS else None


def fault_class(kind: str) -> type[Fault]:
    """The fault class of ``kind`` (SpecError for a kind this version does not know)."""
    from hostchaos.faults.base import registered

    if kind not in KINDS:
        raise SpecError(f"unknown fault kind {kind!r} (known: {', '.join(sorted(KINDS))})")
    importlib.import_module(module_name(kind))
    return registered(kind)


def build(kind: str, spec: dict[str, Any]) -> Fault:
    """The fault of ``kind`` for a spec stored as a dict (e.g. in a journal record)."""
    cls = fault_class(kind)
    return cls(cls.spec_type.from_dict(spec))
