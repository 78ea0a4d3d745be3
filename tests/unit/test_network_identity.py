"""Issue 8 points 7 and 12 (unit): namespaces compared by identity; sshd-session protected."""

from __future__ import annotations

from collections import namedtuple
from typing import Any

import psutil
import pytest

from hostchaos.faults.base import Peer
from hostchaos.faults.rate import RateFault, RateSpec
from hostchaos.faults.traffic import NetworkFault
from hostchaos.system import ssh

#: two namespaces, as (st_dev, st_ino) of their nsfs files
BLUE = (4, 4026532177)
GREEN = (4, 4026532300)


def peer(spec: RateSpec | None, identity: tuple[int, int] | None,
         *notes: dict[str, Any]) -> Peer:
    noted = [{"step": "netns", "dev": identity[0], "ino": identity[1], "label": "x",
              "handle": None}] if identity else []
    return Peer("hc-rate-00000001", "rate", spec, [*noted, *notes])


def fault(spec: RateSpec, identity: tuple[int, int] | None) -> NetworkFault:
    """A fault whose target resolved to ``identity`` (as resolve() does on a real host)."""
    from hostchaos.system.namespaces import NetnsIdentity

    made = RateFault(spec)
    made.identity = NetnsIdentity(*identity) if identity else None
    made.label = spec.where()
    return made


def test_two_spellings_of_one_namespace_conflict() -> None:
    by_pid = fault(RateSpec(iface="eth0", pid=4242, rate="1mbit"), BLUE)
    by_name = RateSpec(iface="eth0", netns="blue", rate="2mbit", dst=("10.0.0.0/8",))
    assert by_pid.conflicts(peer(by_name, BLUE)) is not None
    assert by_pid.conflicts(peer(by_name, GREEN)) is None  # same spelling rules no longer
    # the same name in two namespaces (a netns deleted and made again) is two targets
    again = fault(RateSpec(iface="eth0", netns="blue", rate="1mbit"), GREEN)
    assert again.conflicts(peer(by_name, BLUE)) is None


def test_peers_recorded_without_identity_fall_back_to_the_spelling() -> None:
    mine = fault(RateSpec(iface="eth0", netns="blue", rate="1mbit"), BLUE)
    assert mine.conflicts(peer(RateSpec(iface="eth0", netns="blue", rate="2mbit"), None))
    assert mine.conflicts(peer(RateSpec(iface="eth0", netns="red", rate="2mbit"), None)) is None


def test_slot_claims_snapshots_and_ifbs_belong_to_one_namespace() -> None:
    mine = fault(RateSpec(iface="eth0", pid=4242, rate="1mbit"), BLUE)
    here = peer(RateSpec(iface="eth0", netns="blue", rate="1mbit", dst=("10.9.0.0/16",)), BLUE,
                {"step": "root", "device": "eth0", "snapshot": {"qdiscs": ["AAAA"]}},
                {"step": "ifb", "name": "hcifb7", "iface": "eth0", "index": 7},
                {"step": "class", "device": "eth0", "slot": 3, "where": "blue"})
    elsewhere = Peer("hc-rate-00000002", "rate", None, [
        {"step": "netns", "dev": GREEN[0], "ino": GREEN[1], "label": "green", "handle": None},
        {"step": "root", "device": "eth0", "snapshot": {"qdiscs": ["BBBB"]}},
        {"step": "ifb", "name": "hcifb9", "iface": "eth0", "index": 9},
        {"step": "class", "device": "eth0", "slot": 5, "where": "green"}])
    mine.peers = [elsewhere, here]
    assert mine._claimed_slots("eth0") == {3}
    assert mine._inherited_snapshot("eth0") == {"qdiscs": ["AAAA"]}
    assert mine._ifb_of_peer("hcifb7") and not mine._ifb_of_peer("hcifb9")


#: the fields of psutil's connection tuples (psutil.net_connections) that matter here
Conn = namedtuple("Conn", "fd family type laddr raddr status pid")
Addr = namedtuple("Addr", "ip port")


def sconn(pid: int, raddr: tuple[str, int] | tuple[()], port: int = 22,
          status: str = psutil.CONN_ESTABLISHED) -> Any:
    remote = Addr(*raddr) if raddr else ()
    return Conn(3, 2, 1, Addr("192.0.2.1", port), remote, status, pid)


@pytest.mark.parametrize("name", ["sshd", "sshd-session", "sshd-auth"])
def test_every_openssh_server_process_name_is_protected(name: str) -> None:
    """OpenSSH 9.8 moved sessions from `sshd` to `sshd-session`."""
    names = {100: name, 200: "nginx"}
    connections = [sconn(100, ("198.51.100.7", 50000)), sconn(200, ("198.51.100.8", 50001), 80),
                   sconn(100, ()), sconn(100, ("198.51.100.9", 1), status=psutil.CONN_LISTEN)]
    assert ssh.peers_of_sshd(connections, names.__getitem__) == [("198.51.100.7", 22)]


def test_rollback_without_a_netns_note_needs_the_spec() -> None:
    """Records of older versions have no netns note: their spec says where; without a spec
    that validates, rollback says why it cannot act instead of claiming success."""
    from hostchaos.errors import RollbackError
    from hostchaos.journal import FaultRecord, UndoLog

    record = FaultRecord(id="hc-rate-00000003", kind="rate", spec={"iface": "eth0"},
                         boot_id="b", created_at=0, expires_at=1, survives_reboot=False,
                         undo=[{"step": "class", "device": "eth0", "slot": 1, "where": "blue"}])
    with pytest.raises(RollbackError, match=r"no netns note .* network namespace is unknown"):
        RateFault.for_rollback().rollback(UndoLog(record, None))
