"""hostchaos's rtnetlink requests are byte for byte what pyroute2's IPRoute would send.

:mod:`hostchaos.system.rtnl` builds messages with pyroute2's message classes and
request filters but without its asyncio socket layer (``NetlinkRequest``,
``get_arguments_processor``, ``MarshalRtnl``). These tests hold it to pyroute2's
own path for every kind of request hostchaos sends, and hold the decoding to
``MarshalRtnl``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from types import SimpleNamespace
from typing import Any

import pytest
from pyroute2.iproute.linux import get_arguments_processor
from pyroute2.netlink.nlsocket import NetlinkRequest
from pyroute2.netlink.rtnl import TC_H_INGRESS, TC_H_ROOT
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.marshal import MarshalRtnl
from pyroute2.netlink.rtnl.tcmsg import tcmsg

from hostchaos.faults.corrupt import CorruptFault, CorruptSpec
from hostchaos.faults.duplicate import DuplicateFault, DuplicateSpec
from hostchaos.faults.latency import LatencyFault, LatencySpec
from hostchaos.faults.loss import LossFault, LossSpec
from hostchaos.faults.partition import PartitionFault, PartitionSpec
from hostchaos.faults.rate import RateFault, RateSpec
from hostchaos.faults.reorder import ReorderFault, ReorderSpec
from hostchaos.system import netem_codec, rtnl, tbf_codec
from hostchaos.system.netlink import DIRECT, ETH_P_IP, ETH_P_IPV6, LINE_RATE, ROOT_HANDLE

netem_codec.install()  # as open_namespace does before any request
tbf_codec.install()

LEAVES: list[tuple[str, dict[str, Any]]] = [
    ("netem", LatencyFault(LatencySpec(iface="eth0", ms=100)).leaf_options()),
    ("netem", LatencyFault(LatencySpec(iface="eth0", ms=50, jitter_ms=10, correlation=25,
                                       distribution="normal")).leaf_options()),
    ("netem", LossFault(LossSpec(iface="eth0", percent=20, correlation=5)).leaf_options()),
    ("netem", LossFault(LossSpec(iface="eth0", ge=(5.0, 50.0))).leaf_options()),
    ("netem", CorruptFault(CorruptSpec(iface="eth0", percent=20)).leaf_options()),
    ("netem", DuplicateFault(DuplicateSpec(iface="eth0", percent=20)).leaf_options()),
    ("netem", ReorderFault(ReorderSpec(iface="eth0", percent=25, ms=10,
                                       gap=5)).leaf_options()),
    ("tbf", RateFault(RateSpec(iface="eth0", rate="1mbit")).leaf_options()),
    ("tbf", RateFault(RateSpec(iface="lo", rate="10gbit")).leaf_options(mtu=65536)),
]
PARTITION_KIND, PARTITION_OPTIONS = "netem", PartitionFault(
    PartitionSpec(iface="eth0")).leaf_options()
KEYS_V4 = ["0x00060000/0x00ff0000+8", "0x0a010200/0xffffff00+16", "0x00160000/0xffff0000+20"]
KEYS_V6 = ["0x00001100/0x0000ff00+4", "0xfd480043/0xffffffff+8"]

TC_REQUESTS: list[tuple[str, dict[str, Any]]] = [
    ("replace", {"kind": "htb", "index": 7, "handle": ROOT_HANDLE, "parent": TC_H_ROOT,
                 "default": 0}),
    ("add", {"kind": "htb", "index": 7, "handle": ROOT_HANDLE, "parent": TC_H_ROOT,
             "default": 0}),
    ("add-class", {"kind": "htb", "index": 7, "handle": ROOT_HANDLE | 3,
                   "parent": ROOT_HANDLE, "rate": LINE_RATE, "quantum": 60000}),
    *(("add", {"kind": kind, "index": 7, "handle": 0x30000, "parent": ROOT_HANDLE | 3,
               **options}) for kind, options in [*LEAVES, (PARTITION_KIND, PARTITION_OPTIONS)]),
    ("add-filter", {"kind": "u32", "index": 7, "parent": ROOT_HANDLE, "prio": 10,
                    "protocol": ETH_P_IP, "target": ROOT_HANDLE | 3, "keys": KEYS_V4}),
    ("add-filter", {"kind": "u32", "index": 7, "parent": ROOT_HANDLE, "prio": 11,
                    "protocol": ETH_P_IPV6, "target": DIRECT, "keys": KEYS_V6}),
    ("add", {"kind": "ingress", "index": 7, "handle": TC_H_INGRESS}),
    ("add-filter", {"kind": "u32", "index": 7, "parent": TC_H_INGRESS, "prio": 1,
                    "protocol": ETH_P_IP, "target": 0x1, "keys": ["0x0/0x0+0"],
                    "action": {"kind": "mirred", "direction": "egress",
                               "action": "redirect", "ifindex": 9}}),
    ("del", {"index": 7, "handle": ROOT_HANDLE, "parent": TC_H_ROOT}),
    ("del-class", {"index": 7, "handle": ROOT_HANDLE | 3, "parent": ROOT_HANDLE}),
    ("del-filter", {"index": 7, "parent": ROOT_HANDLE,
                    "info": (10 << 16) | socket.htons(ETH_P_IP)}),
]
LINK_REQUESTS: list[tuple[str, dict[str, Any]]] = [
    ("add", {"ifname": "hc-ifb0", "kind": "ifb"}),
    ("set", {"index": 9, "state": "up"}),
    ("del", {"index": 9}),
    ("get", {"index": 9, "ext_mask": rtnl.RTEXT_FILTER_SKIP_STATS}),
    ("get", {"ifname": "eth0", "ext_mask": rtnl.RTEXT_FILTER_SKIP_STATS}),
]


def pyroute2_bytes(msg_class: Any, mode: str, command: str,
                   command_map: dict[str, tuple[int, str]], kwarg: dict[str, Any]) -> bytes:
    shim = SimpleNamespace(addr_pool=None, status={"nlm_echo": False}, epid=0,
                           marshal=MarshalRtnl(), exception_factory=None)
    arguments = get_arguments_processor(mode, command, dict(kwarg))
    msg = NetlinkRequest(shim, msg_class(), command, command_map, None, arguments,
                         msg_seq=0, msg_pid=0).msg
    msg.encode()
    return bytes(msg.data)


def our_bytes(msg_class: Any, mode: str, command: str,
              command_map: dict[str, tuple[int, str]], kwarg: dict[str, Any]) -> bytes:
    msg_type, flags = command_map[command]
    msg = rtnl._built(msg_class(), msg_type, rtnl._FLAGS[flags],
                      rtnl._arguments(mode, command, dict(kwarg)))
    msg.encode()
    return bytes(msg.data)


@pytest.mark.parametrize(("command", "kwarg"), TC_REQUESTS,
                         ids=[f"{c}-{k.get('kind', '')}-{i}"
                              for i, (c, k) in enumerate(TC_REQUESTS)])
def test_tc_requests_equal_pyroute2s(command: str, kwarg: dict[str, Any]) -> None:
    ours = our_bytes(tcmsg, "tc", command, rtnl._TC_COMMANDS, kwarg)
    assert ours == pyroute2_bytes(tcmsg, "tc", command, rtnl._TC_COMMANDS, kwarg)
    assert len(ours) >= 36  # netlink header + tcmsg


@pytest.mark.parametrize(("command", "kwarg"), LINK_REQUESTS)
def test_link_requests_equal_pyroute2s(command: str, kwarg: dict[str, Any]) -> None:
    ours = our_bytes(ifinfmsg, "link", command, rtnl._LINK_COMMANDS, kwarg)
    assert ours == pyroute2_bytes(ifinfmsg, "link", command, rtnl._LINK_COMMANDS, kwarg)


def test_rtnl_sends_those_bytes_with_its_own_sequence_number() -> None:
    with rtnl.Rtnl() as conn:
        first = conn.tc_message("add-class", "htb", 7, ROOT_HANDLE | 3, parent=ROOT_HANDLE,
                                rate=LINE_RATE, quantum=60000)
        again = conn.tc_message("add-class", "htb", 7, ROOT_HANDLE | 3, parent=ROOT_HANDLE,
                                rate=LINE_RATE, quantum=60000)
    reference = bytearray(pyroute2_bytes(tcmsg, "tc", "add-class", rtnl._TC_COMMANDS, {
        "kind": "htb", "index": 7, "handle": ROOT_HANDLE | 3, "parent": ROOT_HANDLE,
        "rate": LINE_RATE, "quantum": 60000}))
    for request in (first, again):
        reference[8:12] = request.seq.to_bytes(4, sys.byteorder)
        assert request.data == bytes(reference)
    assert again.seq == first.seq + 1


def test_the_kernels_own_answer_decodes_as_pyroute2_decodes_it() -> None:
    with rtnl.Rtnl() as conn:
        request = conn.link_message("get", ifname="lo", ext_mask=rtnl.RTEXT_FILTER_SKIP_STATS)
        conn._sock.send(request.data)
        data = conn._sock.recv(rtnl.RECV_SIZE)
    ours_marshal, theirs_marshal = rtnl._TcLinkMarshal(), MarshalRtnl()
    for msg_type, msg_class in ours_marshal.msg_map.items():
        assert theirs_marshal.msg_map[msg_type] is msg_class
    ours = list(ours_marshal.parse(data))
    theirs = list(theirs_marshal.parse(data))
    assert [m.get_attr("IFLA_IFNAME") for m in ours] == ["lo"]
    assert [m.dump() for m in ours] == [m.dump() for m in theirs]
    assert ours[0]["event"] == theirs[0]["event"] == "RTM_NEWLINK"


def test_a_network_command_skips_pyroute2s_package_init_and_asyncio() -> None:
    probe = (
        "import sys\n"
        "import hostchaos.system.tc_namespace, hostchaos.system.rtnl\n"
        "heavy = sorted(m for m in ('asyncio', 'ssl', 'pyroute2.ndb', 'pyroute2.ipdb',\n"
        "    'pyroute2.iproute', 'pyroute2.netlink.nlsocket', 'unittest') if m in sys.modules)\n"
        "from hostchaos.system import pyroute2_package\n"
        "before = pyroute2_package.fully_initialised(sys.modules['pyroute2'])\n"
        "from pyroute2 import IPRoute, netns\n"
        "import pyroute2\n"
        "print(heavy, before, pyroute2_package.fully_initialised(pyroute2),\n"
        "      IPRoute.__name__, netns.__name__, bool(pyroute2.__version__))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONPATH": os.getcwd()}).stdout
    assert out.split() == ["[]", "False", "True", "IPRoute", "pyroute2.netns", "True"]


def test_pyroute2_imported_first_is_left_alone() -> None:
    probe = ("import pyroute2, sys\n"
             "import hostchaos.system.rtnl\n"
             "print(sys.modules['pyroute2'] is pyroute2, 'IPRoute' in vars(pyroute2))\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True).stdout
    assert out.split() == ["True", "True"]


def test_threads_asking_for_a_public_name_at_once_all_get_it() -> None:
    """The torture bench's lanes make their sandboxes in threads: while one ran pyroute2's
    ``__init__`` for ``from pyroute2 import IPRoute``, the others got ImportError."""
    probe = (
        "import sys, threading\n"
        "import hostchaos.system.rtnl\n"  # pyroute2's package, deferred
        "from hostchaos.system import pyroute2_package\n"
        "assert not pyroute2_package.fully_initialised(sys.modules['pyroute2'])\n"
        "start, errors = threading.Barrier(8), []\n"
        "def ask():\n"
        "    start.wait()\n"
        "    try:\n"
        "        from pyroute2 import IPRoute, netns  # noqa: F401\n"
        "    except ImportError as exc:\n"
        "        errors.append(exc)\n"
        "threads = [threading.Thread(target=ask) for _ in range(8)]\n"
        "[t.start() for t in threads]\n"
        "[t.join() for t in threads]\n"
        "print(len(errors), errors[:1])\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert out.stdout.split(maxsplit=1)[0] == "0", out.stdout
