"""Snapshot and replay of a foreign qdisc tree (for ``--force``), as raw netlink messages.

The kernel's own dump of every qdisc, class and filter on a device is kept
byte for byte (base64 in the fault's undo notes). Putting the tree back sends
the same messages again as create requests, parents first, with the
statistics attributes removed. What the kernel creates by itself is skipped,
as `tc` would never send it either: a filter priority's header entry, u32's
root hash table, and every qdisc (or class) with handle major 0. Those are
kernel defaults: the default root it attaches again when our root is deleted,
the per-queue children ``mq`` makes when it is created. Sending one would make
the kernel create a *new* qdisc with a handle of its own in its place; skipped,
the customized children of the snapshot are grafted onto the kernel's.
"""

from __future__ import annotations

import base64
import errno
import os
import socket
import struct
from collections.abc import Callable
from typing import Any

from hostchaos.errors import RollbackError

RTM_NEWQDISC, RTM_NEWTCLASS, RTM_NEWTFILTER = 36, 40, 44
NLM_F_REQUEST, NLM_F_ACK, NLM_F_EXCL, NLM_F_CREATE = 0x1, 0x4, 0x200, 0x400
NLMSG_ERROR = 2
TCMSG = struct.Struct("=BxxxiIII")  # family, ifindex, handle, parent, info
#: dump-only attributes: stats, xstats, stats2, hw_offload, ext_warn_msg
DUMP_ONLY = {3, 4, 7, 12, 16}
TCA_KIND, TCA_OPTIONS = 1, 2
TCA_U32_DIVISOR = 4
TCA_HTB_INIT = 2
TCA_U32_FLAGS = 11
TCA_CLS_FLAGS_SETTABLE = 0x3  # skip_hw, skip_sw


def raw(msg: Any) -> str:
    """The kernel's bytes for one dumped message, base64-encoded for the journal."""
    length = msg["header"]["length"]
    return base64.b64encode(bytes(msg.data[msg.offset:msg.offset + length])).decode()


def _attrs(payload: bytes) -> list[tuple[int, bytes]]:
    out, pos = [], 0
    while pos + 4 <= len(payload):
        length, kind = struct.unpack_from("=HH", payload, pos)
        if length < 4:
            break
        out.append((kind & 0x3FFF, payload[pos:pos + length]))
        pos += (length + 3) & ~3
    return out


def _has_nested(attr: bytes, wanted: int) -> bool:
    return any(kind == wanted for kind, _ in _attrs(attr[4:]))


def _patch_u32_attr(options: bytes, wanted: int, change: Callable[[int], int]) -> bytes:
    """``options`` with the u32 value of attribute ``wanted`` replaced by ``change(value)``."""
    out = bytearray(options)
    pos = 4
    for kind, attr in _attrs(options[4:]):
        if kind == wanted and len(attr) >= 8:
            value = struct.unpack_from("=I", attr, 4)[0]
            struct.pack_into("=I", out, pos + 4, change(value))
        pos += (len(attr) + 3) & ~3
    return bytes(out)


def _fix_htb_version(options: bytes) -> bytes:
    """htb dumps its full version (0x30011) but accepts only the major (3) on create."""
    return _patch_u32_attr(options, TCA_HTB_INIT, lambda v: v >> 16 if v > 0xFFFF else v)


def _fix_u32_flags(options: bytes) -> bytes:
    """u32 dumps in_hw/not_in_hw state flags that a create request must not carry."""
    return _patch_u32_attr(options, TCA_U32_FLAGS, lambda v: v & TCA_CLS_FLAGS_SETTABLE)


