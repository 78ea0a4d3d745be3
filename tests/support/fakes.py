"""A fake fault kind whose "host" is a JSON file, for engine tests without a kernel.

The fake host is a JSON object; applying adds ``steps`` items one at a time
(each after an undo note), rollback removes the noted ones, using the notes
alone. Failures can be injected at any apply step, and in rollback (the host
then carries ``refuse-rollback`` until a test removes it, like an operator
fixing the cause).
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, ClassVar

from hostchaos.errors import ApplyError
from hostchaos.faults.base import Fault, Peer, Spec, require
from hostchaos.journal import UndoLog


@dataclasses.dataclass(frozen=True, kw_only=True)
class FakeSpec(Spec):
    kind: ClassVar[str] = "fake"
    host_file: str
    target: str = "t1"
    steps: int = 3
    fail_at_step: int | None = None
    fail_rollback: bool = False
    #: with a value, the fault "works" while active (like kill --interval) every so many seconds
    work_every: float | None = None

    def __post_init__(self) -> None:
        require(self.steps > 0, "steps must be positive")

    def target_label(self) -> str:
        return self.target


#: a host item that makes the fake's rollback fail until an "operator" removes it
REFUSE_ROLLBACK = "refuse-rollback"


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

    def conflicts(self, peer: Peer) -> str | None:
        other = peer.spec
        if isinstance(other, FakeSpec) and other.target == self.spec.target:
            return f"target {other.target}"
        return None

    def apply(self, undo: UndoLog) -> None:
        host = FakeHost(Path(self.spec.host_file))
        for step in range(self.spec.steps):
            key = f"{self.spec.target}-{step}"
            undo.note("item", key=key, host_file=self.spec.host_file)
            if self.spec.fail_at_step == step:
                raise ApplyError(f"kernel said no at step {step}")
            data = host.read()
            data[key] = True
            if self.spec.fail_rollback:
                data[REFUSE_ROLLBACK] = True
            host.write(data)

    def rollback(self, undo: UndoLog) -> None:
        """From the notes alone, as every kind's rollback must be."""
        for note in undo.steps("item"):
            host = FakeHost(Path(note["host_file"]))
            data = host.read()
            if data.get(REFUSE_ROLLBACK):
                raise OSError("rollback refused")
            data.pop(note["key"], None)
            host.write(data)

    def work(self, undo: UndoLog) -> float | None:
        spec = self.spec
        if not isinstance(spec, FakeSpec) or spec.work_every is None:
            return None
        undo.note("worked", at=time.time())
        return spec.work_every

    def observe(self, undo: UndoLog) -> dict[str, Any]:
        data = FakeHost(Path(self.spec.host_file)).read()
        return {"items": sorted(k for k in data if k.startswith(self.spec.target))}


def factory(kind: str, spec: dict[str, Any]) -> Fault:
    if kind == "fake":
        return FakeFault(FakeSpec.from_dict(spec))
    from hostchaos import faults

    return faults.build(kind, spec)


def fault_class(kind: str) -> type[Fault]:
    if kind == "fake":
        return FakeFault
    from hostchaos import faults

    return faults.fault_class(kind)


class IdleWarden:
    """A stand-in warden for engine tests: an idle process that is alive but enforces nothing.

    ``ensure`` starts it once (or again, once a test killed it); ``stop`` ends it.
    """

    def __init__(self) -> None:
        import subprocess

        self._subprocess = subprocess
        self.started: list[subprocess.Popen[bytes]] = []

    def prestart(self, kind: str | None = None) -> None:
        pass

    def ensure(self) -> Any:
        from hostchaos.system.procs import ProcessRef

        if not self.started or self.started[-1].poll() is not None:
            self.started.append(self._subprocess.Popen(["sleep", "600"]))
        return ProcessRef.of(self.started[-1].pid)

    def stop(self) -> None:
        for proc in self.started:
            proc.kill()
            proc.wait()
