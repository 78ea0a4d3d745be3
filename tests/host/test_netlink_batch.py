"""Issue 15: a fault's tc tree goes to the kernel as one netlink batch; a refused message in
it, or a kill -9 between the note and the batch, leaves the tree exactly as it was.

The refusals are the kernel's own (a tbf with a zero bucket: EINVAL), not mocks: only the
leaf's options are replaced, so the kernel sees a batch whose third message it refuses, and
(a batch is not a transaction) still applies the filters after it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from hostchaos.config import Config
from hostchaos.engine import Engine
from hostchaos.errors import ApplyError
from hostchaos.faults.rate import RateFault, RateSpec
from hostchaos.sandbox import NetnsPair
from hostchaos.system.netlink import ETH_P_IP, ETH_P_IPV6, FilterSet
from hostchaos.system.tc_namespace import open_tree
from tests.support.cli import open_records, records
from tests.support.netns import mount_points
from tests.support.waiting import wait_for

#: tbf options the kernel refuses (EINVAL: a bucket of 0 bytes)
REFUSED_LEAF = {"rate": 125_000, "burst": 0, "limit": 30_000}
EVERYTHING = FilterSet((), [(ETH_P_IP, ["0x0/0x0+0"]), (ETH_P_IPV6, ["0x0/0x0+0"])])


def mounts_under(directory: Path) -> set[str]:
    """Mount points inside ``directory`` (other tests' mounts elsewhere come and go)."""
    return {m for m in mount_points() if m.startswith(f"{directory}/")}


def refused_leaf(self: RateFault, mtu: int = 1500) -> dict[str, Any]:
    return dict(REFUSED_LEAF)


def test_the_kernel_goes_on_after_a_refused_message_and_teardown_takes_it_all(
        pair: NetnsPair) -> None:
    """What the batch's undo must cover: after the refused leaf, the filters were applied."""
    before = pair.tc_config()
    with open_tree(pair.iface_a, pair.a) as tree:
        with pytest.raises(ApplyError, match="kernel refused to add qdisc tbf"):
            tree.build_fault(1, "tbf", REFUSED_LEAF, EVERYTHING, create_root=True)
        during = pair.tc_config()
        assert "htb 4843: root" in during and "class htb 4843:1" in during
        assert "tbf 4901:" not in during
        assert "flowid 4843:1" in during  # the messages after the refused one were applied
        tree.remove_fault(1, others=False)
        tree.remove_fault(1, others=False)  # idempotent
    assert pair.tc_config() == before


def test_a_refused_message_in_the_batch_leaves_the_tree_as_before(
        pair: NetnsPair, state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = pair.tc_config()
    monkeypatch.setattr(RateFault, "leaf_options", refused_leaf)
    engine = Engine(Config(state_dir=state_dir))
    with pytest.raises(ApplyError, match="kernel refused to add qdisc tbf"):
        engine.inject(RateSpec(iface=pair.iface_a, netns=pair.a, rate="1mbit"), 60)
    assert pair.tc_config() == before
    assert open_records(state_dir) == []
    (record,) = records(state_dir)
    assert record["state"] == "failed"
    assert mounts_under(state_dir) == set()  # the namespace handle was released too


def test_a_refused_batch_beside_another_fault_leaves_that_fault_as_it_was(
        pair: NetnsPair, state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The tree is shared: the refused fault's root is not in its batch and must stay."""
    before = pair.tc_config()
    engine = Engine(Config(state_dir=state_dir))
    first = engine.inject(RateSpec(iface=pair.iface_a, netns=pair.a, rate="1mbit",
                                   dst=("198.18.43.2/32",)), 60)
    try:
        with_first = pair.tc_config()
        monkeypatch.setattr(RateFault, "leaf_options", refused_leaf)
        with pytest.raises(ApplyError, match="kernel refused to add qdisc tbf"):
            engine.inject(RateSpec(iface=pair.iface_a, netns=pair.a, rate="1mbit",
                                   dst=("fd48:43::2/128",)), 60)
        assert pair.tc_config() == with_first
        assert [r["id"] for r in open_records(state_dir)] == [first.id]
    finally:
        monkeypatch.undo()
        engine.rollback(first.id)
    assert pair.tc_config() == before


@pytest.mark.parametrize("note", [1, 3])
def test_kill_9_between_the_note_and_the_batch(note: int, pair: NetnsPair, state_dir: Path,
                                               tmp_path: Path) -> None:
    """Notes 1-4 (netns, root, class, filters) are one write; the CLI is parked right after
    it, before the handle and the batch, and killed: the warden rolls the fault back."""
    before = pair.tc_config()
    marker = tmp_path / "paused"
    proc = subprocess.Popen(
        [sys.executable, "-m", "hostchaos", "inject", "rate", "--netns", pair.a, "--iface",
         pair.iface_a, "--rate", "1mbit", "--for", "60s"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "HOSTCHAOS_STATE_DIR": str(state_dir),
             "HOSTCHAOS_TEST_PAUSE_AFTER_NOTE": str(note),
             "HOSTCHAOS_TEST_PAUSE_FILE": str(marker)})
    try:
        wait_for(marker.exists, timeout=60)
        (record,) = open_records(state_dir)
        assert [n["step"] for n in record["undo"]] == ["netns", "root", "class", "filters"]
        assert pair.tc_config() == before  # noted, nothing changed yet
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    wait_for(lambda: open_records(state_dir) == [], timeout=30)
    (record,) = records(state_dir)
    assert record["end_reason"] == "the injecting process died during apply"
    assert pair.tc_config() == before
    assert mounts_under(state_dir) == set()


def test_an_interface_is_found_by_ioctl_in_the_sockets_own_namespace(pair: NetnsPair) -> None:
    """Rtnl.interface (SIOCGIFINDEX/SIOCGIFMTU on the netlink socket) answers for the
    namespace the socket lives in, as `ip link` inside it does."""
    import json as _json

    from hostchaos.system.tc_namespace import netns_path, open_namespace

    subprocess.run(["ip", "-n", pair.a, "link", "set", pair.iface_a, "mtu", "1400"], check=True)
    shown = _json.loads(subprocess.run(["ip", "-n", pair.a, "-j", "link", "show"],
                                       capture_output=True, text=True, check=True).stdout)
    expected = {link["ifname"]: (link["ifindex"], link["mtu"]) for link in shown}
    with open_namespace(netns_path(pair.a), pair.a) as ns:
        for name, (index, mtu) in expected.items():
            assert ns._ipr.interface(name) == (index, mtu), name
        assert ns._ipr.interface(pair.iface_b) is None  # the peer lives in the other one
        assert ns._ipr.interface("x" * 20) is None and ns._ipr.interface("") is None
        assert ns.tree(pair.iface_a).index == expected[pair.iface_a][0]
        assert ns.tree(pair.iface_a).mtu() == 1400


def test_a_batch_reports_each_refusal_though_only_its_last_request_asks_for_an_ack(
        pair: NetnsPair) -> None:
    """Rtnl.batch asks the kernel to acknowledge only the last message; every refusal, in
    the middle or at the end, is still that request's outcome, and the others took effect."""
    from hostchaos.system.netlink import ROOT_HANDLE, TC_H_ROOT
    from hostchaos.system.tc_namespace import netns_path, open_namespace

    before = pair.tc_config()
    with open_namespace(netns_path(pair.a), pair.a) as ns:
        rtnl = ns._ipr
        index = ns.tree(pair.iface_a).index
        m = rtnl.tc_message
        requests = [
            m("add", "htb", index, ROOT_HANDLE, parent=TC_H_ROOT, default=0),
            m("add-class", "htb", index, 0x48430001, parent=0x11110000, rate=1000,
              quantum=1500),  # no such parent: refused
            m("add-class", "htb", index, 0x48430002, parent=ROOT_HANDLE, rate=1000,
              quantum=1500),
            m("add", "htb", index, ROOT_HANDLE, parent=TC_H_ROOT, default=0),  # EEXIST
        ]
        sends = rtnl.sends
        outcomes = rtnl.batch(requests)
        assert rtnl.sends == sends + 1
        assert [o.error is None for o in outcomes] == [True, False, True, False]
        during = pair.tc_config()
        assert "htb 4843: root" in during and "class htb 4843:2" in during
        assert "class htb 4843:1" not in during
        (accepted,) = rtnl.batch([m("del", index=index, handle=ROOT_HANDLE, parent=TC_H_ROOT)])
        assert accepted.error is None
    assert pair.tc_config() == before


def test_brief_dumps_read_what_full_dumps_read(pair: NetnsPair) -> None:
    """Where a fault goes is decided from brief dumps (fields and kind, the rest left
    undecoded): on a real tree they name the same qdiscs and classes as full dumps."""
    from hostchaos.system.tc_namespace import open_namespace

    with open_tree(pair.iface_a, pair.a) as tree:
        tree.build_fault(1, "tbf", {"rate": 125_000, "burst": 3000, "limit": 30_000},
                         EVERYTHING, create_root=True)
        tree.build_fault(2, "tbf", {"rate": 250_000, "burst": 3000, "limit": 30_000},
                         EVERYTHING, create_root=False)
    try:
        with open_namespace(f"/run/netns/{pair.a}", pair.a) as ns:
            rtnl = ns._ipr

            def shape(messages: list[Any]) -> list[tuple[Any, ...]]:
                return [(m["index"], m["handle"], m["parent"], m.get_attr("TCA_KIND"))
                        for m in messages]

            index = ns.tree(pair.iface_a).index
            for dump in (rtnl.get_qdiscs, rtnl.get_classes):
                full, brief = dump(index), dump(index, brief=True)
                assert len(full) >= 3 and shape(brief) == shape(full)
                assert all(m.get_attr("TCA_OPTIONS") is None for m in brief)
                assert any(m.get_attr("TCA_OPTIONS") is not None for m in full)
            everywhere = rtnl.get_qdiscs(brief=True)  # every device of the namespace
            assert shape(everywhere) == shape(rtnl.get_qdiscs())
            assert {m["index"] for m in everywhere} > {index}
            assert {q.handle for q in ns.tree(pair.iface_a).qdiscs()} == {
                m["handle"] for m in rtnl.get_qdiscs(index)}
            assert ns.tree(pair.iface_a).used_slots() == {1, 2}
    finally:
        with open_tree(pair.iface_a, pair.a) as tree:
            tree.remove_root()
    assert "4843:" not in pair.tc_config()
