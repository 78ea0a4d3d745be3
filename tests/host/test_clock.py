"""clock on processes the tests start clock-ready: what the victim itself reads, live.

Each victim is a Python process started with `hostchaos exec --clock-ready` that
prints its own ``time.time()`` and ``time.monotonic()`` every 10 ms. Its
monotonic clock is the system's, so it is the time axis; wall minus monotonic
is the offset the victim sees.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hostchaos.config import Config
from hostchaos.engine import Engine
from hostchaos.errors import ApplyError
from hostchaos.faults.clock import ClockSpec
from hostchaos.system import faketime
from tests.support.cli import hostchaos, injected, one_line_error, open_records, records
from tests.support.clocks import ClockVictim, clock_victim
from tests.support.waiting import wait_for

OFFSET = 300.0


def base_offset(victim: ClockVictim, before: float) -> float:
    """The victim's wall - monotonic before any fault (the real clocks' own difference)."""
    seen = [off for mono, off in victim.offsets() if mono < before]
    assert seen, "no samples before the fault"
    return seen[-1]


def timed(*args: str, state_dir: Path) -> tuple[float, float, subprocess.CompletedProcess[str]]:
    started = time.monotonic()
    result = hostchaos(*args, state_dir=state_dir)
    return started, time.monotonic(), result


def test_offset_shows_within_50ms_and_rollback_returns_it_without_a_restart(
        tmp_path: Path, state_dir: Path) -> None:
    with clock_victim(tmp_path, state_dir) as victim:
        start, returned, result = timed("inject", "clock", "--pid", str(victim.pid),
                                        "--offset", "+5m", "--for", "2m", "--json",
                                        state_dir=state_dir)
        assert result.returncode == 0, result.stderr
        fault_id = json.loads(result.stdout)["id"]
        base = base_offset(victim, start)
        victim.wait_samples_after(returned + 0.3, count=3)
        after = victim.offsets(returned)
        # the first sample later than inject's return is already shifted, within 50 ms of it
        assert after[0][0] - returned < 0.05
        assert all(abs(off - base - OFFSET) < 0.02 for _, off in after), after[:5]
        shifted = [mono for mono, off in victim.offsets(start) if abs(off - base - OFFSET) < 0.02]
        assert shifted and shifted[0] <= returned  # it took before inject returned (canary)

        _, back_returned, rolled = timed("rollback", fault_id, state_dir=state_dir)
        assert rolled.returncode == 0, rolled.stderr
        victim.wait_samples_after(back_returned + 0.3, count=3)
        later = victim.offsets(back_returned)
        assert later[0][0] - back_returned < 0.05
        assert all(abs(off - base) < 0.02 for _, off in later), later[:5]
        assert victim.process.poll() is None  # the same process throughout: no restart
        # its monotonic clock never jumped: consecutive samples 10 ms (+ scheduling) apart
        monos = [mono for mono, _ in victim.offsets()]
        assert max(b - a for a, b in itertools.pairwise(monos)) < 0.5


def test_rate_gains_one_percent_over_ten_seconds_continuously(tmp_path: Path,
                                                              state_dir: Path) -> None:
    with clock_victim(tmp_path, state_dir, period=0.05) as victim:
        start, returned, result = timed("inject", "clock", "--pid", str(victim.pid), "--rate",
                                        "1.01", "--for", "1m", state_dir=state_dir)
        assert result.returncode == 0, result.stderr
        base = base_offset(victim, start)
        victim.wait_samples_after(returned + 10.2, count=1, timeout=30)
        samples = [(w, m) for w, m in victim.samples() if m > returned]
        first = samples[0]
        last = next(s for s in samples if s[1] - first[1] >= 10.0)
        speed = (last[0] - first[0]) / (last[1] - first[1])
        assert abs(speed - 1.01) < 0.002, speed
        # continuous: the clock did not jump when the rate started
        at_start = [off - base for mono, off in victim.offsets(start - 0.2) if mono < returned]
        assert all(abs(gain) < 0.02 for gain in at_start), at_start
        hostchaos("rollback", "--all", state_dir=state_dir)
        back = time.monotonic()
        victim.wait_samples_after(back + 0.2, count=2)
        assert all(abs(off - base) < 0.02 for _, off in victim.offsets(back + 0.1))


def test_monotonic_moves_only_when_asked(tmp_path: Path, state_dir: Path) -> None:
    with clock_victim(tmp_path, state_dir, monotonic=True, name="mono") as victim, \
            clock_victim(tmp_path, state_dir, name="plain") as plain:
        refused = hostchaos("inject", "clock", "--pid", str(victim.pid), "--offset", "+5m",
                            state_dir=state_dir)
        assert refused.returncode == 3 and "--monotonic" in one_line_error(refused)
        refused = hostchaos("inject", "clock", "--pid", str(plain.pid), "--offset", "+5m",
                            "--monotonic", state_dir=state_dir)
        assert refused.returncode == 3 and "--monotonic" in one_line_error(refused)
        assert not open_records(state_dir)

        # the victim's own monotonic readings: started --monotonic, they read as its wall clock
        before = victim.samples()[-1]
        assert abs(before[0] - before[1]) < 1.0
        fault_id = injected("clock", "--pid", str(victim.pid), "--offset", "+5m", "--monotonic",
                            "--for", "1m", state_dir=state_dir)
        wait_for(lambda: victim.samples()[-1][1] - before[1] > OFFSET, 5, step=0.01)
        wall, mono = victim.samples()[-1]
        assert abs(wall - mono) < 1.0  # both moved together
        hostchaos("rollback", fault_id, state_dir=state_dir)


def test_kill_9_of_the_cli_and_the_guardian_then_sweep_gives_the_real_clock_back(
        tmp_path: Path, state_dir: Path) -> None:
    with clock_victim(tmp_path, state_dir) as victim:
        env = {**os.environ, "HOSTCHAOS_STATE_DIR": str(state_dir)}
        cli = subprocess.Popen([sys.executable, "-m", "hostchaos", "inject", "clock", "--pid",
                                str(victim.pid), "--offset", "-90s", "--for", "5m", "--wait"],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for(lambda: any(r["state"] == "active" for r in records(state_dir)), 30)
            (record,) = open_records(state_dir)
            holder = record.get("guardian") or record.get("holder")
            cli.send_signal(signal.SIGKILL)
            cli.wait()
            os.kill(int(holder["pid"]), signal.SIGKILL)
            base = base_offset(victim, time.monotonic() + 1e9)
            assert abs(base - victim.offsets()[0][1] + 90) < 0.05  # it carries -90 s now
            swept = hostchaos("sweep", state_dir=state_dir)
            assert swept.returncode == 0, swept.stderr
            done = time.monotonic()
            victim.wait_samples_after(done + 0.1, count=2)
            first_offset = victim.offsets()[0][1]
            assert all(abs(off - first_offset) < 0.02 for _, off in victim.offsets(done))
            assert not open_records(state_dir)
        finally:
            if cli.poll() is None:
                cli.kill()
                cli.wait()


def test_a_canary_that_reads_the_wrong_clock_fails_the_fault_and_rolls_it_back(
        tmp_path: Path, state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The canary is the last check: here it reads nothing moved (as on a host where the
    library does not load), so the fault must fail whole and the file be neutral again."""
    with clock_victim(tmp_path, state_dir) as victim:
        monkeypatch.setattr(faketime, "canary_offset", lambda control, monotonic: 0.0)
        engine = Engine(Config(state_dir=state_dir))
        with pytest.raises(ApplyError, match="did not take"):
            engine.inject(ClockSpec(pid=victim.pid, offset=OFFSET), 60)
        ready = faketime.clock_ready(victim.pid)
        assert ready is not None and ready.control.read().strip() == faketime.NEUTRAL
        (record,) = records(state_dir)
        assert record["state"] == "failed"
        base = victim.offsets()[0][1]
        now = time.monotonic()
        victim.wait_samples_after(now, count=2)
        assert all(abs(off - base) < 0.02 for _, off in victim.offsets(now))


