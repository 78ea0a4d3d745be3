"""The agent as a real systemd service (systemd as PID 1 of a throwaway nspawn container).

The project's own units (systemd/*) are installed into a writable copy of the
container's /etc/systemd/system (so they persist across its reboots and the cached
rootfs is never changed), with ExecStart pointing at this checkout's venv and the state
directory on the test's scratch directory. Faults target units and processes inside the
container, a tmpfs the test mounts, and a network namespace of a process the test starts.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.support.nspawn import REPO, SCRATCH, booted_container, inside, rootfs
from tests.support.waiting import wait_for

UNITS = ("hostchaos.service", "hostchaos.socket", "hostchaos-sweep.service",
         "hostchaos-sweep.timer")
STATE = f"{SCRATCH}/state"
VICTIM = "hc-victim.service"
CGROUP = f"/sys/fs/cgroup/system.slice/{VICTIM}"
ENABLED = {"sockets.target.wants": ["hostchaos.socket"],
           "multi-user.target.wants": ["hostchaos.service", "hostchaos-sweep.service"],
           "timers.target.wants": ["hostchaos-sweep.timer"]}


def install(scratch: Path) -> Path:
    """A copy of the container's /etc/systemd/system with hostchaos's units in it, enabled."""
    etc = scratch / "etc-systemd"
    shutil.copytree(rootfs() / "etc/systemd/system", etc, symlinks=True)
    binary = str(REPO / ".venv/bin/hostchaos")
    for unit in UNITS:
        (etc / unit).write_text((REPO / "systemd" / unit).read_text()
                                .replace("/usr/local/bin/hostchaos", binary))
    for unit, extra in (("hostchaos.service", "WatchdogSec=3s\nTimeoutAbortSec=2s\n"),
                        ("hostchaos-sweep.service", "")):
        (etc / f"{unit}.d").mkdir()
        (etc / f"{unit}.d/50-test.conf").write_text(
            f"[Service]\nEnvironment=HOSTCHAOS_STATE_DIR={STATE}\n{extra}")
    (etc / VICTIM).write_text("[Unit]\nDescription=hostchaos test victim\n"
                              "[Service]\nExecStart=/usr/bin/sleep infinity\n")
    for wants, units in ENABLED.items():
        (etc / wants).mkdir(exist_ok=True)
        for unit in units:
            (etc / wants / unit).symlink_to(f"/etc/systemd/system/{unit}")
    (scratch / "state").mkdir(mode=0o700)
    return etc


@contextmanager
def prepared(path: Path) -> Iterator[Path]:
    """``path`` set up as a container's scratch: units, state directory, a 32 MiB tmpfs."""
    install(path)
    small = path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m", "hc-sd-small", str(small)],
                   check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "--lazy", str(small)], check=False)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with prepared(tmp_path_factory.mktemp("nspawn-agent")) as path:
        yield path


def boot(scratch: Path) -> Any:
    return booted_container(scratch, binds=(f"{scratch / 'etc-systemd'}:/etc/systemd/system",),
                            capabilities=("CAP_NET_ADMIN",))


@pytest.fixture(scope="module")
def leader(scratch: Path) -> Iterator[int]:
    with boot(scratch) as pid:
        yield pid


def cli(leader: int, *args: str) -> subprocess.CompletedProcess[str]:
    """The hostchaos command inside the container, as an operator there runs it."""
    return inside(leader, "env", f"HOSTCHAOS_STATE_DIR={STATE}",
                  "HOSTCHAOS_SOCKET=/run/hostchaos/hostchaos.sock",
                  "HOSTCHAOS_RUN_DIR=/run/hostchaos", "HOSTCHAOS_CONFIG=/nonexistent",
                  str(REPO / ".venv/bin/hostchaos"), *args)


