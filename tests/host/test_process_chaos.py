"""stop and kill on processes the tests start: states read from /proc, kills from the record."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hostchaos.config import Config
from hostchaos.engine import Engine
from hostchaos.faults.stop import StopSpec
from hostchaos.system import procs
from tests.support.cli import hostchaos, one_line_error, open_records
from tests.support.waiting import wait_for


@pytest.fixture
def victims() -> Iterator[list[int]]:
    started = [subprocess.Popen(["sleep", "600"]) for _ in range(3)]
    try:
        yield [p.pid for p in started]
    finally:
        for proc in started:
            proc.kill()
            proc.wait()


def state(pid: int) -> str | None:
    return procs.state_letter(pid)


def test_stop_puts_three_victims_in_t_and_rollback_lets_them_run(
        victims: list[int], tmp_path: Path) -> None:
    engine = Engine(Config(state_dir=tmp_path / "state"))
    record = engine.inject(StopSpec(pids=tuple(victims)), 60)
    wait_for(lambda: all(state(p) == "T" for p in victims), 5)
    engine.rollback(record.id)
    wait_for(lambda: all(state(p) == "S" for p in victims), 5)


def test_a_pid_now_held_by_another_process_is_not_continued(victims: list[int],
                                                            tmp_path: Path) -> None:
    """The record names (pid, start time); the pid is held by a different process now.

    Simulated with a record whose start time is not the living process's: that is
    exactly what a reused pid looks like to hostchaos.
    """
    engine = Engine(Config(state_dir=tmp_path / "state"))
    first, other = victims[0], victims[1]
    record = engine.inject(StopSpec(pids=(first,)), 60)
    wait_for(lambda: state(first) == "T", 5)
    path = tmp_path / "state" / "faults" / f"{record.id}.json"
    data = json.loads(path.read_text())
    for note in data["undo"]:
        if note["step"] == "stop":
            # "the pid was reused": it names a process that started at another time
            note["pid"], note["start_ticks"] = other, procs.start_ticks(other) - 100
    path.write_text(json.dumps(data))
    os.kill(other, signal.SIGSTOP)  # stopped by someone else: not ours to continue
    engine.rollback(record.id)
    time.sleep(0.3)
    assert state(other) == "T"
    os.kill(other, signal.SIGCONT)
    os.kill(first, signal.SIGCONT)


def test_bad_process_targets_exit_with_one_line(tmp_path: Path, victims: list[int]) -> None:
    state_dir = tmp_path / "state"
    for args, code in ((["stop", "--pid", "1"], 5),
                       (["kill", "--cmdline", "("], 2),
                       (["stop", "--name", "no-such-process-hc"], 4),
                       (["kill", "--pid", str(victims[0]), "--signal", "NOPE"], 2),
                       (["stop", "--pid", str(os.getpid())], 5)):
        result = hostchaos("inject", *args, state_dir=state_dir)
        assert result.returncode == code, (args, result.stderr)
        one_line_error(result)
    assert open_records(state_dir) == []
    assert all(state(p) == "S" for p in victims)


RESPAWNER = """
import subprocess, sys, time
end = time.time() + float(sys.argv[2])
while time.time() < end:
    subprocess.run([sys.argv[1], "600"])
    time.sleep(0.05)
"""


def test_kill_interval_kills_a_respawning_victim_every_second(tmp_path: Path) -> None:
    name = f"hcvictim{os.getpid() % 100000}"
    binary = tmp_path / name
    shutil.copy("/bin/sleep", binary)
    respawner = subprocess.Popen([sys.executable, "-c", RESPAWNER, str(binary), "20"])
    state_dir = tmp_path / "state"
    try:
        wait_for(lambda: bool(procs.find_by_name(name)), 5)
        result = hostchaos("inject", "kill", "--name", name, "--interval", "1s", "--for", "5s",
                           "--json", state_dir=state_dir)
        assert result.returncode == 0, result.stderr
        fault_id = json.loads(result.stdout)["id"]
        wait_for(lambda: not open_records(state_dir), 15)
        ended = json.loads((state_dir / "faults" / "ended" / f"{fault_id}.json").read_text())
        kills = [n for n in ended["undo"] if n["step"] == "kill" and n["pid"] is not None]
        assert 4 <= len(kills) <= 6, kills
        assert len({(k["pid"], k["start_ticks"]) for k in kills}) == len(kills)
    finally:
        respawner.kill()
        respawner.wait()
        for pid in procs.find_by_name(name):
            os.kill(pid, signal.SIGKILL)
