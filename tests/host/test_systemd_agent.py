"""The agent as a real systemd service (systemd as PID 1 of a throwaway nspawn container):
see tests/support/systemd_agent.py for how the container is set up."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.systemd_agent import (
    CGROUP,
    REPO,
    SCRATCH,
    UNITS,
    VICTIM,
    audit,
    boot,
    cat,
    cli,
    injected,
    inside,
    prepared,
    record,
    running,
    show,
)
from tests.support.waiting import wait_for


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with prepared(tmp_path_factory.mktemp("nspawn-agent")) as path:
        yield path




@pytest.fixture(scope="module")
def leader(scratch: Path) -> Iterator[int]:
    with boot(scratch) as pid:
        yield pid


def test_the_units_pass_systemd_analyze_verify(leader: int) -> None:
    result = inside(leader, "systemd-analyze", "verify",
                    *[f"/etc/systemd/system/{unit}" for unit in UNITS])
    assert result.returncode == 0, result.stdout + result.stderr


def open_files_limit(leader: int, pid: str) -> str:
    line = next(x for x in cat(leader, f"/proc/{pid}/limits").splitlines()
                if x.startswith("Max open files"))
    return " ".join(line.split()[3:5])


def test_ready_then_the_cli_goes_through_the_socket_to_unit_targets(leader: int,
                                                                   scratch: Path) -> None:
    started = inside(leader, "systemctl", "start", "hostchaos.service")  # Type=notify: READY
    assert started.returncode == 0, started.stderr
    agent = running(leader)
    assert "serving" in show(leader, "hostchaos.service", "StatusText")
    assert inside(leader, "systemctl", "start", VICTIM).returncode == 0
    main = show(leader, VICTIM, "MainPID")
    limits = open_files_limit(leader, main)
    nofile = injected(leader, "nofile", "--unit", VICTIM, "--soft", "64", "--for", "2m")
    frozen = injected(leader, "freeze", "--unit", VICTIM, "--for", "2m")
    assert open_files_limit(leader, main).split()[0] == "64"
    assert show(leader, VICTIM, "FreezerState") == "frozen"
    injects = [a for a in audit(scratch) if a["action"] == "inject"]
    assert {a["fault_id"] for a in injects} >= {nofile["id"], frozen["id"]}
    assert all(a["client_pid"] not in (None, agent) for a in injects)  # the CLI, via the API
    for fault in (frozen, nofile):
        assert cli(leader, "rollback", fault["id"]).returncode == 0
    assert open_files_limit(leader, main) == limits
    assert show(leader, VICTIM, "FreezerState") == "running"


def test_cgroup_limits_on_a_unit_where_the_container_has_controllers(leader: int) -> None:
    """cpu, memory and pids --unit: applied and given back where the container's cgroup v2
    tree has those controllers; on a cgroup v1 host the nspawn container's own v2 tree has
    none, and each is refused with one line (exit 3) and nothing changed."""
    running(leader)
    inside(leader, "systemctl", "start", VICTIM)
    controllers = cat(leader, "/sys/fs/cgroup/cgroup.controllers").split()
    cases = {"cpu": ("--limit", "20%", "cpu.max", "20000"),
             "memory": ("--max", "64M", "memory.max", str(64 << 20)),
             "pids": ("--max", "40", "pids.max", "40")}
    for kind, (flag, value, limit_file, expected) in cases.items():
        if kind in controllers:
            before = cat(leader, f"{CGROUP}/{limit_file}")
            view = injected(leader, kind, "--unit", VICTIM, flag, value, "--for", "1m")
            assert cat(leader, f"{CGROUP}/{limit_file}").split()[0] == expected
            assert cli(leader, "rollback", view["id"]).returncode == 0
            assert cat(leader, f"{CGROUP}/{limit_file}") == before
        else:
            refused = cli(leader, "inject", kind, "--unit", VICTIM, flag, value)
            assert refused.returncode == 3, refused.stderr
            assert f"cgroup controller {kind} is not available" in refused.stderr
            assert len(refused.stderr.strip().splitlines()) == 1


def test_kill_9_of_the_agent_restarts_it_and_the_fault_ends_at_its_deadline(
        leader: int, scratch: Path) -> None:
    first = running(leader)
    assert inside(leader, "systemctl", "start", VICTIM).returncode == 0
    main = show(leader, VICTIM, "MainPID")
    limits = open_files_limit(leader, main)
    fault = injected(leader, "nofile", "--unit", VICTIM, "--soft", "50", "--for", "10s")
    assert inside(leader, "systemctl", "kill", "-s", "KILL", "hostchaos.service").returncode == 0
    wait_for(lambda: show(leader, "hostchaos.service", "MainPID") not in ("0", str(first)), 30)
    running(leader)
    assert open_files_limit(leader, main).split()[0] == "50"  # its deadline is not yet
    wait_for(lambda: record(scratch, fault["id"])["state"] == "rolled-back", 40)
    done = record(scratch, fault["id"])
    assert abs(done["ended_at"] - done["expires_at"]) <= 1.0, done
    assert open_files_limit(leader, main) == limits


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
        cases: dict[str, list[str]] = {  # kind -> its options (a dict: a list starting
            "nofile": ["--pid", main, "--soft", "64"],   # "kill" would read as the program)
            "stop": ["--pid", sleeper_pid],
            "disk-fill": ["--path", f"{SCRATCH}/small", "--leave-free", "1M"],
            "rate": ["--pid", netns_pid, "--iface", "lo", "--rate", "1mbit"],
            "clock": ["--pid", clock_pid, "--offset", "+5m"],
            "freeze": ["--unit", VICTIM],
            "kill": ["--pid", sleeper_pid],
        }
        for kind, options in cases.items():
            case = (kind, *options)
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
    main = show(leader, VICTIM, "MainPID")
    limits = open_files_limit(leader, main)
    fault = injected(leader, "nofile", "--unit", VICTIM, "--soft", "40", "--for", "5m")
    assert open_files_limit(leader, main) != limits
    stopped = inside(leader, "systemctl", "stop", "hostchaos.service", "hostchaos.socket")
    assert stopped.returncode == 0, stopped.stderr
    assert open_files_limit(leader, main) == limits
    done = record(scratch, fault["id"])
    assert done["state"] == "rolled-back" and "agent stopped" in done["end_reason"]


def test_the_timers_sweep_hands_an_orphan_to_a_warden_that_outlives_the_sweep(
        leader: int, scratch: Path) -> None:
    """hostchaos-sweep.service (what the minute timer starts) meeting a fault whose warden
    is gone: the agent's whole unit was killed (agent, its warden thread and its sentinel)
    and not restarted. The fault is not cut short, and the warden the oneshot started
    survives it and ends the fault at its own deadline."""
    assert inside(leader, "systemctl", "start", "hostchaos.service").returncode == 0
    running(leader)
    assert inside(leader, "systemctl", "start", VICTIM).returncode == 0
    main = show(leader, VICTIM, "MainPID")
    limits = open_files_limit(leader, main)
    fault = injected(leader, "nofile", "--unit", VICTIM, "--soft", "48", "--for", "12s")
    killed = str(record(scratch, fault["id"])["holder"]["pid"])
    assert killed == show(leader, "hostchaos.service", "MainPID")  # the agent holds it
    assert inside(leader, "systemctl", "kill", "-s", "KILL", "hostchaos.service").returncode == 0
    assert inside(leader, "systemctl", "stop", "hostchaos.service", "hostchaos.socket"
                  ).returncode == 0  # no restart
    wait_for(lambda: inside(leader, "test", "-d", f"/proc/{killed}").returncode != 0, 10)
    swept = inside(leader, "systemctl", "start", "hostchaos-sweep.service")
    assert swept.returncode == 0, swept.stderr
    assert show(leader, "hostchaos-sweep.service", "ActiveState") == "inactive"
    assert record(scratch, fault["id"])["state"] == "active"
    assert open_files_limit(leader, main).split()[0] == "48"
    wait_for(lambda: str(record(scratch, fault["id"])["holder"]["pid"]) != killed, 10)
    warden = str(record(scratch, fault["id"])["holder"]["pid"])
    assert "hostchaos-sweep.service" in cat(leader, f"/proc/{warden}/cgroup")
    wait_for(lambda: record(scratch, fault["id"])["state"] == "rolled-back", 30)
    done = record(scratch, fault["id"])
    assert done["end_reason"] == "deadline reached"
    assert abs(done["ended_at"] - done["expires_at"]) <= 1.0, done
    assert open_files_limit(leader, main) == limits
