"""A synchronous rtnetlink connection: pyroute2's messages, one ``send`` per batch.

pyroute2 0.9's ``IPRoute`` runs every request through an asyncio event loop
(``run_until_complete`` per call): about 0.2-0.5 ms a request on the build
machine, against ~0.03 ms for the kernel's own round trip. :class:`Rtnl` keeps
pyroute2 for what it is good at, encoding and decoding every message (its
``tcmsg`` / ``ifinfmsg`` classes, its tc plugins and request filters, its
``MarshalRtnl``), and does the socket part itself on a plain blocking socket.

:meth:`Rtnl.batch` sends several requests in one ``send`` (the kernel
processes each message of a datagram in turn and acknowledges each, with
``NLM_F_ACK``) and returns each request's outcome. The kernel does not stop
at a refused message: a batch is not a transaction, so its caller must be able
to undo any subset of it (see :mod:`hostchaos.system.netlink`).

It offers the subset of ``IPRoute``'s methods hostchaos uses (``tc``, ``link``,
``get_qdiscs``, ``get_classes``, ``get_filters``, ``get_links``,
``link_lookup``), with the same arguments, and raises pyroute2's
``NetlinkError`` the same way, so :class:`hostchaos.system.netlink._Boundary`
translates its errors unchanged.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import struct
from dataclasses import dataclass
from typing import Any, ClassVar

from pyroute2.netlink import (
    NLM_F_ACK,
    NLM_F_CREATE,
    NLM_F_DUMP,
    NLM_F_EXCL,
    NLM_F_REPLACE,
    NLM_F_REQUEST,
    NLMSG_DONE,
    NLMSG_ERROR,
    nlmsg,
)
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.marshal import Marshal
from pyroute2.netlink.rtnl import (
    RTM_DELLINK,
    RTM_DELQDISC,
    RTM_DELTCLASS,
    RTM_DELTFILTER,
    RTM_GETLINK,
    RTM_GETQDISC,
    RTM_GETTCLASS,
    RTM_GETTFILTER,
    RTM_NEWLINK,
    RTM_NEWQDISC,
    RTM_NEWTCLASS,
    RTM_NEWTFILTER,
    RTM_SETLINK,
    RTM_VALUES,
)
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.tcmsg import tcmsg
from pyroute2.requests.link import LinkFieldFilter, LinkIPRouteFilter
from pyroute2.requests.main import RequestProcessor
from pyroute2.requests.tc import TcIPRouteFilter, TcRequestFilter

SOL_NETLINK = 270
NETLINK_EXT_ACK = 11
NLM_F_DUMP_INTR = 0x10
RECV_SIZE = 1 << 17
#: IFLA_EXT_MASK bit: a link's answer without its statistics, which pyroute2 would take
#: ~1 ms to decode
RTEXT_FILTER_SKIP_STATS = 1 << 3

_TC_COMMANDS = {
    "add": (RTM_NEWQDISC, "create"),
    "del": (RTM_DELQDISC, "req"),
    "replace": (RTM_NEWQDISC, "replace"),
    "add-class": (RTM_NEWTCLASS, "create"),
    "del-class": (RTM_DELTCLASS, "req"),
    "add-filter": (RTM_NEWTFILTER, "create"),
    "del-filter": (RTM_DELTFILTER, "req"),
}
_LINK_COMMANDS = {
    "set": (RTM_NEWLINK, "req"),
    "add": (RTM_NEWLINK, "create"),
    "del": (RTM_DELLINK, "req"),
    "get": (RTM_GETLINK, "get"),
}


#: NetlinkRequest.flags, for the modes hostchaos sends
_FLAGS = {
    "get": NLM_F_REQUEST | NLM_F_ACK,
    "req": NLM_F_REQUEST | NLM_F_ACK,
    "create": NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
    "replace": NLM_F_REQUEST | NLM_F_ACK | NLM_F_REPLACE | NLM_F_CREATE,
}


class _TcLinkMarshal(Marshal):  # type: ignore[misc]
    """pyroute2's ``MarshalRtnl`` for the two message families hostchaos reads.

    ``MarshalRtnl`` lives beside pyroute2's asyncio socket layer, which would load
    asyncio, ssl and multiprocessing into every command; the decoding is the same.
    """

    msg_map: ClassVar[dict[int, Any]] = {
        **dict.fromkeys((RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK, RTM_SETLINK), ifinfmsg),
        **dict.fromkeys((RTM_NEWQDISC, RTM_DELQDISC, RTM_GETQDISC, RTM_NEWTCLASS,
                         RTM_DELTCLASS, RTM_GETTCLASS, RTM_NEWTFILTER, RTM_DELTFILTER,
                         RTM_GETTFILTER), tcmsg),
    }

    def fix_message(self, msg: Any) -> None:
        name = RTM_VALUES.get(msg["header"]["type"])
        if name is not None:
            msg["event"] = name


class _TcBrief(nlmsg):  # type: ignore[misc]
    """A tc message decoded by pyroute2 as far as a tree's shape needs: tcmsg's fields
    (index, handle, parent) and TCA_KIND, its other attributes left undecoded.

    pyroute2 decodes a qdisc's or class's options and statistics in Python, ~40 us a
    message; deciding where a fault goes reads none of them.
    """

    prefix = "TCA_"
    fields = tcmsg.fields
    nla_map = (("TCA_UNSPEC", "none"), ("TCA_KIND", "asciiz"))


class _TcBriefMarshal(_TcLinkMarshal):
    msg_map: ClassVar[dict[int, Any]] = {
        **_TcLinkMarshal.msg_map,
        **dict.fromkeys((RTM_NEWQDISC, RTM_DELQDISC, RTM_GETQDISC, RTM_NEWTCLASS,
                         RTM_DELTCLASS, RTM_GETTCLASS), _TcBrief),
    }


def _arguments(mode: str, command: str, query: dict[str, Any]) -> Any:
    """``IPRoute``'s request processing of ``tc`` / ``link`` arguments (its request filters)."""
    processor = RequestProcessor(context=query, prime=query)
    filters = ([TcRequestFilter(), TcIPRouteFilter(command)] if mode == "tc"
               else [LinkFieldFilter(), LinkIPRouteFilter(command)])
    for request_filter in filters:
        processor.add_filter(request_filter)
    processor.finalize()
    return processor


