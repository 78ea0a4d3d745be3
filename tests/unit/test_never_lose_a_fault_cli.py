"""Issue 8 through the command line only (so the same file runs against older versions).

Exit codes and the state lock as an operator meets them: an absurd fault id,
a namespace name that is a path, a lock held by a stuck command.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.cli import hostchaos, one_line_error

REPO = Path(__file__).resolve().parents[2]
#: every test here runs twice: the engine in-process, and through a real agent
pytestmark = pytest.mark.usefixtures("agent_mode")

HOLD_LOCK = r"""
import fcntl, os, sys, time
from pathlib import Path
state = Path(sys.argv[1])
(state / "faults" / "ended").mkdir(parents=True, mode=0o700)
fd = os.open(state / "lock", os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
ticks = open(f"/proc/{os.getpid()}/stat").read().rsplit(")", 1)[1].split()[19]
os.write(fd, f"{os.getpid()} {ticks} inject cpu (stopped in a debugger)\n".encode())
print("held", flush=True)
time.sleep(60)
"""


def test_a_held_lock_times_out_with_the_holder_named(state_dir: Path, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('lock_timeout = "1s"\n')
    state = tmp_path / "locked-state"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(state)], cwd=REPO,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        started = time.monotonic()
        result = hostchaos("rollback", "--all", state_dir=state,
                           env={"HOSTCHAOS_CONFIG": str(config)}, timeout=20)
        waited = time.monotonic() - started
        assert result.returncode == 5, result.stderr
        line = one_line_error(result)
        assert f"held by pid {holder.pid} (inject cpu (stopped in a debugger))" in line
        assert 1.0 <= waited < 10
    finally:
        holder.kill()
        holder.wait()
    assert hostchaos("rollback", "--all", state_dir=state).returncode == 0  # released


def test_an_absurd_fault_id_is_not_found(state_dir: Path) -> None:
    for command in ("status", "rollback", "extend"):
        result = hostchaos(command, "hc-" + "x" * 300, state_dir=state_dir)
        assert result.returncode == 4, (command, result.stderr)
        assert "not found" in one_line_error(result)


@pytest.mark.parametrize("name", ["..", ".", "a/b"])
def test_a_netns_name_that_is_a_path_is_bad_input(name: str, state_dir: Path) -> None:
    result = hostchaos("inject", "latency", "--netns", name, "--iface", "eth0", "--ms", "10",
                       state_dir=state_dir)
    assert result.returncode == 2, result.stderr
    assert "network namespace name" in one_line_error(result)


def test_list_and_rollback_need_no_state_directory(tmp_path: Path) -> None:
    missing = tmp_path / "never-created"
    result = hostchaos("list", state_dir=missing)
    assert result.returncode == 0 and "no open faults" in result.stdout
    assert hostchaos("rollback", "hc-fake-00000000", state_dir=missing).returncode == 4
