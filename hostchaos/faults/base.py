"""The contract every fault kind fulfils.

A kind is one module, ``hostchaos/faults/<kind>.py``, listed in
:data:`hostchaos.faults.KINDS`. It holds a ``<Name>Spec`` (a frozen dataclass
whose fields are the command-line options, see :mod:`hostchaos.faults.options`;
it validates itself in ``__post_init__`` and touches nothing) and one
``<Name>Fault`` that applies and rolls back that spec through
``hostchaos.system``. The kind's name comes from the module: neither class
spells it. Only the engine calls ``apply`` and ``rollback``.

The engine drives a fault in this order: ``resolve`` (find the target: may be
slow, runs without the state lock), then under the lock ``conflicts`` against
every other open fault (:class:`Peer`), ``preflight`` and ``apply``. Rollback
works from the undo notes alone (``self.spec`` may be None there: a record
written by another version may hold a spec this version no longer accepts).
"""

from __future__ import annotations

import copy
import dataclasses
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Self

from hostchaos.errors import SpecError

if TYPE_CHECKING:
    from hostchaos.journal import UndoLog


@dataclasses.dataclass(frozen=True, kw_only=True)
class Spec:
    """Base of all specs: what to do, to which target. Pure data, validated on creation."""

    kind: ClassVar[str]

    def to_dict(self) -> dict[str, Any]:
        """The settings as plain data (what a record keeps): ``dataclasses.asdict`` without
        its deep copy of every value, which costs more than writing the record."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise SpecError(f"unknown {cls.kind} setting(s): {', '.join(sorted(unknown))}")
        return cls(**data)

    def target_label(self) -> str:
        raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class Peer:
    """Another open fault, as its journal record describes it."""

    id: str
    kind: str
    spec: Spec | None  # None when the stored spec no longer validates
    notes: list[dict[str, Any]]
    #: what a kind works out from the notes once per peer (e.g. its network namespace):
    #: a rollback among a thousand open faults asks it of every one
    memo: dict[str, Any] = dataclasses.field(default_factory=dict, compare=False, repr=False)


_REGISTERED: dict[str, type[Fault]] = {}


def registered(kind: str) -> type[Fault]:
    """The fault class defined in ``kind``'s module (imported by the caller)."""
    try:
        return _REGISTERED[kind]
    except KeyError:
        from hostchaos.faults import module_name

        raise SpecError(f"{module_name(kind)} defines no fault class") from None


class Fault(ABC):
    """An applied (or about to be applied) fault of one kind.

    A kind's fault class docstring is its documentation (the `inject <kind>
    --help` text and its reference page): a one-line summary, then
    ``Mechanism:`` (how the kernel is made to do it), ``Rollback:`` (what is
    restored, and whether the fault survives a reboot) and ``Example:``.
    """

    #: set from the module the class is defined in (``faults/disk_fill.py``: ``disk-fill``)
    kind: ClassVar[str]
    spec_type: ClassVar[type[Spec]]
    survives_reboot: ClassVar[bool] = False
    #: apply writes an undo note before its first change, so that note's write is the
    #: record's first: the engine skips its own write of the applying record
    notes_first: ClassVar[bool] = False
    #: capabilities (names in :data:`hostchaos.system.capabilities.CHECKS`) it cannot work without
    needs: ClassVar[tuple[str, ...]] = ("root",)
    #: capabilities needed only with some options: what the operator asked for -> names
    needs_with: ClassVar[dict[str, tuple[str, ...]]] = {}
    #: shown after the options in `hostchaos inject <kind> --help`
    help_epilog: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        from hostchaos.faults import kind_of_module

        kind = kind_of_module(cls.__module__)
        if kind is None:  # a shared mechanism (or a test's fake): not a kind of its own
            return
        if kind in _REGISTERED and _REGISTERED[kind].__qualname__ != cls.__qualname__:
            raise TypeError(f"{cls.__module__} defines two fault classes: "
                            f"{_REGISTERED[kind].__qualname__} and {cls.__qualname__}")
        cls.kind = kind
        cls.spec_type.kind = kind
        _REGISTERED[kind] = cls

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.peers: list[Peer] = []  # the other open faults, set by the engine before preflight
        self.state_dir: Path | None = None  # hostchaos's state directory, set with the peers

    def peer_notes(self) -> list[dict[str, Any]]:
        """The undo notes of every other open fault, each tagged with its fault id."""
        return [{"fault": peer.id, **note} for peer in self.peers for note in peer.notes]

    @classmethod
    def for_rollback(cls) -> Self:
        """A fault with no spec, for rolling back a record whose spec no longer validates."""
        fault = cls.__new__(cls)
        Fault.__init__(fault, None)  # type: ignore[arg-type]
        return fault

    @abstractmethod
    def describe(self) -> str:
        """One line: what will be done, to what."""

    def resolve(self) -> None:  # noqa: B027 - optional hook
        """Find the target (container runtimes, systemd, DNS ...): may be slow; changes nothing.

        Runs before the state lock is taken, so a slow lookup never holds up a
        rollback.
        """

    def preflight(self) -> None:  # noqa: B027 - optional hook
        """Check target and host capabilities without changing anything; raise on a problem.

        Runs under the state lock, after :meth:`resolve`; keep it to quick
        kernel reads.
        """

    @classmethod
    def warm_up(cls) -> None:
        """Import what rollback needs now, so the warden rolls back without delay later."""
        return None

    def conflicts(self, peer: Peer) -> str | None:
        """Why this fault cannot coexist with the open fault ``peer``, or None."""
        return None

    @abstractmethod
    def apply(self, undo: UndoLog) -> None:
        """Make the change. Call ``undo.note(...)`` *before* each mutation."""

    @abstractmethod
    def rollback(self, undo: UndoLog) -> None:
        """Undo using only the notes. Idempotent; "already gone" is success."""

    def work(self, undo: UndoLog) -> float | None:
        """One step of work the fault does while it is active (a gradual fill, a kill loop).

        The warden calls it while the fault is active; it returns the seconds
        until the next step, or None when there is nothing (more) to do. It
        must keep each step short: the warden enforces every deadline between
        steps.
        """
        return None

    def observe(self, undo: UndoLog) -> dict[str, Any]:
        """Live kernel state of the fault, for `status`."""
        return {}

    @classmethod
    def sweep_leftovers(cls, state_dir: Path, open_ids: set[str]) -> list[str]:
        """Remove what closed faults of this kind left in ``state_dir``; list what was removed.

        Called by sweep under the state lock; ``open_ids`` are the faults that
        may still need their leftovers (open, or with an unreadable record).
        """
        return []


def require(condition: bool, message: str) -> None:
    """Raise SpecError(message) unless ``condition`` holds. For ``__post_init__``."""
    if not condition:
        raise SpecError(message)


def _plain(value: Any) -> Any:
    """``value`` as ``dataclasses.asdict`` returns it: containers copied, dataclasses as dicts."""
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, list | tuple):
        return type(value)(_plain(v) for v in value)
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items()}
    return copy.deepcopy(value)
