"""freeze --unit where systemd runs: through systemd, so systemd knows its unit is frozen.

The sandbox is a Debian rootfs booted with systemd as PID 1 under systemd-nspawn (with a
cgroup v2 hierarchy of its own), hostchaos run inside it with nsenter, and a transient
busy unit started there; nothing of the host's own services is touched.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hostchaos.system import procs
from tests.support.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]


def inside(leader: int, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["nsenter", "-t", str(leader), "-a", *argv], capture_output=True,
                          text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def booted() -> Iterator[int]:
    built = subprocess.run([str(REPO / "scripts/systemd-rootfs")], capture_output=True,
                           text=True, timeout=900, check=False)
    assert built.returncode == 0, built.stderr
    rootfs = built.stdout.strip().splitlines()[-1]
    name = f"hc-test-sd-{os.getpid()}"
    nspawn = subprocess.Popen(
        ["systemd-nspawn", "-q", "-D", rootfs, "-b", "--register=no", "--keep-unit",
         f"--machine={name}", "--console=pipe", f"--bind-ro={REPO}",
         f"--bind-ro={Path(sys.base_prefix).resolve()}"],
        env={**os.environ, "SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "1"},
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    leader = 0
    try:
        def found() -> bool:
            nonlocal leader
            kids = procs.children_map().get(nspawn.pid, [])
            leader = kids[0] if kids else 0
            return bool(leader) and procs.comm(leader) == "systemd"
        wait_for(found, 30)

        def up() -> bool:  # until its bus answers, systemctl cannot even ask
            state = inside(leader, "systemctl", "is-system-running", "--wait")
            return state.stdout.strip() in ("running", "degraded")
        wait_for(up, 60, step=0.2)
        yield leader
    finally:
        if leader:
            inside(leader, "systemctl", "poweroff", timeout=30)
        try:
            nspawn.wait(timeout=30)
        except subprocess.TimeoutExpired:
            nspawn.kill()
            nspawn.wait()


def hostchaos_inside(leader: int, *args: str) -> subprocess.CompletedProcess[str]:
    return inside(leader, "env", "HOSTCHAOS_STATE_DIR=/run/hostchaos-test",
                  str(REPO / ".venv/bin/python"), "-m", "hostchaos", *args)


def freezer_state(leader: int, unit: str) -> str:
    return inside(leader, "systemctl", "show", unit, "-p", "FreezerState", "--value").stdout.strip()


def test_a_unit_is_frozen_and_thawed_through_systemd(booted: int) -> None:
    unit = "hc-test-busy.service"
    started = inside(booted, "systemd-run", f"--unit={unit}", "--quiet", "python3", "-c",
                     "while True: pass")
    assert started.returncode == 0, started.stderr
    try:
        result = hostchaos_inside(booted, "inject", "freeze", "--unit", unit, "--json")
        assert result.returncode == 0, result.stderr
        fault_id = json.loads(result.stdout)["id"]
        assert freezer_state(booted, unit) == "frozen"  # systemd itself says so
        events = inside(booted, "cat", f"/sys/fs/cgroup/system.slice/{unit}/cgroup.events")
        assert "frozen 1" in events.stdout.splitlines()
        rolled = hostchaos_inside(booted, "rollback", fault_id)
        assert rolled.returncode == 0, rolled.stderr
        assert freezer_state(booted, unit) == "running"
        time.sleep(0.2)
        assert "frozen 0" in inside(booted, "cat", f"/sys/fs/cgroup/system.slice/{unit}/"
                                    "cgroup.events").stdout.splitlines()
    finally:
        inside(booted, "systemctl", "stop", unit)