def _built(msg: Any, msg_type: int, flags: int, arguments: Any) -> Any:
    """``msg`` filled as ``NetlinkRequest`` fills it (header, fields, NLAs), sequence 0."""
    msg["header"]["type"] = msg_type
    msg["header"]["flags"] = flags
    msg["header"]["sequence_number"] = 0
    msg["header"]["pid"] = os.getpid()
    msg.reset()
    for field in msg.fields:
        msg[field[0]] = arguments.get_value(field[0], default=0, mode="field")
    for key, value in arguments.items():
        nla = type(msg).name2nla(key)
        if msg.valid_nla(nla) and value is not None:
            msg["attrs"].append([nla, value])
    if "attrs" in arguments:
        msg["attrs"].extend(arguments["attrs"])
    return msg


def _refusal(error: object) -> NetlinkError | None:
    """The kernel's refusal in an acknowledgement (None: it accepted the request).

    pyroute2 hands ENOBUFS over as a plain OSError: it is a refusal all the same.
    """
    if error is None or isinstance(error, NetlinkError):
        return error
    if isinstance(error, OSError):
        return NetlinkError(error.errno or errno.ENOBUFS, str(error))
    return NetlinkError(errno.EPROTO, f"undecodable answer: {error}")


@dataclass(frozen=True)
class Request:
    """One encoded request: its sequence number and its bytes (pyroute2's encoding)."""

    seq: int
    data: bytes


@dataclass
class Outcome:
    """What the kernel answered to one request of a batch."""

    #: the kernel's refusal, or None when it accepted the request
    error: NetlinkError | None
    #: reply messages (a ``get``'s answer), decoded by pyroute2
    replies: list[Any]
    #: an acknowledgement or a refusal came (ends the answer to this request)
    answered: bool = False


#: where nlmsghdr keeps its flags (after the length and the type)
_FLAGS_AT = struct.Struct("=H")


def _without_ack(data: bytes) -> bytes:
    """An encoded request that asks for no acknowledgement of success (refusals still come)."""
    flags = _FLAGS_AT.unpack_from(data, 6)[0]
    if not flags & NLM_F_ACK:
        return data
    out = bytearray(data)
    _FLAGS_AT.pack_into(out, 6, flags & ~NLM_F_ACK)
    return bytes(out)


#: encoded requests by their arguments, with sequence number 0. pyroute2 computes an htb
#: class's rate tables in Python (~1 ms); the same request is the same bytes every time.
_ENCODED: dict[str, bytes] = {}
_ENCODED_MAX = 1024


_SIOCGIFINDEX, _SIOCGIFMTU = 0x8933, 0x8921
_IFNAMSIZ = 16
#: struct ifreq: the name, then a union whose first member (ifr_ifindex, ifr_mtu) is an int
_IFREQ = struct.Struct("16si20x")