def injected(leader: int, *args: str) -> dict[str, Any]:
    result = cli(leader, "inject", *args, "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    view: dict[str, Any] = json.loads(result.stdout)
    return view


def show(leader: int, unit: str, prop: str) -> str:
    return inside(leader, "systemctl", "show", unit, "-p", prop, "--value").stdout.strip()


def cat(leader: int, path: str) -> str:
    return inside(leader, "cat", path).stdout.strip()


def record(scratch: Path, fault_id: str) -> dict[str, Any]:
    for where in ("faults", "faults/ended"):
        path = scratch / "state" / where / f"{fault_id}.json"
        if path.exists():
            data: dict[str, Any] = json.loads(path.read_text())
            return data
    raise AssertionError(f"no record {fault_id}")


def audit(scratch: Path) -> list[dict[str, Any]]:
    path = scratch / "state/audit.log"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def running(leader: int) -> int:
    wait_for(lambda: show(leader, "hostchaos.service", "ActiveState") == "active", 60)
    return int(show(leader, "hostchaos.service", "MainPID"))


def test_the_units_pass_systemd_analyze_verify(leader: int) -> None:
    result = inside(leader, "systemd-analyze", "verify",
                    *[f"/etc/systemd/system/{unit}" for unit in UNITS])
    assert result.returncode == 0, result.stdout + result.stderr


def test_ready_then_the_cli_goes_through_the_socket_to_unit_targets(leader: int,
                                                                   scratch: Path) -> None:
    started = inside(leader, "systemctl", "start", "hostchaos.service")  # Type=notify: READY
    assert started.returncode == 0, started.stderr
    agent = running(leader)
    assert "serving" in show(leader, "hostchaos.service", "StatusText")
    assert inside(leader, "systemctl", "start", VICTIM).returncode == 0
    before = {name: cat(leader, f"{CGROUP}/{name}") for name in ("pids.max", "cpu.max",
                                                                   "memory.max")}
    faults = [injected(leader, "pids", "--unit", VICTIM, "--max", "40", "--for", "2m"),
              injected(leader, "cpu", "--unit", VICTIM, "--limit", "20%", "--for", "2m"),
              injected(leader, "memory", "--unit", VICTIM, "--max", "64M", "--for", "2m")]
    assert cat(leader, f"{CGROUP}/pids.max") == "40"
    assert cat(leader, f"{CGROUP}/cpu.max").split()[0] == "20000"
    assert cat(leader, f"{CGROUP}/memory.max") == str(64 << 20)
    injects = [a for a in audit(scratch) if a["action"] == "inject"]
    assert {a["fault_id"] for a in injects} >= {f["id"] for f in faults}
    assert all(a["client_pid"] not in (None, agent) for a in injects)  # the CLI, via the API
    for fault in faults:
        assert cli(leader, "rollback", fault["id"]).returncode == 0
    after = {name: cat(leader, f"{CGROUP}/{name}") for name in before}
    assert after == before


def test_kill_9_of_the_agent_restarts_it_and_the_fault_ends_at_its_deadline(
        leader: int, scratch: Path) -> None:
    first = running(leader)
    assert inside(leader, "systemctl", "start", VICTIM).returncode == 0
    before = cat(leader, f"{CGROUP}/pids.max")
    fault = injected(leader, "pids", "--unit", VICTIM, "--max", "30", "--for", "10s")
    assert inside(leader, "systemctl", "kill", "-s", "KILL", "hostchaos.service").returncode == 0
    wait_for(lambda: show(leader, "hostchaos.service", "MainPID") not in ("0", str(first)), 30)
    running(leader)
    assert cat(leader, f"{CGROUP}/pids.max") == "30"  # still on: its deadline is not yet
    wait_for(lambda: record(scratch, fault["id"])["state"] == "rolled-back", 40)
    done = record(scratch, fault["id"])
    assert abs(done["ended_at"] - done["expires_at"]) <= 1.0, done
    assert cat(leader, f"{CGROUP}/pids.max") == before


def test_the_watchdog_restarts_a_stopped_agent(leader: int) -> None:
    first = running(leader)
    restarts = int(show(leader, "hostchaos.service", "NRestarts"))
    inside(leader, "systemctl", "kill", "--kill-whom=main", "-s", "STOP", "hostchaos.service")
    wait_for(lambda: show(leader, "hostchaos.service", "MainPID") not in ("0", str(first)), 40)
    running(leader)
    assert int(show(leader, "hostchaos.service", "NRestarts")) > restarts


def test_the_agent_works_under_exactly_the_units_capability_set(leader: int,
                                                                scratch: Path) -> None:
    agent = running(leader)
    bounding = [line for line in cat(leader, f"/proc/{agent}/status").splitlines()
                if line.startswith("CapBnd:")]
    assert bounding and bounding[0].split()[1] != "000001ffffffffff"  # really narrowed
    inside(leader, "systemctl", "start", VICTIM)
    main = show(leader, VICTIM, "MainPID")
    sleeper = inside(leader, "systemd-run", "--unit=hc-sleeper.service", "--quiet",
                     "/usr/bin/sleep", "infinity")
    assert sleeper.returncode == 0, sleeper.stderr
    netns = inside(leader, "systemd-run", "--unit=hc-netns.service", "--quiet", "unshare",
                   "--net", "/usr/bin/sleep", "infinity")
    assert netns.returncode == 0, netns.stderr
    clocked = inside(leader, "systemd-run", "--unit=hc-clock.service", "--quiet",
                     "--setenv=HOSTCHAOS_RUN_DIR=/run/hostchaos",
                     str(REPO / ".venv/bin/hostchaos"), "exec", "--clock-ready", "--",
                     "/usr/bin/sleep", "infinity")
    assert clocked.returncode == 0, clocked.stderr
    try:
        wait_for(lambda: show(leader, "hc-netns.service", "MainPID") != "0", 10)
        sleeper_pid = show(leader, "hc-sleeper.service", "MainPID")
        netns_pid = show(leader, "hc-netns.service", "MainPID")
        wait_for(lambda: "libfaketime" in cat(leader, "/proc/" + show(
            leader, "hc-clock.service", "MainPID") + "/maps"), 10)
        clock_pid = show(leader, "hc-clock.service", "MainPID")
        cases = [
            ("nofile", "--pid", main, "--soft", "64"),
            ("stop", "--pid", sleeper_pid),
            ("disk-fill", "--path", f"{SCRATCH}/small", "--leave-free", "1M"),
            ("rate", "--pid", netns_pid, "--iface", "lo", "--rate", "1mbit"),
            ("clock", "--pid", clock_pid, "--offset", "+5m"),
            ("freeze", "--unit", VICTIM),
            ("kill", "--pid", sleeper_pid),
        ]
        for case in cases:
            view = injected(leader, *case, "--for", "1m")
            assert view["state"] == "active", (case, view)
            if case[0] == "nofile":
                assert "64" in cat(leader, f"/proc/{main}/limits").split("Max open files")[1]
            if case[0] == "stop":
                assert cat(leader, f"/proc/{sleeper_pid}/stat").split(")")[1].split()[0] == "T"
            if case[0] == "rate":
                tc = inside(leader, "nsenter", f"--net=/proc/{netns_pid}/ns/net", "tc",
                            "qdisc", "show", "dev", "lo").stdout
                assert "tbf" in tc, tc
            rolled = cli(leader, "rollback", view["id"])
            assert rolled.returncode == 0, (case, rolled.stderr)
        free = os.statvfs(scratch / "small")
        assert free.f_bavail * free.f_frsize > 30 << 20  # the fill was given back
    finally:
        for unit in ("hc-sleeper.service", "hc-netns.service", "hc-clock.service"):
            inside(leader, "systemctl", "stop", unit)


def test_systemctl_stop_rolls_everything_back(leader: int, scratch: Path) -> None:
    running(leader)
    inside(leader, "systemctl", "start", VICTIM)
    before = cat(leader, f"{CGROUP}/cpu.max")
    fault = injected(leader, "cpu", "--unit", VICTIM, "--limit", "20%", "--for", "5m")
    assert cat(leader, f"{CGROUP}/cpu.max") != before
    stopped = inside(leader, "systemctl", "stop", "hostchaos.service", "hostchaos.socket")
    assert stopped.returncode == 0, stopped.stderr
    assert cat(leader, f"{CGROUP}/cpu.max") == before
    done = record(scratch, fault["id"])
    assert done["state"] == "rolled-back" and "agent stopped" in done["end_reason"]


def test_the_boot_sweep_takes_out_a_fill_a_crash_left(tmp_path: Path) -> None:
    """A crash (agent and warden killed, then an immediate power-off with no service
    stopped): at the next boot hostchaos-sweep.service, ordered before the agent, removes
    the fill. A container of its own, with a scratch directory of its own."""
    with prepared(tmp_path / "crash") as scratch:
        boot_sweep_after_a_crash(scratch)


def boot_sweep_after_a_crash(scratch: Path) -> None:
    small = scratch / "small"
    with boot(scratch) as second:
        running(second)
        fault = injected(second, "disk-fill", "--path", f"{SCRATCH}/small", "--leave-free",
                         "1M", "--for", "10m")
        assert os.statvfs(small).f_bavail * os.statvfs(small).f_frsize < 2 << 20
        inside(second, "systemctl", "kill", "-s", "KILL", "hostchaos.service")
        inside(second, "systemctl", "--force", "--force", "poweroff", timeout=30)
        time.sleep(1)
    assert record(scratch, fault["id"])["state"] == "active"  # nothing rolled it back yet
    with boot(scratch) as third:
        wait_for(lambda: record(scratch, fault["id"])["state"] == "rolled-back", 60)
        assert show(third, "hostchaos-sweep.service", "Result") == "success"
    assert os.statvfs(small).f_bavail * os.statvfs(small).f_frsize > 30 << 20