def test_bad_input_exits_with_one_line_and_changes_nothing(tmp_path: Path,
                                                          state_dir: Path) -> None:
    sleeper = subprocess.Popen(["sleep", "600"])
    try:
        cases = [
            (["--pid", str(sleeper.pid), "--offset", "5x"], 2, "not a duration"),
            (["--pid", str(sleeper.pid)], 2, "nothing to do"),
            (["--pid", str(sleeper.pid), "--rate", "0"], 2, "--rate"),
            (["--pid", str(sleeper.pid), "--offset", "+5m"], 3, "not started clock-ready"),
            (["--pid", "4194303", "--offset", "+5m"], 4, "not found"),
            (["--unit", "nginx", "--offset", "+5m"], 2, "NAME.service"),
        ]
        for args, code, words in cases:
            result = hostchaos("inject", "clock", *args, state_dir=state_dir)
            assert result.returncode == code, (args, result.stderr)
            assert words in one_line_error(result), (args, result.stderr)
        assert records(state_dir) == []
        assert not (Path(os.environ["HOSTCHAOS_RUN_DIR"]) / "clock").exists()
    finally:
        sleeper.kill()
        sleeper.wait()


@pytest.mark.parametrize(("program", "words"), [
    ("busybox", "statically linked"),   # busybox-static
    ("podman", "Go program"),           # podman is written in Go
    ("mount", "setuid"),                # util-linux mount is setuid root on Debian
])
def test_exec_refuses_what_libfaketime_cannot_reach(program: str, words: str,
                                                    state_dir: Path) -> None:
    path = shutil.which(program)
    assert path is not None, f"{program} is installed by scripts/setup"
    result = hostchaos("exec", "--clock-ready", "--", path, "--help", state_dir=state_dir)
    assert result.returncode == 3, result.stderr
    assert words in one_line_error(result)
    assert not (Path(os.environ["HOSTCHAOS_RUN_DIR"]) / "clock").exists()


