"""The contract every fault kind fulfils.

A kind is a pair: a ``<Name>Spec`` (a frozen dataclass that validates itself in
``__post_init__`` and touches nothing) and a ``<Name>Fault`` that applies and
rolls back that spec through ``hostchaos.system``. Only the engine calls
``apply`` and ``rollback``.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from typing import Any, ClassVar, Self

from hostchaos.errors import SpecError
from hostchaos.journal import UndoLog


@dataclasses.dataclass(frozen=True, kw_only=True)
class Spec:
    """Base of all specs: what to do, to which target. Pure data, validated on creation."""

    kind: ClassVar[str]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise SpecError(f"unknown {cls.kind} setting(s): {', '.join(sorted(unknown))}")
        return cls(**data)

    def target_label(self) -> str:
        raise NotImplementedError


class Fault(ABC):
    """An applied (or about to be applied) fault of one kind.

    Subclasses document: the mechanism, what rollback restores, whether the
    fault survives a reboot, and an example command.
    """

    kind: ClassVar[str]
    spec_type: ClassVar[type[Spec]]
    reversible: ClassVar[bool] = True
    survives_reboot: ClassVar[bool] = False

    def __init__(self, spec: Spec) -> None:
        self.spec = spec

    @abstractmethod
    def describe(self) -> str:
        """One line: what will be done, to what."""

    def preflight(self) -> None:  # noqa: B027 - optional hook
        """Check target and host capabilities without changing anything; raise on a problem."""

    @classmethod
    def warm_up(cls) -> None:
        """Import what rollback needs now, so a guardian rolls back without delay later."""
        return None

    def conflicts(self, other: Spec) -> str | None:
        """Why this fault cannot coexist with an active fault of ``other`` spec, or None."""
        return None

    @abstractmethod
    def apply(self, undo: UndoLog) -> None:
        """Make the change. Call ``undo.note(...)`` *before* each mutation."""

    @abstractmethod
    def rollback(self, undo: UndoLog) -> None:
        """Undo using only the spec and the notes. Idempotent; "already gone" is success."""

    def observe(self, undo: UndoLog) -> dict[str, Any]:
        """Live kernel state of the fault, for `status`."""
        return {}


def require(condition: bool, message: str) -> None:
    """Raise SpecError(message) unless ``condition`` holds. For ``__post_init__``."""
    if not condition:
        raise SpecError(message)
