"""Regression tests for what the fuzzing of issue 15 found in the CLI and the API."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from hostchaos.agent.app import OPENAPI_PATH
from hostchaos.errors import one_line
from tests.support.cli import hostchaos, one_line_error
from tests.unit.test_agent_api import Served, serve


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Served]:
    yield from serve(tmp_path)


def test_a_group_without_its_command_prints_help_on_stdout_and_one_error_line(
        state_dir: Path) -> None:
    """`hostchaos inject` printed its whole help as the error, many lines on stderr."""
    result = hostchaos("inject", state_dir=state_dir)
    assert result.returncode == 2
    assert result.stdout.startswith("Usage: hostchaos inject")
    assert one_line_error(result) == ("hostchaos: give a command after 'hostchaos inject' "
                                      "(see the help above)")


def test_user_text_with_a_line_break_stays_on_one_line(state_dir: Path, tmp_path: Path) -> None:
    """A parameter named "\\r" (or any text of the user's with a line break) split the error."""
    scenario = tmp_path / "cr.yaml"
    scenario.write_text('params: {"\\r": ""}\nname: x\nsteps: [{wait: 1s}]\n')
    result = hostchaos("run", str(scenario), "--dry-run", "--set", "pid=1", state_dir=state_dir)
    assert result.returncode == 2
    assert one_line_error(result).endswith("not a parameter of this scenario (params: \\r)")
    assert one_line("a\nb\tc\u2028d") == "a\\nb\\tc\\u2028d"


def test_api_error_messages_are_one_line(api: Served) -> None:
    status, body = api.call("POST", "/v1/faults", {"kind": "fake", "options": {}, "\n": 1})
    assert status == 400
    assert body["error"]["message"] == ("unknown field(s) \\n (known: dry_run, for, kind, "
                                        "lease, options)")


def test_rollback_all_with_a_body_is_a_documented_400(api: Served) -> None:
    """POST /v1/rollback-all answered 400 for a non-empty body, which the OpenAPI document
    did not list."""
    status, body = api.call("POST", "/v1/rollback-all", {"x": 1})
    assert status == 400
    assert body["error"]["message"] == "unknown field(s) x (this takes no fields)"
    documented = json.loads(OPENAPI_PATH.read_text())["paths"]["/v1/rollback-all"]["post"]
    assert {"400", "413", "415"} <= set(documented["responses"])