def test_a_static_program_is_refused_by_inject_too(tmp_path: Path, state_dir: Path) -> None:
    busybox = shutil.which("busybox")
    assert busybox is not None
    env = faketime.preload_environment(faketime.ClockControl("pid-1-1"), monotonic=False,
                                       base=dict(os.environ))
    static = subprocess.Popen([busybox, "sleep", "600"], env=env)
    try:
        result = hostchaos("inject", "clock", "--pid", str(static.pid), "--offset", "+5m",
                           state_dir=state_dir)
        assert result.returncode == 3
        assert "statically linked" in one_line_error(result)
        assert records(state_dir) == []
    finally:
        static.kill()
        static.wait()


def test_sweep_removes_control_files_nobody_follows(tmp_path: Path, state_dir: Path) -> None:
    with clock_victim(tmp_path, state_dir, seconds=1) as victim:
        ready = faketime.clock_ready(victim.pid)
        assert ready is not None
        directory = ready.control.directory
    assert directory.is_dir()
    old = time.time() - 3600
    os.utime(directory, (old, old))
    swept = hostchaos("sweep", "--json", state_dir=state_dir)
    assert swept.returncode == 0, swept.stderr
    assert not directory.exists()
    assert str(directory) in json.loads(swept.stdout)["leftovers"]


def test_inject_and_rollback_leave_nothing_in_dev_shm(tmp_path: Path, state_dir: Path) -> None:
    """libfaketime keeps /dev/shm objects per process tree it runs in: only the victim has any."""
    def objects() -> set[str]:
        return {n for n in os.listdir("/dev/shm") if "faketime_" in n}

    before = objects()
    with clock_victim(tmp_path, state_dir) as victim:
        result = hostchaos("inject", "clock", "--pid", str(victim.pid), "--offset", "+1m",
                           "--for", "1m", state_dir=state_dir)
        assert result.returncode == 0, result.stderr
        fault_id = result.stdout.split()[0]
        assert objects() - before == {f"faketime_shm_{victim.pid}",
                                      f"sem.faketime_sem_{victim.pid}"}  # the victim's own
        assert hostchaos("rollback", fault_id, state_dir=state_dir).returncode == 0
    assert objects() == before
