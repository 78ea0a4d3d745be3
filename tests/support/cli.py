"""Run the real `hostchaos` command in a subprocess, as an operator would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any


def hostchaos(*args: str, state_dir: Path, env: dict[str, str] | None = None,
              timeout: float = 120) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "HOSTCHAOS_STATE_DIR": str(state_dir), **(env or {})}
    return subprocess.run([sys.executable, "-m", "hostchaos", *args], capture_output=True,
                          text=True, env=full_env, timeout=timeout, check=False)


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """Assert the command failed with exactly one line on stderr and no traceback."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one error line, got: {result.stderr!r}"
    assert "Traceback" not in result.stderr
    assert lines[0].startswith("hostchaos: ")
    return lines[0]


def records(state_dir: Path) -> list[dict[str, Any]]:
    faults = state_dir / "faults"
    while True:
        if not faults.is_dir():
            return []
        paths = sorted(faults.glob("*.json")) + sorted(faults.glob("ended/*.json"))
        try:
            return [json.loads(p.read_text()) for p in paths]
        except FileNotFoundError:
            continue  # a record moved to ended/ between the listing and the read: list again


def open_records(state_dir: Path) -> list[dict[str, Any]]:
    return [r for r in records(state_dir) if r["state"] not in ("rolled-back", "failed")]


def rollback_began_at(record: dict[str, Any]) -> float:
    """When a rollback of ``record`` began (wall clock, as stored): its ``rolling-back`` event."""
    (event,) = [e for e in record["events"] if e["state"] == "rolling-back"]
    return float(event["at"])


def injected(*args: str, state_dir: Path, env: dict[str, str] | None = None) -> str:
    """Run `hostchaos inject ARGS --json`, which must succeed; the new fault's id."""
    result = hostchaos("inject", *args, "--json", state_dir=state_dir, env=env)
    assert result.returncode == 0, result.stderr
    fault_id: str = json.loads(result.stdout)["id"]
    return fault_id


def rolled_back(fault_id: str, state_dir: Path) -> None:
    """Run `hostchaos rollback ID`, which must succeed."""
    result = hostchaos("rollback", fault_id, state_dir=state_dir)
    assert result.returncode == 0, result.stderr