class Rtnl:
    """One rtnetlink socket, used synchronously (see the module docstring).

    ``sock`` is an ``AF_NETLINK`` ``NETLINK_ROUTE`` socket, typically created
    inside the target namespace; Rtnl owns it from then on.
    """

    def __init__(self, sock: socket.socket | None = None) -> None:
        self._sock = sock or socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, 0)
        self._sock.setblocking(True)
        try:
            self._sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
        except OSError:
            pass  # older kernels: errors come without the kernel's text
        self._sock.bind((0, 0))
        self._seq = 0
        self._marshal = _TcLinkMarshal()
        self._brief_marshal = _TcBriefMarshal()
        #: requests sent to the kernel (each message of a batch counts), for benchmarks
        self.requests = 0
        #: datagrams sent (a batch is one)
        self.sends = 0

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Rtnl:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- encoding (pyroute2's) --------------------------------------------------------
    def _next_seq(self) -> int:
        self._seq = self._seq % 0x7FFFFFFF + 1
        return self._seq

    def _encoded(self, key: str, build: Any) -> Request:
        data = _ENCODED.get(key)
        if data is None:
            msg = build()
            msg.encode()
            data = bytes(msg.data)
            if len(_ENCODED) >= _ENCODED_MAX:
                _ENCODED.clear()
            _ENCODED[key] = data
        seq = self._next_seq()
        out = bytearray(data)
        struct.pack_into("=I", out, 8, seq)
        return Request(seq, bytes(out))

    def _message(self, msg_class: Any, command: str, command_map: dict[str, tuple[int, str]],
                 mode: str, kwarg: dict[str, Any]) -> Request:
        def build() -> Any:
            msg_type, flags_mode = command_map[command]
            return _built(msg_class(), msg_type, _FLAGS[flags_mode],
                          _arguments(mode, command, dict(kwarg)))

        return self._encoded(repr((mode, command, sorted(kwarg.items()))), build)

    def tc_message(self, command: str, kind: str | None = None, index: int | None = None,
                   handle: int | None = None, **kwarg: Any) -> Request:
        """An encoded tc request, with ``IPRoute.tc``'s arguments (add, del, replace,
        add-class, del-class, add-filter, del-filter)."""
        if kind is not None:
            kwarg["kind"] = kind
        if index is not None:
            kwarg["index"] = index
        if handle is not None:
            kwarg["handle"] = handle
        return self._message(tcmsg, command, _TC_COMMANDS, "tc", kwarg)

    def link_message(self, command: str, **kwarg: Any) -> Request:
        """An encoded link request, with ``IPRoute.link``'s arguments (add, set, del, get)."""
        return self._message(ifinfmsg, command, _LINK_COMMANDS, "link", kwarg)

    def _dump_message(self, msg_type: int, **fields: int) -> Request:
        def build() -> Any:
            msg = tcmsg()
            for name, value in fields.items():
                msg[name] = value
            msg["header"]["type"] = msg_type
            msg["header"]["flags"] = NLM_F_REQUEST | NLM_F_DUMP
            msg["header"]["sequence_number"] = 0
            msg["header"]["pid"] = 0
            return msg

        return self._encoded(repr(("dump", msg_type, sorted(fields.items()))), build)

    # -- the socket ----------------------------------------------------------------------
    def batch(self, requests: list[Request]) -> list[Outcome]:
        """Send encoded requests in one datagram; each one's outcome, in order.

        The kernel handles the messages of a datagram in turn and goes on after
        a refused one. It answers a refusal always, a success only when asked
        (NLM_F_ACK): so only the last request asks, and the others' refusals,
        sent as each is handled, arrive before the last one's answer. A
        request with no refusal by then was accepted.
        """
        if not requests:
            return []
        outcomes = {r.seq: Outcome(None, []) for r in requests}
        last = requests[-1].seq
        self._sock.send(b"".join([*(_without_ack(r.data) for r in requests[:-1]),
                                  requests[-1].data]))
        self.sends += 1
        self.requests += len(requests)
        answered = False
        while not answered:
            for reply in self._receive():
                seq = reply["header"]["sequence_number"]
                outcome = outcomes.get(seq)
                if outcome is None or outcome.answered:
                    continue  # an answer to an earlier, abandoned request
                if reply["header"]["type"] == NLMSG_ERROR:
                    outcome.error = _refusal(reply["header"].get("error"))
                    outcome.answered = True
                    answered = answered or seq == last
                else:
                    outcome.replies.append(reply)
        return [outcomes[r.seq] for r in requests]

    def request(self, request: Request) -> list[Any]:
        """Send one encoded request; its replies, or NetlinkError."""
        outcome = self.batch([request])[0]
        if outcome.error is not None:
            raise outcome.error
        return outcome.replies

    def dump(self, msg_type: int, *, brief: bool = False, **fields: int) -> list[Any]:
        """Every message of a dump of ``msg_type`` with these tcmsg fields set.

        ``brief``: qdiscs and classes decoded only as far as fields and kind
        (:class:`_TcBrief`).
        """
        marshal = self._brief_marshal if brief else self._marshal
        for _attempt in range(5):
            request = self._dump_message(msg_type, **fields)
            self._sock.send(request.data)
            self.sends += 1
            self.requests += 1
            out: list[Any] = []
            interrupted = done = False
            while not done:
                for reply in self._receive(marshal):
                    if reply["header"]["sequence_number"] != request.seq:
                        continue
                    kind = reply["header"]["type"]
                    if reply["header"]["flags"] & NLM_F_DUMP_INTR:
                        interrupted = True
                    if kind == NLMSG_DONE:
                        done = True
                    elif kind == NLMSG_ERROR:
                        error = _refusal(reply["header"].get("error"))
                        if error is not None:
                            raise error
                        done = True
                    else:
                        out.append(reply)
            if not interrupted:
                return out
        raise NetlinkError(errno.EINTR, "dump interrupted five times in a row")

    def _receive(self, marshal: Any = None) -> list[Any]:
        data = self._sock.recv(RECV_SIZE)
        return list((marshal or self._marshal).parse(data))

    # -- IPRoute's subset ------------------------------------------------------------------
    def tc(self, command: str, kind: str | None = None, index: int | None = None,
           handle: int | None = None, **kwarg: Any) -> list[Any]:
        return self.request(self.tc_message(command, kind, index, handle, **kwarg))

    def link(self, command: str, **kwarg: Any) -> list[Any]:
        return self.request(self.link_message(command, **kwarg))

    def get_qdiscs(self, index: int | None = None, *, brief: bool = False) -> list[Any]:
        """The qdiscs (of device ``index``); ``brief``: fields and kind only (see dump)."""
        return [m for m in self.dump(RTM_GETQDISC, brief=brief, index=index or 0)
                if index is None or m["index"] == index]

    def get_classes(self, index: int = 0, *, brief: bool = False) -> list[Any]:
        return self.dump(RTM_GETTCLASS, brief=brief, index=index)

    def get_filters(self, index: int = 0, handle: int = 0, parent: int = 0) -> list[Any]:
        return self.dump(RTM_GETTFILTER, index=index, handle=handle, parent=parent)

    def get_link(self, **match: Any) -> list[Any]:
        """The link of that ``index`` or ``ifname`` (without statistics); NetlinkError if none."""
        return self.link("get", ext_mask=RTEXT_FILTER_SKIP_STATS, **match)

    def get_links(self, index: int) -> list[Any]:
        return self.get_link(index=index)

    def interface(self, name: str) -> tuple[int, int] | None:
        """(index, MTU) of the interface ``name`` in this socket's namespace; None if none.

        Two ioctls (SIOCGIFINDEX, SIOCGIFMTU) on the netlink socket itself, a few
        microseconds: the kernel answers SIOCGIF* on any socket, in the socket's own
        network namespace. A full link dump decoded by pyroute2 costs ~0.4 ms, and a
        fault asked it three times.
        """
        raw = os.fsencode(name)
        if not raw or len(raw) >= _IFNAMSIZ or b"\0" in raw:
            return None
        request = _IFREQ.pack(raw, 0)
        try:
            index = _IFREQ.unpack(fcntl.ioctl(self._sock.fileno(), _SIOCGIFINDEX, request))[1]
            mtu = _IFREQ.unpack(fcntl.ioctl(self._sock.fileno(), _SIOCGIFMTU, request))[1]
        except OSError as exc:
            if exc.errno in (errno.ENODEV, errno.ENXIO):
                return None
            raise NetlinkError(exc.errno or errno.EIO, f"interface {name}: {exc.strerror}"
                               ) from exc
        return int(index), int(mtu)

    def link_lookup(self, ifname: str) -> list[int]:
        try:
            return [int(m["index"]) for m in self.get_link(ifname=ifname)][:1]
        except NetlinkError:
            return []
