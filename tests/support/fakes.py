"""A fake fault kind whose "host" is a JSON file, for engine tests without a kernel.

The fake host is a dict ``{"items": {...}}``; applying adds ``steps`` items one
at a time (each after an undo note), rollback removes the noted ones. Failures
can be injected at any apply step or in rollback.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, ClassVar

from hostchaos.errors import ApplyError
from hostchaos.faults.base import Fault, Spec, require
from hostchaos.journal import UndoLog


@dataclasses.dataclass(frozen=True, kw_only=True)
class FakeSpec(Spec):
    kind: ClassVar[str] = "fake"
    host_file: str
    target: str = "t1"
    steps: int = 3
    fail_at_step: int | None = None
    fail_rollback: bool = False

    def __post_init__(self) -> None:
        require(self.steps > 0, "steps must be positive")

    def target_label(self) -> str:
        return self.target


class FakeHost:
    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> dict[str, Any]:
        if not self.path.exists():
            return {}
        data: dict[str, Any] = json.loads(self.path.read_text())
        return data

    def write(self, data: dict[str, Any]) -> None:
        self.path.write_text(json.dumps(data))


class FakeFault(Fault):
    kind = "fake"
    spec_type = FakeSpec
    spec: FakeSpec
    rollback_broken_once: ClassVar[set[str]] = set()

    def describe(self) -> str:
        return f"fake fault on {self.spec.target}"

    def conflicts(self, other: Spec) -> str | None:
        if isinstance(other, FakeSpec) and other.target == self.spec.target:
            return f"target {other.target}"
        return None

    def apply(self, undo: UndoLog) -> None:
        host = FakeHost(Path(self.spec.host_file))
        for step in range(self.spec.steps):
            key = f"{self.spec.target}-{step}"
            undo.note("item", key=key)
            if self.spec.fail_at_step == step:
                raise ApplyError(f"kernel said no at step {step}")
            data = host.read()
            data[key] = True
            host.write(data)

    def rollback(self, undo: UndoLog) -> None:
        if self.spec.fail_rollback:
            raise OSError("rollback refused")
        host = FakeHost(Path(self.spec.host_file))
        data = host.read()
        for note in undo.steps("item"):
            data.pop(note["key"], None)
        host.write(data)

    def observe(self, undo: UndoLog) -> dict[str, Any]:
        data = FakeHost(Path(self.spec.host_file)).read()
        return {"items": sorted(k for k in data if k.startswith(self.spec.target))}


def factory(kind: str, spec: dict[str, Any]) -> Fault:
    if kind == "fake":
        return FakeFault(FakeSpec.from_dict(spec))
    from hostchaos import faults

    return faults.build(kind, spec)
