"""Network faults: netem qdiscs in the hostchaos-owned tree of one interface."""

from __future__ import annotations

import dataclasses
import re
from typing import TYPE_CHECKING, Any, ClassVar

from hostchaos.errors import ConflictError, PreconditionError
from hostchaos.faults.base import Fault, Spec, require
from hostchaos.journal import UndoLog

if TYPE_CHECKING:
    from hostchaos.system.netlink import TrafficTree

_IFNAME = re.compile(r"[^/\s:]{1,15}")
_NETNS = re.compile(r"[A-Za-z0-9_.-]{1,64}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class NetworkSpec(Spec):
    """Where a network fault goes: an interface, in the host or a named network namespace."""

    iface: str
    netns: str | None = None

    def __post_init__(self) -> None:
        require(bool(_IFNAME.fullmatch(self.iface)), f"interface name {self.iface!r} is not valid")
        if self.netns is not None:
            require(bool(_NETNS.fullmatch(self.netns)),
                    f"network namespace name {self.netns!r} is not valid")

    def target_label(self) -> str:
        return f"{self.iface} (netns {self.netns})" if self.netns else self.iface


def _percent(value: float, name: str, *, allow_zero: bool = False) -> None:
    low_ok = value >= 0 if allow_zero else value > 0
    require(low_ok and value <= 100,
            f"{name} must be {'between 0' if allow_zero else 'above 0'} and 100, got {value:g}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class LatencySpec(NetworkSpec):
    """Delay every IP packet leaving the interface by ``ms`` (+- ``jitter_ms``)."""

    kind: ClassVar[str] = "latency"
    ms: float
    jitter_ms: float = 0.0
    correlation: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        require(0 < self.ms <= 60_000, f"--ms must be above 0 and at most 60000, got {self.ms:g}")
        require(0 <= self.jitter_ms <= 60_000,
                f"--jitter must be between 0 and 60000 ms, got {self.jitter_ms:g}")
        _percent(self.correlation, "--correlation", allow_zero=True)
        require(not self.correlation or self.jitter_ms > 0,
                "--correlation needs --jitter (it correlates successive delay variations)")


@dataclasses.dataclass(frozen=True, kw_only=True)
class LossSpec(NetworkSpec):
    """Drop ``percent`` of the IP packets leaving the interface."""

    kind: ClassVar[str] = "loss"
    percent: float
    correlation: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        _percent(self.percent, "--percent")
        _percent(self.correlation, "--correlation", allow_zero=True)


class NetemFault(Fault):
    """Common mechanism of the netem kinds (see the kinds' docstrings)."""

    spec: NetworkSpec
    peers: list[dict[str, Any]]

    def __init__(self, spec: Spec) -> None:
        super().__init__(spec)
        self.peers = []  # undo notes of other open faults, set by the engine

    def netem_options(self) -> dict[str, Any]:
        raise NotImplementedError

    def _open(self) -> Any:
        from hostchaos.system.netlink import open_tree

        return open_tree(self.spec.iface, self.spec.netns)

    @classmethod
    def warm_up(cls) -> None:
        import hostchaos.system.netlink  # noqa: F401

    def preflight(self) -> None:
        from hostchaos.system import capabilities

        root = capabilities.is_root()
        if not root.ok:
            raise PreconditionError(f"network faults need root ({root.detail}): {root.fix}")
        with self._open() as tree:
            tree.check_root_replaceable()
        netem = capabilities.netem()
        if not netem.ok:
            raise PreconditionError(
                f"kernel module sch_netem is not available: {netem.detail}; {netem.fix}"
            )

    def conflicts(self, other: Spec) -> str | None:
        if (isinstance(other, NetworkSpec) and other.iface == self.spec.iface
                and other.netns == self.spec.netns):
            return f"all IP traffic of {self.spec.target_label()}"
        return None

    def _claimed_slots(self) -> set[int]:
        return {int(n["slot"]) for n in self.peers if n.get("step") == "class"
                and n.get("iface") == self.spec.iface and n.get("netns") == self.spec.netns}

    def apply(self, undo: UndoLog) -> None:
        with self._open() as tree:
            if not tree.is_ours():
                original = tree.check_root_replaceable()
                undo.note("root", original=original.to_dict() if original else None)
                tree.create_root()
            slot = _free_slot(tree, self._claimed_slots())
            undo.note("class", slot=slot, iface=self.spec.iface, netns=self.spec.netns)
            tree.add_fault_class(slot, "netem", self.netem_options())
            undo.note("filters", slot=slot)
            tree.add_match_all_filters(slot)

    def rollback(self, undo: UndoLog) -> None:
        from hostchaos.errors import TargetNotFoundError

        try:
            opened = self._open()
            tree = opened.__enter__()
        except TargetNotFoundError:
            return  # the namespace or interface is gone, and the fault with it
        try:
            claimed = undo.get("class")
            if claimed is not None:
                tree.remove_filters(int(claimed["slot"]))
                tree.remove_fault_class(int(claimed["slot"]))
            if tree.is_ours() and not tree.used_slots() and not self._claimed_slots():
                tree.remove_root()
        finally:
            opened.__exit__(None, None, None)

    def observe(self, undo: UndoLog) -> dict[str, Any]:
        claimed = undo.get("class")
        if claimed is None:
            return {"present": False}
        from hostchaos.errors import TargetNotFoundError

        try:
            with self._open() as tree:
                slot = int(claimed["slot"])
                cls = tree.slot_stats(slot)
                return {"present": cls is not None, "class": cls, "netem": tree.leaf_stats(slot)}
        except TargetNotFoundError as exc:
            return {"present": False, "problem": str(exc)}


def _free_slot(tree: TrafficTree, claimed: set[int]) -> int:
    used = tree.used_slots() | claimed
    for slot in range(1, 251):
        if slot not in used:
            return slot
    raise ConflictError(f"{tree.iface} carries too many faults")


class LatencyFault(NetemFault):
    """Delay outgoing IP packets with netem.

    Mechanism: a netem leaf (delay, jitter, correlation) in a class of the
    hostchaos HTB tree on the interface, fed by match-all u32 filters for IPv4
    and IPv6; ARP and other non-IP frames are never delayed.
    Rollback: removes the filters and the class, and, when no other hostchaos
    fault is left on the interface, the tree itself, so the kernel puts its
    default root qdisc back. Does not survive a reboot (nor the namespace).

    Example: ``sudo hostchaos inject latency --iface eth0 --ms 100 --jitter 10 --for 5m``
    """

    kind = "latency"
    spec_type = LatencySpec
    spec: LatencySpec

    def describe(self) -> str:
        s = self.spec
        extra = f" +- {s.jitter_ms:g} ms" if s.jitter_ms else ""
        if s.correlation:
            extra += f" ({s.correlation:g}% correlated)"
        return f"delay IP packets leaving {s.target_label()} by {s.ms:g} ms{extra}"

    def netem_options(self) -> dict[str, Any]:
        s = self.spec
        opts: dict[str, Any] = {"delay": int(s.ms * 1000), "jitter": int(s.jitter_ms * 1000)}
        if s.correlation:
            opts["delay_corr"] = s.correlation
        return opts


class LossFault(NetemFault):
    """Drop a share of outgoing IP packets with netem.

    Mechanism: a netem leaf with random loss (optionally correlated) in a class
    of the hostchaos HTB tree, fed by match-all u32 filters for IPv4 and IPv6;
    ARP and other non-IP frames are never dropped.
    Rollback: as for latency, the class, its filters and (when it is the last
    fault there) the tree are removed. Does not survive a reboot.

    Example: ``sudo hostchaos inject loss --iface eth0 --percent 30 --for 2m``
    """

    kind = "loss"
    spec_type = LossSpec
    spec: LossSpec

    def describe(self) -> str:
        s = self.spec
        corr = f" ({s.correlation:g}% correlated)" if s.correlation else ""
        return f"drop {s.percent:g}% of IP packets leaving {s.target_label()}{corr}"

    def netem_options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {"loss": self.spec.percent}
        if self.spec.correlation:
            opts["loss_corr"] = self.spec.correlation
        return opts
