"""Which network namespace a network fault acts in, from inject to rollback.

At inject the target (``--netns``, ``--pid``, ``--container``, or the host's
namespace) is resolved to the namespace's identity (:mod:`hostchaos.system.namespaces`).
Before anything changes, apply notes a ``netns`` step::

    {"step": "netns", "dev": 4, "ino": 4026532177, "label": "pid 4242",
     "handle": "/var/lib/hostchaos/netns/hc-rate-1a2b3c4d"}

and bind-mounts the namespace on ``handle`` (none for the initial namespace,
which cannot go away). Everything else happens through the handle. Rollback
needs nothing but that note: the handle, or a process still in the namespace,
leads back to it; if neither exists the namespace, and the fault with it, is gone.

Two faults are in the same namespace when their identities are equal, however
each was spelled (``--netns blue`` and ``--pid`` of a process in blue).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hostchaos.errors import RollbackError, TargetNotFoundError
from hostchaos.faults.base import Peer

if TYPE_CHECKING:
    from hostchaos.faults.traffic_spec import NetworkSpec
    from hostchaos.system.namespaces import NetnsIdentity
    from hostchaos.system.tc_namespace import Namespace

NETNS_STEP = "netns"


def _spec_path(spec: NetworkSpec) -> str:
    from hostchaos.system import tc_namespace

    if spec.netns:
        return tc_namespace.netns_path(spec.netns)
    if spec.pid is not None:
        return f"/proc/{spec.pid}/ns/net"
    return "/proc/thread-self/ns/net"


def open_target(spec: NetworkSpec) -> int:
    """An open descriptor of the namespace ``spec`` targets; TargetNotFoundError if none.

    For ``--pid`` the process is checked after the open, so a PID reused by
    another process is never mistaken for the target.
    """
    from hostchaos.system import namespaces
    from hostchaos.system.procs import start_ticks

    fd = namespaces.open_target(_spec_path(spec), spec.where())
    if spec.pid is not None:
        ticks = start_ticks(spec.pid)
        if ticks is None or (spec.pid_start_ticks is not None and ticks != spec.pid_start_ticks):
            os.close(fd)
            raise TargetNotFoundError(f"process {spec.pid} ({spec.where()}) is gone")
    return fd


def resolve(spec: NetworkSpec) -> NetnsIdentity:
    """The identity of the namespace ``spec`` targets now."""
    from hostchaos.system.namespaces import NetnsIdentity

    fd = open_target(spec)
    try:
        return NetnsIdentity.of_fd(fd)
    finally:
        os.close(fd)


@contextmanager
def open_resolved(spec: NetworkSpec, expected: NetnsIdentity | None
                  ) -> Iterator[tuple[int, NetnsIdentity]]:
    """(descriptor, identity) of the target, which must still be ``expected`` (if given)."""
    from hostchaos.system.namespaces import NetnsIdentity

    fd = open_target(spec)
    try:
        identity = NetnsIdentity.of_fd(fd)
        if expected is not None and identity != expected:
            raise TargetNotFoundError(
                f"the network namespace of {spec.where()} changed while hostchaos prepared the "
                "fault (it was replaced); try again")
        yield fd, identity
    finally:
        os.close(fd)


def _path_for(fd: int, identity: NetnsIdentity) -> str | None:
    from hostchaos.system import namespaces

    return None if namespaces.own() == identity else f"/proc/self/fd/{fd}"


class Held:
    """The target namespace opened for reading (preflight): a descriptor, its identity and
    a netlink connection inside it; no note, no handle.

    Preflight hands it to apply when apply follows at once (see
    :func:`enter_for_apply`), which saves opening the namespace twice;
    whoever ends with it closes it (and it closes itself when dropped).
    """

    def __init__(self, fd: int, identity: NetnsIdentity, ns: Namespace,
                 stack: ExitStack) -> None:
        self.fd, self.identity, self.ns = fd, identity, ns
        self._stack: ExitStack | None = stack

    def close(self) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            stack.close()

    def __del__(self) -> None:
        with suppress(Exception):
            self.close()


def hold(spec: NetworkSpec, expected: NetnsIdentity | None) -> Held:
    """Open the target namespace for reading; TargetNotFoundError as :func:`open_resolved`."""
    from hostchaos.system import tc_namespace

    stack = ExitStack()
    try:
        fd, identity = stack.enter_context(open_resolved(spec, expected))
        ns = stack.enter_context(tc_namespace.open_namespace(_path_for(fd, identity),
                                                             spec.where()))
    except BaseException:
        stack.close()
        raise
    return Held(fd, identity, ns, stack)


class Prelude:
    """The ``netns`` note and the handle, made together with a fault's first notes.

    The first :meth:`note` persists the ``netns`` note and the fault's own
    notes in one write, then takes the handle: the handle, and every change
    made through the namespace after it, come after a note that covers them.
    Rollback from those notes is right either way: without the handle the
    namespace is reached through its name or a process, or is gone, and so
    is everything the fault had not yet done.
    """

    def __init__(self, netns_note: dict[str, Any], make_handle: Any) -> None:
        self._pending: dict[str, Any] | None = netns_note
        self._make_handle = make_handle

    def note(self, undo: Any, notes: list[tuple[str, dict[str, Any]]]) -> None:
        """``undo.note_many(notes)``, preceded the first time by the netns note (and handle)."""
        if self._pending is None:
            undo.note_many(notes)
            return
        undo.note_many([(NETNS_STEP, self._pending), *notes])
        self._pending = None
        self._make_handle()


@contextmanager
def enter_for_apply(spec: NetworkSpec, expected: NetnsIdentity | None, fault_id: str,
                    handle_dir: Path, held: Held | None = None
                    ) -> Iterator[tuple[Namespace, NetnsIdentity, Prelude]]:
    """Open the target namespace for apply; the :class:`Prelude` notes it and takes a
    handle on it before the first change.

    ``held``: the namespace as preflight opened it (under the same hold of the
    state lock), used instead of opening it again when it is the one expected;
    closed at the end either way.
    """
    from hostchaos.system import namespaces, tc_namespace

    with ExitStack() as stack:
        ns: Namespace | None = None
        if held is not None:
            stack.callback(held.close)
            if expected is None or held.identity == expected:
                fd, identity, ns = held.fd, held.identity, held.ns
        if ns is None:
            fd, identity = stack.enter_context(open_resolved(spec, expected))
        handle = None if identity == namespaces.initial() else handle_dir / fault_id

        def make_handle() -> None:
            if handle is not None:
                namespaces.create_handle(fd, handle)

        prelude = Prelude({**identity.to_note(), "label": spec.where(),
                           "handle": str(handle) if handle else None}, make_handle)
        if ns is None:
            ns = stack.enter_context(tc_namespace.open_namespace(_path_for(fd, identity),
                                                                 spec.where()))
        yield ns, identity, prelude


def netns_note(notes: list[dict[str, Any]]) -> dict[str, Any] | None:
    return next((n for n in notes if n.get("step") == NETNS_STEP), None)


def noted_identity(notes: list[dict[str, Any]]) -> NetnsIdentity | None:
    from hostchaos.system.namespaces import NetnsIdentity

    note = netns_note(notes)
    return NetnsIdentity.from_note(note) if note else None


def peer_identity(peer: Peer) -> NetnsIdentity | None:
    """``noted_identity`` of a peer's notes, worked out once per peer."""
    try:
        found: NetnsIdentity | None = peer.memo["netns"]
    except KeyError:
        found = peer.memo["netns"] = noted_identity(peer.notes)
    return found


