"""cpu, memory and pids limits on a real systemd unit, through the agent.

systemd runs as PID 1 of an nspawn container booted inside the VM, whose cgroup v2
tree is delegated the cpu, memory and pids controllers. The build machine's cgroup v1
hybrid tree cannot give a container those (tests/host/test_systemd_agent.py checks
the refusal there, and everything else about the service).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hostchaos.system import capabilities
from tests.support.capability import need
from tests.support.systemd_agent import (
    VICTIM,
    boot,
    cat,
    cli,
    injected,
    inside,
    prepared,
    running,
    show,
)
from tests.support.waiting import wait_for

CGROUP_ROOT = Path("/sys/fs/cgroup")
CONTROLLERS = ("cpu", "memory", "pids")
BUSY = "hc-busy.service"
SLOW = 240  # seconds for one command: Python under TCG, the container's tree over 9p


def unit_cgroup(unit: str) -> str:
    return f"/sys/fs/cgroup/system.slice/{unit}"


@pytest.fixture(scope="module")
def delegated() -> Iterator[None]:
    """The VM's root cgroup hands cpu, memory and pids down (to the container's tree)."""
    need(capabilities.cgroup_unified())
    control = CGROUP_ROOT / "cgroup.subtree_control"
    missing = [c for c in CONTROLLERS if c not in control.read_text().split()]
    control.write_text(" ".join(f"+{c}" for c in missing))
    yield
    try:  # the container's cgroups are gone by now; a busy controller stays (the VM ends)
        control.write_text(" ".join(f"-{c}" for c in missing))
    except OSError:
        pass


@pytest.fixture(scope="module")
def leader(delegated: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    with prepared(tmp_path_factory.mktemp("nspawn-vm")) as scratch, boot(scratch) as pid:
        started = inside(pid, "systemctl", "start", "hostchaos.service", VICTIM, timeout=SLOW)
        assert started.returncode == 0, started.stderr
        running(pid)
        yield pid


@pytest.fixture
def busy(leader: int) -> Iterator[str]:
    """A unit spinning on one CPU."""
    started = inside(leader, "systemd-run", f"--unit={BUSY}", "--quiet", "/usr/bin/python3",
                     "-c", "while True: pass", timeout=SLOW)
    assert started.returncode == 0, started.stderr
    try:
        wait_for(lambda: show(leader, BUSY, "ActiveState") == "active", 30)
        yield unit_cgroup(BUSY)
    finally:
        inside(leader, "systemctl", "stop", BUSY, timeout=SLOW)


def cpu_share(leader: int, cgroup: str, seconds: float = 3.0) -> float:
    """The CPU a cgroup used over ``seconds``, in CPUs (cgroup v2 cpu.stat)."""
    def usage() -> int:
        stat = dict(line.split() for line in cat(leader, f"{cgroup}/cpu.stat").splitlines())
        return int(stat["usage_usec"])
    first, started = usage(), time.monotonic()
    time.sleep(seconds)
    return (usage() - first) / 1e6 / (time.monotonic() - started)


def test_the_container_has_the_controllers(leader: int) -> None:
    assert set(CONTROLLERS) <= set(cat(leader, "/sys/fs/cgroup/cgroup.controllers").split())


def test_cpu_limit_on_a_unit_is_applied_measured_and_given_back(leader: int,
                                                                busy: str) -> None:
    """systemd leaves the cpu controller off for a unit even with CPUAccounting=yes (the
    kernel counts CPU time without it): one line saying how to turn it on (exit 3); once
    on (CPUWeight=100, the default weight), the limit holds."""
    refused = cli(leader, "inject", "cpu", "--unit", BUSY, "--limit", "20%", timeout=SLOW)
    assert refused.returncode == 3, refused.stdout + refused.stderr
    assert "systemctl set-property --runtime UNIT CPUWeight=100" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    accounted = inside(leader, "systemctl", "set-property", "--runtime", BUSY,
                       "CPUWeight=100", timeout=SLOW)
    assert accounted.returncode == 0, accounted.stderr
    before = cat(leader, f"{busy}/cpu.max")
    view = injected(leader, "cpu", "--unit", BUSY, "--limit", "20%", "--for", "5m",
                    timeout=SLOW)
    assert cat(leader, f"{busy}/cpu.max").split()[0] == "20000"
    limited = cpu_share(leader, busy)
    assert limited <= 0.3, limited
    assert cli(leader, "rollback", view["id"], timeout=SLOW).returncode == 0
    assert cat(leader, f"{busy}/cpu.max") == before
    assert cpu_share(leader, busy) > limited * 1.5


@pytest.mark.parametrize(("kind", "flag", "value", "limit_file", "expected"), [
    ("memory", "--max", "64M", "memory.max", str(64 << 20)),
    ("pids", "--max", "40", "pids.max", "40"),
])
def test_memory_and_pids_limits_on_a_unit(leader: int, kind: str, flag: str, value: str,
                                          limit_file: str, expected: str) -> None:
    cgroup = unit_cgroup(VICTIM)
    before = cat(leader, f"{cgroup}/{limit_file}")
    view = injected(leader, kind, "--unit", VICTIM, flag, value, "--for", "5m", timeout=SLOW)
    assert cat(leader, f"{cgroup}/{limit_file}") == expected
    status = cli(leader, "status", view["id"], "--json", timeout=SLOW)
    assert status.returncode == 0 and expected in status.stdout, status.stdout + status.stderr
    assert cli(leader, "rollback", view["id"], timeout=SLOW).returncode == 0
    assert cat(leader, f"{cgroup}/{limit_file}") == before
