"""`hostchaos inject cpu|memory|pids|nofile`: bad input is one line, exit 2, and changes nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from hostchaos.cli import cli
from tests.support.cli import hostchaos, one_line_error

#: every test here runs twice: the engine in-process, and through a real agent
pytestmark = pytest.mark.usefixtures("agent_mode")


@pytest.mark.parametrize(("args", "fragment"), [
    (["cpu", "--pid", "4242", "--limit", "0%"], "--limit must be above 0%"),
    (["cpu", "--pid", "4242", "--limit", "abc"], "'abc' is not a percentage"),
    (["cpu", "--pid", "4242", "--limit", "0.5%"], "below the kernel minimum"),
    (["cpu", "--pid", "4242", "--limit", "25%", "--period", "2s"], "between 1ms and 1s"),
    (["cpu", "--pid", "4242", "--limit", "25%", "--period", "abc"], "not a duration"),
    (["cpu", "--limit", "25%"], "give exactly one target"),
    (["cpu", "--pid", "4242", "--container", "web", "--limit", "25%"], "exactly one target"),
    (["cpu", "--pid", "abc", "--limit", "25%"], "not a valid integer"),
    (["cpu", "--pid", "4242"], "Missing option '--limit'"),
    (["memory", "--pid", "4242", "--max", "1K"], "below the kernel minimum"),
    (["memory", "--pid", "4242", "--max", "lots"], "is not a size"),
    (["memory", "--pid", "4242"], "give --max SIZE and/or --high SIZE"),
    (["memory", "--pid", "4242", "--max", "64M", "--high", "128M"], "must be below --max"),
    (["pids", "--pid", "4242", "--max", "-1"], "kernel's range"),
    (["pids", "--pid", "4242", "--max", "five"], "not a valid integer"),
    (["nofile", "--soft", "16"], "exactly one target"),
    (["nofile", "--pid", "4242", "--soft", "16", "--hard", "8"], "at least --soft 16"),
    (["nofile", "--pid", "4242", "--soft", "-2"], "0 or more"),
    (["cpu", "--cgroup", "/a/../../etc", "--limit", "25%"], "cgroup path"),
    (["cpu", "--pid", "4242", "--limit", "25%", "--for", "2h"], "above the cap"),
])
def test_bad_input_exits_2_with_one_line_and_changes_nothing(
    args: list[str], fragment: str, state_dir: Path
) -> None:
    result = hostchaos("inject", *args, state_dir=state_dir)
    assert result.returncode == 2, result.stderr
    assert fragment in one_line_error(result)
    faults = state_dir / "faults"
    assert not faults.exists() or list(faults.glob("*.json")) == []


def test_every_resource_command_has_help_with_an_example() -> None:
    runner = CliRunner()
    for kind in ("cpu", "memory", "pids", "nofile"):
        result = runner.invoke(cli, ["inject", kind, "--help"])
        assert result.exit_code == 0 and "Usage:" in result.stdout
        assert f"sudo hostchaos inject {kind} " in result.stdout
        assert "--for DURATION" in result.stdout and "--dry-run" in result.stdout
    listing = runner.invoke(cli, ["inject", "--help"]).stdout
    assert all(kind in listing for kind in ("cpu", "memory", "pids", "nofile"))


def test_resource_help_and_errors_import_nothing_heavy() -> None:
    probe = (
        "import sys\n"
        "from hostchaos.cli import main\n"
        "for argv in (['hostchaos', 'inject', 'cpu', '--help'],\n"
        "             ['hostchaos', 'inject', 'memory', '--pid', '1', '--max', '1K'],\n"
        "             ['hostchaos', 'inject', 'nofile', '--soft', '1']):\n"
        "    sys.argv = argv\n"
        "    try:\n"
        "        main()\n"
        "    except SystemExit:\n"
        "        pass\n"
        "heavy = sorted(m for m in sys.modules\n"
        "               if m.split('.')[0] in ('pyroute2', 'psutil', 'cgroupspy'))\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True).stdout
    assert "HEAVY []" in out
