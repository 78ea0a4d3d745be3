"""Issue 8 point 9: hostchaos uses only IFB devices it made, and removes the one it noted."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from hostchaos.sandbox import NetnsPair
from hostchaos.system import capabilities
from tests.support.capability import need
from tests.support.cli import hostchaos, one_line_error, open_records
from tests.support.netns import ifindex, links, notes


@pytest.fixture(autouse=True)
def _ifb() -> None:
    need(capabilities.ifb())


def inject(pair: NetnsPair, state_dir: Path, *args: str) -> str:
    result = hostchaos("inject", "rate", "--netns", pair.a, "--iface", pair.iface_a,
                       "--rate", "2mbit", "--direction", "ingress", *args, "--json",
                       state_dir=state_dir)
    assert result.returncode == 0, result.stderr
    fault_id: str = json.loads(result.stdout)["id"]
    return fault_id


def test_an_ifb_no_fault_made_is_refused_and_left_alone(pair: NetnsPair,
                                                        state_dir: Path) -> None:
    name = f"hcifb{ifindex(pair.a, pair.iface_a)}"
    subprocess.run(["ip", "-n", pair.a, "link", "add", name, "type", "ifb"], check=True)
    before_links, before = links(pair.a), pair.tc_config()
    result = hostchaos("inject", "rate", "--netns", pair.a, "--iface", pair.iface_a,
                       "--rate", "2mbit", "--direction", "ingress", state_dir=state_dir)
    assert result.returncode == 5, result.stderr
    line = one_line_error(result)
    assert f"interface {name}" in line and f"ip link del {name}" in line
    assert links(pair.a) == before_links and pair.tc_config() == before
    assert open_records(state_dir) == []


@pytest.mark.parametrize("change", ["vanished", "recreated"])
def test_the_noted_ifb_is_removed_when_the_interface_changed(change: str, pair: NetnsPair,
                                                             state_dir: Path) -> None:
    """The IFB is named after the interface's index at inject; rollback uses the noted name."""
    index = ifindex(pair.a, pair.iface_a)
    fault_id = inject(pair, state_dir)
    (note,) = notes(state_dir, fault_id, "ifb")
    assert note["name"] == f"hcifb{index}" and note["name"] in links(pair.a).split()
    subprocess.run(["ip", "-n", pair.a, "link", "del", pair.iface_a], check=True)
    if change == "recreated":  # same name, new index; its ingress is not ours
        subprocess.run(["ip", "-n", pair.a, "link", "add", pair.iface_a, "type", "veth", "peer",
                        "name", "hcvx"], check=True)
        subprocess.run(["tc", "-n", pair.a, "qdisc", "add", "dev", pair.iface_a, "ingress"],
                       check=True)
        assert ifindex(pair.a, pair.iface_a) != index
    result = hostchaos("rollback", fault_id, state_dir=state_dir)
    assert result.returncode == 0, result.stderr
    assert note["name"] not in links(pair.a).split()
    if change == "recreated":
        ingress = subprocess.run(["tc", "-n", pair.a, "qdisc", "show", "dev", pair.iface_a,
                                  "ingress"], capture_output=True, text=True, check=True).stdout
        assert "ingress ffff:" in ingress  # someone else's, left alone


def test_two_ingress_faults_share_the_ifb_the_first_made(pair: NetnsPair,
                                                         state_dir: Path) -> None:
    before_links, before = links(pair.a), pair.tc_config()
    first = inject(pair, state_dir, "--dst", pair.addr_b)
    second = inject(pair, state_dir, "--dst", pair.addr6_b)
    (ifb,) = {n["name"] for n in notes(state_dir, first, "ifb") + notes(state_dir, second, "ifb")}
    assert hostchaos("rollback", first, state_dir=state_dir).returncode == 0
    assert ifb in links(pair.a).split()  # the second fault still uses it
    assert hostchaos("rollback", second, state_dir=state_dir).returncode == 0
    assert links(pair.a) == before_links and pair.tc_config() == before