@contextmanager
def enter_noted(note: dict[str, Any]) -> Iterator[Namespace | None]:
    """The namespace a ``netns`` note names (None when it is gone), from the note alone."""
    from hostchaos.system import namespaces, tc_namespace
    from hostchaos.system.namespaces import NetnsIdentity

    identity = NetnsIdentity.from_note(note)
    label = str(note.get("label") or "noted")
    if identity is None:
        raise RollbackError(f"the fault's netns note is damaged ({note!r}); cannot tell which "
                            "network namespace holds it")
    with ExitStack() as stack:
        try:
            path = stack.enter_context(namespaces.reach(identity, note.get("handle")))
            gone = False
        except LookupError:
            gone = True
        if gone:
            yield None
        else:
            yield stack.enter_context(tc_namespace.open_namespace(path, label))


def release(note: dict[str, Any], fault_id: str) -> None:
    """Release the note's handle, if it has one (only ever ``.../netns/<fault_id>``)."""
    from hostchaos.system import namespaces

    handle = note.get("handle")
    if handle and Path(handle).name == fault_id and Path(handle).parent.name == "netns":
        namespaces.release_handle(str(handle))


def same_namespace(identity: NetnsIdentity | None, label: str | None,
                   spec: NetworkSpec | None, peer: Peer) -> bool:
    """Is ``peer`` (another open fault) in the namespace known by ``identity``?

    Judged by identity when both are known; a peer recorded before identities
    were noted is judged by its spec's spelling, or failing that by the
    ``where`` label of its class notes.
    """
    theirs = peer_identity(peer)
    if identity is not None and theirs is not None:
        return identity == theirs
    # only older peers get here: rollback --all of n faults asks this of n peers n times
    from hostchaos.faults.traffic_spec import NetworkSpec

    if isinstance(peer.spec, NetworkSpec) and spec is not None:
        return peer.spec.namespace_key() == spec.namespace_key()
    return label is not None and any(n.get("where") == label for n in peer.notes
                                     if n.get("step") == "class")
