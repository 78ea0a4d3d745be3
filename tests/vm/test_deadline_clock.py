"""Deadlines are judged on CLOCK_BOOTTIME: stepping the wall clock moves no fault's end.

The VM's clock is the VM's own (a sandbox): the test steps it by an hour and
puts it back, whatever happens.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hostchaos.sandbox import NetnsPair
from tests.support.cli import hostchaos, records, rollback_began_at


@pytest.fixture
def wall_clock_kept() -> Iterator[None]:
    """Whatever the test does to CLOCK_REALTIME, it is put back (by CLOCK_MONOTONIC) after."""
    offset = time.clock_gettime(time.CLOCK_REALTIME) - time.monotonic()
    try:
        yield
    finally:
        time.clock_settime(time.CLOCK_REALTIME, time.monotonic() + offset)


def step_wall_clock(seconds: float) -> None:
    time.clock_settime(time.CLOCK_REALTIME, time.clock_gettime(time.CLOCK_REALTIME) + seconds)


@pytest.mark.parametrize("step", [3600.0, -3600.0])
def test_a_wall_clock_step_moves_no_deadline(
    pair: NetnsPair, state_dir: Path, wall_clock_kept: None, step: float
) -> None:
    before = pair.tc_config()
    started = time.monotonic()
    result = hostchaos("inject", "latency", "--netns", pair.a, "--iface", pair.iface_a,
                       "--ms", "100", "--for", "10s", "--json", state_dir=state_dir)
    assert result.returncode == 0, result.stderr
    fault_id = json.loads(result.stdout)["id"]
    (record,) = records(state_dir)
    assert record["format"] == 3
    expires_boot = record["expires_boottime"]
    assert "netem" in pair.tc_config()
    step_wall_clock(step)  # date -s / an NTP step on the whole VM
    ended_at_boot = None
    # a liveness bound only (under TCG on a busy host the CLI and the rollback's netlink
    # work each take seconds); the deadline is judged on the warden's decision below
    while time.monotonic() - started < 120:
        (record,) = records(state_dir)
        if record["state"] == "rolled-back":
            ended_at_boot = time.clock_gettime(time.CLOCK_BOOTTIME)
            break
        time.sleep(0.02)
    elapsed = time.monotonic() - started
    assert ended_at_boot is not None, "the fault was never rolled back"
    assert pair.tc_config() == before
    # when the warden began the rollback, on the unstepped wall clock: its event's time
    # is stepped wall time (the step came before the deadline, or the check fails below)
    decided = rollback_began_at(record) - step
    # not ended early (+1 h), not kept past its deadline (-1 h): 10 s + 1 s
    early, late = record["expires_at"] - decided, decided - record["expires_at"]
    print(f"wall clock step {step:+g}s: rollback began {late:.3f}s after the deadline, "
          f"ended {ended_at_boot - expires_boot:.3f}s after it (seen by polling), "
          f"{elapsed:.3f}s after the inject command started")
    assert early <= 0.01, f"rolled back {early:.2f}s early"
    assert late <= 1.0, f"rolled back {late:.2f}s late"
    assert ended_at_boot >= expires_boot
    assert 9.9 <= elapsed, elapsed
    assert record["id"] == fault_id and record["state"] == "rolled-back"
    assert record["end_reason"] == "deadline reached"
