"""freeze --unit where systemd runs: through systemd, so systemd knows its unit is frozen.

The sandbox is a Debian rootfs booted with systemd as PID 1 under systemd-nspawn (with a
cgroup v2 hierarchy of its own), hostchaos run inside it with nsenter, and a transient
busy unit started there; nothing of the host's own services is touched.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from tests.support.nspawn import booted_container, hostchaos_inside, inside


@pytest.fixture(scope="module")
def booted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    with booted_container(tmp_path_factory.mktemp("nspawn")) as leader:
        yield leader


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
