"""clock --unit under a real systemd (PID 1 of a throwaway nspawn container).

A real service in the container prints its own ``time.time()`` and ``time.monotonic()``
to a file in the test's scratch directory; hostchaos, run inside the container, adds
its runtime drop-in, restarts the service once, moves its clock, and on rollback gives
the real clock back without a second restart (or with one, when asked).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.clocks import PRINTER
from tests.support.nspawn import SCRATCH, booted_container, hostchaos_inside, inside
from tests.support.waiting import wait_for

UNIT = "hc-test-clock.service"
DROPIN = f"/run/systemd/system/{UNIT}.d/50-hostchaos-clock.conf"


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("nspawn-clock")


@pytest.fixture(scope="module")
def booted(scratch: Path) -> Iterator[int]:
    with booted_container(scratch) as leader:
        yield leader


@pytest.fixture
def service(booted: int, scratch: Path) -> Iterator[Path]:
    (scratch / "printer.py").write_text(PRINTER)
    output = scratch / "clock.out"
    output.unlink(missing_ok=True)
    (scratch / UNIT).write_text(
        "[Unit]\nDescription=hostchaos test: prints its own clocks\n"
        f"[Service]\nExecStart=/usr/bin/python3 {SCRATCH}/printer.py 0.05 600\n"
        f"StandardOutput=append:{SCRATCH}/clock.out\n")
    linked = inside(booted, "systemctl", "link", f"{SCRATCH}/{UNIT}")
    assert linked.returncode == 0, linked.stderr
    started = inside(booted, "systemctl", "start", UNIT)
    assert started.returncode == 0, started.stderr
    wait_for(lambda: output.exists() and len(output.read_text().splitlines()) > 3, 30)
    try:
        yield output
    finally:
        hostchaos_inside(booted, "rollback", "--all")
        inside(booted, "systemctl", "stop", UNIT)
        inside(booted, "systemctl", "disable", UNIT)


def main_pid(leader: int) -> int:
    return int(inside(leader, "systemctl", "show", UNIT, "-p", "MainPID", "--value").stdout)


def last_offset(output: Path, count: int = 1) -> list[float]:
    lines = [line.split() for line in output.read_text().splitlines() if len(line.split()) == 2]
    return [float(w) - float(m) for w, m in lines[-count:]]


def settled_offset(output: Path, target: float, tolerance: float = 0.1) -> float:
    wait_for(lambda: all(abs(o - target) < tolerance for o in last_offset(output, 3)), 20)
    return last_offset(output)[0]


def test_a_unit_gets_the_offset_and_loses_it_on_rollback_without_a_restart(
        booted: int, service: Path) -> None:
    base = last_offset(service)[0]
    before = main_pid(booted)
    result = hostchaos_inside(booted, "inject", "clock", "--unit", UNIT, "--offset", "+5m",
                              "--for", "2m", "--json")
    assert result.returncode == 0, result.stderr
    fault_id = json.loads(result.stdout)["id"]
    during = main_pid(booted)
    assert during != before  # restarted once, with the preload
    assert inside(booted, "test", "-f", DROPIN).returncode == 0
    settled_offset(service, base + 300)
    environ = inside(booted, "cat", f"/proc/{during}/environ").stdout
    assert "libfaketime.so.1" in environ

    rolled = hostchaos_inside(booted, "rollback", fault_id)
    assert rolled.returncode == 0, rolled.stderr
    settled_offset(service, base)
    assert main_pid(booted) == during  # the effect went without a second restart
    assert inside(booted, "test", "-e", DROPIN).returncode != 0


def test_restart_on_rollback_starts_it_again_without_the_preload(booted: int,
                                                                 service: Path) -> None:
    base = last_offset(service)[0]
    result = hostchaos_inside(booted, "inject", "clock", "--unit", UNIT, "--offset", "-90s",
                              "--restart-on-rollback", "--for", "2m", "--json")
    assert result.returncode == 0, result.stderr
    during = main_pid(booted)
    settled_offset(service, base - 90)
    rolled = hostchaos_inside(booted, "rollback", json.loads(result.stdout)["id"])
    assert rolled.returncode == 0, rolled.stderr
    after = main_pid(booted)
    assert after != during
    assert "libfaketime" not in inside(booted, "cat", f"/proc/{after}/environ").stdout
    settled_offset(service, base)
