"""Issue 8 points 1 and 7 on the host (tbf, no netem needed): a network namespace is its
identity, held by a handle for the fault's life, whatever name or process led to it."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from hostchaos.sandbox import NetnsPair, tc_configuration
from tests.support.cli import hostchaos, injected, open_records, records, rolled_back
from tests.support.netns import handle_of, mount_points, process_in


def inject(*args: str, state_dir: Path) -> str:
    return injected("rate", *args, "--rate", "2mbit", "--for", "5m", state_dir=state_dir)


rollback = rolled_back


def test_pid_target_is_rolled_back_after_its_process_exited(pair: NetnsPair,
                                                            state_dir: Path) -> None:
    """The namespace outlives the process (here its name keeps it): the tbf must still go."""
    before = pair.tc_config()
    with process_in(pair.a) as target:
        fault_id = inject("--pid", str(target.pid), "--iface", pair.iface_a,
                          state_dir=state_dir)
        handle = handle_of(state_dir, fault_id)
        held = handle in mount_points()
    assert "tbf 4901:" in pair.tc_config()  # the process is gone, the fault is not
    rollback(fault_id, state_dir)
    assert pair.tc_config() == before
    assert handle is not None and held and handle.startswith(f"{state_dir}/netns/")
    assert handle not in mount_points() and not os.path.exists(handle)
    (record,) = records(state_dir)
    assert record["state"] == "rolled-back"


def test_netns_deleted_while_a_process_is_inside_is_still_rolled_back(
        pair: NetnsPair, state_dir: Path) -> None:
    with process_in(pair.a) as keeper:
        before = tc_configuration(keeper.pid, pair.iface_a)
        fault_id = inject("--netns", pair.a, "--iface", pair.iface_a, state_dir=state_dir)
        subprocess.run(["ip", "netns", "del", pair.a], check=True)  # the name goes, not the netns
        assert "tbf 4901:" in tc_configuration(keeper.pid, pair.iface_a)
        rollback(fault_id, state_dir)
        assert tc_configuration(keeper.pid, pair.iface_a) == before
    handle = handle_of(state_dir, fault_id)
    assert handle is not None and handle not in mount_points()


def test_without_its_handle_rollback_finds_the_namespace_through_a_process(
        pair: NetnsPair, state_dir: Path) -> None:
    """Handle unmounted (as a reboot or an operator would) and name deleted: a process inside
    still leads to the namespace."""
    with process_in(pair.a) as keeper:
        before = tc_configuration(keeper.pid, pair.iface_a)
        fault_id = inject("--netns", pair.a, "--iface", pair.iface_a, state_dir=state_dir)
        handle = handle_of(state_dir, fault_id)
        assert handle is not None
        subprocess.run(["umount", "--lazy", handle], check=True)
        subprocess.run(["ip", "netns", "del", pair.a], check=True)
        rollback(fault_id, state_dir)
        assert tc_configuration(keeper.pid, pair.iface_a) == before
    assert not os.path.exists(handle)


def test_a_namespace_that_is_really_gone_is_a_successful_rollback(pair: NetnsPair,
                                                                  state_dir: Path) -> None:
    fault_id = inject("--netns", pair.a, "--iface", pair.iface_a, state_dir=state_dir)
    handle = handle_of(state_dir, fault_id)
    assert handle is not None
    subprocess.run(["umount", "--lazy", handle], check=True)
    subprocess.run(["ip", "netns", "del", pair.a], check=True)  # nothing holds it any more
    rollback(fault_id, state_dir)
    assert open_records(state_dir) == [] and not os.path.exists(handle)


def test_sweep_releases_handles_that_closed_faults_left(pair: NetnsPair,
                                                        state_dir: Path) -> None:
    from hostchaos.journal import Journal
    from hostchaos.system import namespaces

    Journal(state_dir).prepare()
    open_id = inject("--netns", pair.a, "--iface", pair.iface_a, state_dir=state_dir)
    kept = handle_of(state_dir, open_id)
    stale = state_dir / "netns" / "hc-rate-0badc0de"  # a handle whose fault is closed
    fd = os.open(f"/run/netns/{pair.a}", os.O_RDONLY)
    try:
        namespaces.create_handle(fd, stale)
    finally:
        os.close(fd)
    assert str(stale) in mount_points()
    result = hostchaos("sweep", "--json", state_dir=state_dir)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["leftovers"] == [str(stale)]
    assert str(stale) not in mount_points() and not stale.exists()
    assert kept in mount_points()  # the open fault keeps its handle
    rollback(open_id, state_dir)


def test_pid_and_netns_spellings_of_one_namespace_conflict(pair: NetnsPair,
                                                           state_dir: Path) -> None:
    """Point 7: `--pid` of a process in A, then `--netns A` on the same interface."""
    before = pair.tc_config()
    with process_in(pair.a) as inside:
        first = inject("--pid", str(inside.pid), "--iface", pair.iface_a, "--dst", pair.addr_b,
                       state_dir=state_dir)
        second = hostchaos("inject", "rate", "--netns", pair.a, "--iface", pair.iface_a,
                           "--rate", "4mbit", "--dst", "198.18.43.0/24", state_dir=state_dir)
        assert second.returncode == 5, second.stderr
        assert first in second.stderr
        # selectors that do not overlap share the tree, whatever the spelling
        other = inject("--netns", pair.a, "--iface", pair.iface_a, "--dst", pair.addr6_b,
                       state_dir=state_dir)
        rollback(first, state_dir)
        assert "tbf 4902:" in pair.tc_config() and "tbf 4901:" not in pair.tc_config()
        rollback(other, state_dir)
    assert pair.tc_config() == before


def test_same_device_name_in_two_namespaces_are_two_targets(pair: NetnsPair,
                                                            state_dir: Path) -> None:
    """A forced fault's original tree comes back although a fault on an interface of the same
    name in another namespace is still open."""
    subprocess.run(["tc", "-n", pair.a, "qdisc", "add", "dev", pair.iface_a, "root", "handle",
                    "1:", "htb", "default", "10"], check=True)
    before = pair.tc_config()
    with NetnsPair(prefix=f"hc-test{os.getpid() % 1000}") as other:
        other_before = other.tc_config()
        forced = inject("--netns", pair.a, "--iface", pair.iface_a, "--force",
                        state_dir=state_dir)
        there = inject("--netns", other.a, "--iface", other.iface_a, state_dir=state_dir)
        rollback(forced, state_dir)
        assert pair.tc_config() == before
        rollback(there, state_dir)
        assert other.tc_config() == other_before


def test_no_mount_stays_in_the_state_directory_once_no_network_fault_is_open(
        pair: NetnsPair, state_dir: Path) -> None:
    """The handles' directory is a shared mount only while it holds a handle: a state
    directory (a test's, a demo's, a benchmark's) is left with no mount of hostchaos's."""
    netns_dir = str(state_dir / "netns")
    first = inject("--netns", pair.a, "--iface", pair.iface_a, "--dst", "10.1.0.0/16",
                   state_dir=state_dir)
    second = inject("--netns", pair.a, "--iface", pair.iface_a, "--dst", "10.2.0.0/16",
                    state_dir=state_dir)
    assert netns_dir in mount_points()
    rollback(first, state_dir)
    assert netns_dir in mount_points()  # the other fault's handle still needs it
    rollback(second, state_dir)
    assert not [p for p in mount_points() if p.startswith(str(state_dir))]
    third = inject("--netns", pair.a, "--iface", pair.iface_a, state_dir=state_dir)
    assert netns_dir in mount_points()  # made again when needed
    rollback(third, state_dir)
    assert not [p for p in mount_points() if p.startswith(str(state_dir))]
