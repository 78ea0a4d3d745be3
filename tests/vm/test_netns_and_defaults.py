"""Issue 8 points 1 and 12 with netem in a real kernel: a --pid fault outlives its process,
and a default fq_codel root with a filter of its own is somebody's configuration."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from hostchaos.sandbox import NetnsPair, tc_configuration
from tests.support.cli import hostchaos, open_records
from tests.support.netns import handle_of, mount_points, process_in


def test_pid_fault_rolled_back_after_the_process_exited_and_the_name_was_deleted(
        pair: NetnsPair, state_dir: Path) -> None:
    with process_in(pair.a) as target, process_in(pair.a) as keeper:
        before = tc_configuration(keeper.pid, pair.iface_a)
        result = hostchaos("inject", "latency", "--pid", str(target.pid), "--iface",
                           pair.iface_a, "--ms", "100", "--for", "5m", "--json",
                           state_dir=state_dir)
        assert result.returncode == 0, result.stderr
        fault_id = json.loads(result.stdout)["id"]
        handle = handle_of(state_dir, fault_id)
        held = handle in mount_points()
        target.kill()
        target.wait()
        subprocess.run(["ip", "netns", "del", pair.a], check=True)  # only keeper holds it now
        assert "netem" in tc_configuration(keeper.pid, pair.iface_a)
        result = hostchaos("rollback", fault_id, state_dir=state_dir)
        assert result.returncode == 0, result.stderr
        assert tc_configuration(keeper.pid, pair.iface_a) == before
    assert handle is not None and held and handle not in mount_points()
    assert open_records(state_dir) == []


DEVICE = "hcfq0"


@pytest.fixture
def fq_codel_device(pair: NetnsPair) -> Iterator[str]:
    """An IFB in namespace a whose root the kernel made: fq_codel 0: (the default qdisc)."""
    sysctl = Path("/proc/sys/net/core/default_qdisc")  # global, but the VM is throwaway
    old = sysctl.read_text().strip()
    sysctl.write_text("fq_codel")
    try:
        subprocess.run(["ip", "-n", pair.a, "link", "add", DEVICE, "type", "ifb"], check=True)
        subprocess.run(["ip", "-n", pair.a, "link", "set", DEVICE, "up"], check=True)
        assert "qdisc fq_codel 0: root" in tc_configuration(pair.a, DEVICE)
        yield DEVICE
    finally:
        sysctl.write_text(old)


def inject(pair: NetnsPair, state_dir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return hostchaos("inject", "latency", "--netns", pair.a, "--iface", DEVICE, "--ms", "10",
                     "--json", *extra, state_dir=state_dir)


def rollback(result: subprocess.CompletedProcess[str], state_dir: Path) -> None:
    assert result.returncode == 0, result.stderr
    done = hostchaos("rollback", json.loads(result.stdout)["id"], state_dir=state_dir)
    assert done.returncode == 0, done.stderr


def test_fq_codel_root_with_a_filter_is_refused_then_restored_exactly(
        fq_codel_device: str, pair: NetnsPair, state_dir: Path) -> None:
    plain = tc_configuration(pair.a, DEVICE)
    rollback(inject(pair, state_dir), state_dir)  # the kernel's own tree: no --force needed
    assert tc_configuration(pair.a, DEVICE) == plain
    # `tc qdisc change` cannot touch a handle-0 root, but a filter attaches to it
    subprocess.run(["tc", "-n", pair.a, "filter", "add", "dev", DEVICE, "parent", "0:",
                    "protocol", "ip", "prio", "1", "u32", "match", "ip", "dst", "192.0.2.4/32",
                    "flowid", ":5"], check=True)
    before = tc_configuration(pair.a, DEVICE)
    assert "flowid :5" in before
    refused = inject(pair, state_dir)
    assert refused.returncode == 5, refused.stderr
    assert "fq_codel 0: with filters of its own" in refused.stderr
    assert tc_configuration(pair.a, DEVICE) == before and open_records(state_dir) == []
    rollback(inject(pair, state_dir, "--force"), state_dir)
    assert tc_configuration(pair.a, DEVICE) == before
