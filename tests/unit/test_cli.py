"""The CLI as an operator meets it: exit codes, one-line errors, JSON, lazy imports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from hostchaos.cli import cli
from tests.support.cli import hostchaos, one_line_error

#: every test here runs twice: the engine in-process, and through a real agent
pytestmark = pytest.mark.usefixtures("agent_mode")


def run(*args: str, state_dir: Path) -> tuple[int, str, str]:
    runner = CliRunner()
    result = runner.invoke(cli, list(args), env={"HOSTCHAOS_STATE_DIR": str(state_dir)})
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize(("args", "code", "fragment"), [
    (["inject", "latency", "--iface", "lo", "--ms", "abc"], 2, "not a valid float"),
    (["inject", "latency", "--iface", "lo", "--ms", "-5"], 2, "--ms must be between 0.001"),
    (["inject", "latency", "--iface", "lo", "--ms", "0"], 2, "--ms must be between 0.001"),
    (["inject", "loss", "--iface", "lo", "--percent", "101"], 2, "--percent must be above 0"),
    (["inject", "loss", "--iface", "lo", "--percent", "0"], 2, "--percent must be above 0"),
    (["inject", "loss", "--iface", "lo", "--percent", "5", "--for", "2h"], 2, "above the cap"),
    (["inject", "loss", "--iface", "lo", "--percent", "5", "--for", "-1s"], 2, "not a duration"),
    (["inject", "loss", "--iface", "lo", "--percent", "5", "--for", "0"], 2, "greater than zero"),
    (["inject", "loss", "--iface", "lo", "--percent", "5", "--lease", "5m", "--for", "1m"], 2,
     "longer than"),
    (["inject", "loss", "--iface", "lo"], 2, "exactly one of --percent and --ge"),
    (["inject", "latency", "--iface", "lo"], 2, "Missing option '--ms'"),
    (["status", "hc-latency-deadbeef"], 4, "not found"),
    (["rollback", "hc-latency-deadbeef"], 4, "not found"),
    (["extend", "hc-latency-deadbeef"], 4, "not found"),
    (["status", "a/b"], 4, "fault 'a/b' not found"),
    (["rollback", "../x?y"], 4, "fault '../x?y' not found"),
    (["rollback"], 2, "exactly one of"),
])
def test_bad_input_is_one_line_and_changes_nothing(
    args: list[str], code: int, fragment: str, state_dir: Path
) -> None:
    result = hostchaos(*args, state_dir=state_dir)
    assert result.returncode == code, result.stderr
    assert fragment in one_line_error(result)
    faults = state_dir / "faults"
    assert not faults.exists() or list(faults.glob("*.json")) == []


def test_bad_input_with_json_prints_error_object(state_dir: Path) -> None:
    result = hostchaos("inject", "latency", "--iface", "lo", "--ms", "-1", "--json",
                       state_dir=state_dir)
    assert result.returncode == 2
    assert json.loads(result.stdout)["error"]["type"] == "spec"


def test_unwritable_state_dir_refuses_with_exit_8(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = hostchaos("inject", "latency", "--iface", "lo", "--ms", "10",
                       state_dir=blocker / "state")
    assert result.returncode == 8
    assert "not writable" in one_line_error(result)


def test_empty_list_sweep_and_json(state_dir: Path) -> None:
    code, out, _ = run("list", state_dir=state_dir)
    assert code == 0 and "no open faults" in out
    code, out, _ = run("list", "--json", state_dir=state_dir)
    assert code == 0 and json.loads(out) == []
    code, out, _ = run("sweep", "--json", state_dir=state_dir)
    assert code == 0 and json.loads(out)["rolled_back"] == []


def test_help_and_usage_errors_do_not_import_pyroute2_psutil_or_the_server() -> None:
    probe = (
        "import sys\n"
        "from hostchaos.cli import main\n"
        "for argv in (['hostchaos', '--help'], ['hostchaos', 'inject', 'latency', '--help'],\n"
        "             ['hostchaos', 'agent', '--help'],\n"
        "             ['hostchaos', 'inject', 'latency', '--iface', 'x', '--ms', '-1']):\n"
        "    sys.argv = argv\n"
        "    try:\n"
        "        main()\n"
        "    except SystemExit:\n"
        "        pass\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('pyroute2', 'psutil',\n"
        "               'uvicorn', 'starlette', 'prometheus_client', 'anyio'))\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True).stdout
    assert "HEAVY []" in out


def test_every_command_has_help() -> None:
    runner = CliRunner()
    for args in (["--help"], ["inject", "--help"], ["inject", "latency", "--help"],
                 ["inject", "loss", "--help"], ["list", "--help"], ["status", "--help"],
                 ["extend", "--help"], ["rollback", "--help"], ["sweep", "--help"],
                 ["doctor", "--help"], ["demo", "--help"], ["agent", "--help"]):
        result = runner.invoke(cli, args)
        assert result.exit_code == 0 and "Usage:" in result.stdout


def test_the_agent_mode_goes_through_the_agent(agent_mode: str, state_dir: Path,
                                               tmp_path: Path) -> None:
    """Both modes audit the same way; only the agent logs it (so the agent did the work)."""
    result = hostchaos("rollback", "hc-latency-deadbeef", state_dir=state_dir)
    assert result.returncode == 4 and "not found" in one_line_error(result)
    lines = [json.loads(line) for line in (state_dir / "audit.log").read_text().splitlines()]
    assert lines[-1]["action"] == "rollback" and lines[-1]["result"] == "target-not-found"
    assert lines[-1]["client_uid"] is not None and lines[-1]["client_pid"] is not None
    agent_log = tmp_path / "agent.log"
    went_through = agent_log.exists() and "rollback failed" in agent_log.read_text()
    assert went_through == (agent_mode == "agent")


def test_the_thin_client_imports_nothing_heavy(agent_mode: str, state_dir: Path) -> None:
    if agent_mode != "agent":
        pytest.skip("the in-process engine is allowed its imports")
    probe = (
        "import sys\n"
        "from hostchaos.cli import main\n"
        "for argv in (['hostchaos', 'list'], ['hostchaos', 'status', 'hc-latency-deadbeef'],\n"
        "             ['hostchaos', 'rollback', '--all'],\n"
        "             ['hostchaos', 'inject', 'latency', '--iface', 'nosuch0', '--ms', '5']):\n"
        "    sys.argv = argv\n"
        "    try:\n"
        "        main()\n"
        "    except SystemExit:\n"
        "        pass\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'pyroute2', 'psutil',\n"
        "                'cgroupspy', 'uvicorn', 'starlette', 'prometheus_client', 'anyio'})\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, env={**os.environ, "HOSTCHAOS_STATE_DIR": str(state_dir)})
    assert "HEAVY []" in out.stdout, out.stdout + out.stderr
    assert "interface nosuch0 not found" in out.stderr
