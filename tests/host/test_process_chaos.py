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
from tests.support.victims import sleepers
from tests.support.waiting import wait_for


@pytest.fixture
def victims() -> Iterator[list[int]]:
    with sleepers(3) as pids:
        yield pids


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
    for args, code in ((["inject", "stop", "--pid", "1"], 5),
                       (["inject", "kill", "--cmdline", "("], 2),
                       (["inject", "stop", "--name", "no-such-process-hc"], 4),
                       (["inject", "kill", "--pid", str(victims[0]), "--signal", "NOPE"], 2),
                       (["inject", "stop", "--pid", str(os.getpid())], 5)):
        result = hostchaos(*args, state_dir=state_dir)
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


@pytest.fixture
def busy_container() -> Iterator[tuple[str, int]]:
    from hostchaos.system import capabilities
    from tests.support import podman
    from tests.support.capability import need

    need(capabilities.container_runtime("podman"))
    with podman.container("freeze", "/bin/sh", "-c", "while :; do :; done") as running:
        yield running


def cpu_over(pid: int, seconds: float) -> int:
    start = procs.cpu_ticks(pid) or 0
    time.sleep(seconds)
    return (procs.cpu_ticks(pid) or 0) - start


def test_freeze_stops_a_containers_processes_and_thaw_lets_them_run(
        busy_container: tuple[str, int], tmp_path: Path) -> None:
    name, pid = busy_container
    state_dir = tmp_path / "state"
    assert cpu_over(pid, 0.5) > 10  # the busy loop runs
    result = hostchaos("inject", "freeze", "--container", name, "--json", state_dir=state_dir)
    assert result.returncode == 0, result.stderr
    fault_id = json.loads(result.stdout)["id"]
    assert state(pid) == "D"  # frozen tasks sleep uninterruptibly in the freezer
    assert cpu_over(pid, 1.0) == 0
    again = hostchaos("inject", "freeze", "--container", name, state_dir=state_dir)
    assert again.returncode == 5, again.stderr
    assert hostchaos("rollback", fault_id, state_dir=state_dir).returncode == 0
    assert cpu_over(pid, 0.5) > 10
    assert state(pid) in ("R", "S")


PID_REUSE_DRIVER = r"""
import json, os, signal, subprocess, sys, time

def hostchaos(*args):
    return subprocess.run([sys.executable, "-m", "hostchaos", *args], capture_output=True,
                          text=True, check=False)

def state(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return None

victim = subprocess.Popen(["sleep", "600"])
result = hostchaos("inject", "stop", "--pid", str(victim.pid), "--for", "5m", "--json")
fault_id = json.loads(result.stdout)["id"]
stopped = state(victim.pid)
victim.kill(); victim.wait()
with open("/proc/sys/kernel/ns_last_pid", "w") as f:  # this pid namespace's own counter
    f.write(str(victim.pid - 1))
newcomer = subprocess.Popen(["sleep", "600"])
os.kill(newcomer.pid, signal.SIGSTOP)  # stopped by someone else: not ours to continue
time.sleep(0.1)
rollback = hostchaos("rollback", fault_id)
time.sleep(0.3)
print(json.dumps({"victim": victim.pid, "newcomer": newcomer.pid, "stopped": stopped,
                  "rollback": rollback.returncode, "newcomer_after": state(newcomer.pid)}))
newcomer.kill()
"""


def test_a_reused_pid_is_never_continued(tmp_path: Path) -> None:
    """Real pid reuse, in a pid namespace of the test's own (its ns_last_pid is set so
    the next process gets the dead victim's pid); hostchaos runs inside it."""
    result = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c", PID_REUSE_DRIVER],
        capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "HOSTCHAOS_STATE_DIR": str(tmp_path / "state"),
             "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["stopped"] == "T"
    assert seen["newcomer"] == seen["victim"]  # the pid really was reused
    assert seen["rollback"] == 0
    assert seen["newcomer_after"] == "T"  # the newcomer did not get the victim's SIGCONT