def _request(message: bytes, seq: int) -> tuple[bytes, int]:
    """A create request made from a dumped message; returns (bytes, handle)."""
    _length, kind, _flags, _seq, _pid = struct.unpack_from("=IHHII", message)
    body = message[16:]
    family, index, handle, parent, info = TCMSG.unpack_from(body)
    # a qdisc's tcm_info is its reference count in a dump, and must be 0 in a request
    tcm = TCMSG.pack(family, index, handle, parent, 0 if kind == RTM_NEWQDISC else info)
    attrs = [(k, a) for k, a in _attrs(body[TCMSG.size:]) if k not in DUMP_ONLY]
    qdisc_kind = next((a[4:].rstrip(b"\0") for k, a in attrs if k == TCA_KIND), b"")
    if kind == RTM_NEWQDISC and qdisc_kind == b"htb":
        attrs = [(k, _fix_htb_version(a) if k == TCA_OPTIONS else a) for k, a in attrs]
    if kind == RTM_NEWTFILTER and qdisc_kind == b"u32":
        attrs = [(k, _fix_u32_flags(a) if k == TCA_OPTIONS else a) for k, a in attrs]
    kept = b"".join(a.ljust((len(a) + 3) & ~3, b"\0") for _, a in attrs)
    payload = tcm + kept
    header = struct.pack("=IHHII", 16 + len(payload), kind,
                         NLM_F_REQUEST | NLM_F_ACK | NLM_F_EXCL | NLM_F_CREATE, seq, 0)
    return header + payload, handle


def _replayable_filters(messages: list[bytes]) -> list[bytes]:
    """Drop what the kernel creates by itself: each priority's header entry, and the
    first u32 hash table of a priority (its root table, made with the first filter)."""
    out, seen_root = [], set()
    for message in messages:
        _family, _index, handle, parent, info = TCMSG.unpack_from(message, 16)
        if handle == 0:
            continue
        is_table = any(kind == TCA_OPTIONS and _has_nested(attr, TCA_U32_DIVISOR)
                       for kind, attr in _attrs(message[16 + TCMSG.size:]))
        if is_table and (parent, info) not in seen_root:
            seen_root.add((parent, info))
            continue
        out.append(message)
    return out


def _depth(handle: int, parents: dict[int, int]) -> int:
    depth = 0
    while handle in parents and depth < 64:
        handle = parents[handle]
        depth += 1
    return depth


def ordered(snapshot: dict[str, list[str]]) -> list[bytes]:
    """Messages in an order the kernel accepts: qdiscs and classes parents first, then filters."""
    tree: list[tuple[int, int, bytes]] = []
    parents: dict[int, int] = {}
    for group in ("qdiscs", "classes"):
        for text in snapshot.get(group, []):
            message = base64.b64decode(text)
            _family, _index, handle, parent, _info = TCMSG.unpack_from(message, 16)
            parents[handle] = parent
            if handle >> 16:  # major 0: the kernel's own, made again by itself
                tree.append((handle, parent, message))
    # a qdisc handle X:0 sits under its parent class; a class X:n under qdisc X:0
    for handle, parent, _ in tree:
        if handle & 0xFFFF:
            parents[handle] = handle & 0xFFFF0000 if parent == 0xFFFFFFFF else parent
    tree.sort(key=lambda item: _depth(item[0], parents))
    filters = [base64.b64decode(t) for t in snapshot.get("filters", [])]
    return [m for _, _, m in tree] + _replayable_filters(filters)


def replay(sock: socket.socket, snapshot: dict[str, list[str]], label: str) -> None:
    """Send the snapshot back to the kernel; raise RollbackError on the first refusal."""
    for seq, message in enumerate(ordered(snapshot), start=1):
        request, handle = _request(message, seq)
        sock.send(request)
        reply = sock.recv(65536)
        if struct.unpack_from("=H", reply, 4)[0] != NLMSG_ERROR:
            continue
        code = -struct.unpack_from("=i", reply, 16)[0]
        if code in (0, errno.EEXIST):
            continue
        kind = struct.unpack_from("=H", request, 4)[0]
        what = {RTM_NEWQDISC: "qdisc", RTM_NEWTCLASS: "class"}.get(kind, "filter")
        if kind == RTM_NEWTCLASS and code == errno.EOPNOTSUPP:
            continue  # a classless qdisc's internal class (tbf's X:1): comes with the qdisc
        raise RollbackError(
            f"could not put back the original {what} {handle >> 16:x}:{handle & 0xFFFF:x} on "
            f"{label}: {os.strerror(code)}; the snapshot is kept in the fault's record"
        )
