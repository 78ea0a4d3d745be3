"""Scenario files: every ready file checks and dry-runs; a broken one is one line,
FILE:LINE: KEY: reason, exit 2; the runner's rules on a fake injector and real probes."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from hostchaos.cli import cli
from hostchaos.errors import ApplyError, SpecError
from hostchaos.scenario import loader, report
from hostchaos.scenario.runner import Runner

SCENARIOS = sorted((Path(__file__).resolve().parents[2] / "scenarios").glob("*.yaml"))


def test_there_are_ready_scenarios_for_real_situations() -> None:
    assert len(SCENARIOS) >= 8


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.name)
def test_every_ready_scenario_checks_and_dry_runs(path: Path) -> None:
    scenario = loader.load(path)
    assert scenario.faults() and scenario.probes
    result = CliRunner().invoke(cli, ["run", str(path), "--dry-run", "--json"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.output)
    assert plan["dry_run"] and len(plan["faults"]) == len(scenario.faults())


BROKEN = {
    "unknown kind": ("steps:\n  - latencyy: {iface: eth0, ms: 5, for: 1s}\n", 3,
                     "steps[0].latencyy", "unknown step or fault kind"),
    "wrong type": ("steps:\n  - latency: {iface: eth0, ms: fast, for: 1s}\n", 3,
                   "steps[0].latency.ms", "not a valid number"),
    "missing for": ("steps:\n  - latency: {iface: eth0, ms: 5}\n", 3, "steps[0].latency.for",
                    "missing"),
    "yaml syntax": ("steps:\n  - latency: {iface: eth0, ms: 5, for: 1s\n", 4, "YAML syntax",
                    ""),
    "bad probe": ("probes:\n  - name: x\n    tcp: {host: a}\nsteps:\n  - wait: 1s\n", 4,
                  "probes[0].tcp.port", "missing"),
    "unknown option": ("steps:\n  - latency: {iface: eth0, ms: 5, for: 1s, colour: red}\n", 3,
                       "steps[0].latency.colour", "unknown latency option"),
    "bad duration": ("steps:\n  - wait: soon\n", 3, "steps[0].wait", "not a duration"),
    "unknown parameter": ("steps:\n  - latency: {iface: '${nic}', ms: 5, for: 1s}\n", 3,
                          "steps[0].latency.iface", "${nic} is not a parameter"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_scenario_is_one_line_naming_file_line_and_key(case: str,
                                                                tmp_path: Path) -> None:
    body, line, key, reason = BROKEN[case]
    path = tmp_path / "broken.yaml"
    path.write_text("name: broken\n" + body)
    result = CliRunner().invoke(cli, ["run", str(path)])
    assert result.exit_code == 2, result.output
    lines = [x for x in result.output.splitlines() if x.strip()]
    assert len(lines) == 1 and "Traceback" not in result.output
    assert lines[0].startswith(f"hostchaos: {path}:")
    assert key in lines[0] and reason in lines[0], lines[0]
    assert f"{path}:{line}:" in lines[0], lines[0]


def test_parameters_are_given_with_set(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("name: p\nparams: {nic: eth0}\nsteps:\n"
                    "  - latency: {iface: '${nic}', ms: 5, for: 1s}\n")
    assert loader.load(path, {"nic": "ens3"}).faults()[0].spec.iface == "ens3"  # type: ignore
    with pytest.raises(SpecError, match="--set card: not a parameter"):
        loader.load(path, {"card": "x"})


class FakeInjector:
    """Stands in for the engine: records what the runner asked, changes nothing."""

    def __init__(self, fail_inject: bool = False) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.fail_inject = fail_inject
        self.open: set[str] = set()

    def inject(self, spec: Any, duration: float | None = None, lease: float | None = None) -> Any:
        if self.fail_inject:
            raise ApplyError("the kernel said no")
        fault_id = f"hc-fake-{len(self.calls)}"
        self.calls.append(("inject", (fault_id, duration, lease)))
        self.open.add(fault_id)

        class Record:
            id = fault_id
            summary = "a fake fault"
        return Record()

    def extend(self, fault_id: str, duration: float | None = None) -> Any:
        self.calls.append(("extend", fault_id))

    def rollback(self, fault_id: str, reason: str = "requested") -> Any:
        self.calls.append(("rollback", fault_id))
        self.open.discard(fault_id)


def scenario_file(tmp_path: Path, probe: str, steps: str, settings: str = "") -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(f"name: s\nsettings: {{consecutive: 2, steady-timeout: 2s, "
                    f"recovery-timeout: 2s{settings}}}\nprobes:\n{probe}\nsteps:\n{steps}\n")
    return path


LATENCY = "  - latency: {iface: eth0, ms: 5, for: 600ms}"


def test_a_failing_steady_state_injects_nothing(tmp_path: Path) -> None:
    probe = "  - {name: never, command: [/bin/false], every: 100ms}"
    path = scenario_file(tmp_path, probe, LATENCY)
    fake = FakeInjector()
    result = Runner(loader.load(path), fake, seed=1).run()
    assert result.outcome == "aborted" and "steady state" in result.reason
    assert fake.calls == []


def test_faults_are_held_under_a_renewed_lease_and_rolled_back(tmp_path: Path) -> None:
    path = scenario_file(tmp_path, "  - {name: fine, command: [/bin/true], every: 100ms}", LATENCY,
                         ", lease: 300ms")
    fake = FakeInjector()
    started = time.monotonic()
    result = Runner(loader.load(path), fake, seed=1).run()
    assert result.outcome == "recovered", result.reason
    kinds = [c[0] for c in fake.calls]
    assert kinds[0] == "inject" and kinds[-1] == "rollback" and "extend" in kinds
    (_, (_, duration, lease)) = fake.calls[0]
    assert lease == pytest.approx(0.3) and duration >= 0.6
    fault = result.faults[0]
    assert fault.ended_at is not None and fault.applied_at is not None
    assert fault.ended_at - fault.applied_at == pytest.approx(0.6, abs=0.1)
    assert not fake.open and time.monotonic() - started < 10


def test_an_abort_probe_rolls_everything_back_at_once(tmp_path: Path) -> None:
    marker = tmp_path / "flag"
    marker.write_text("")
    probe = (f"  - {{name: file, command: [test, -e, {marker}], every: 50ms, abort: true}}")
    path = scenario_file(tmp_path, probe, "  - latency: {iface: eth0, ms: 5, for: 30s}")
    fake = FakeInjector()
    runner = Runner(loader.load(path), fake, seed=1)
    import threading

    def remove_later() -> None:
        while not fake.open:
            time.sleep(0.01)
        marker.unlink()
    threading.Thread(target=remove_later, daemon=True).start()
    started = time.monotonic()
    result = runner.run()
    assert result.outcome == "aborted" and "abort: true" in result.reason
    assert not fake.open and time.monotonic() - started < 5


def test_a_fault_that_cannot_be_injected_aborts_the_run(tmp_path: Path) -> None:
    path = scenario_file(tmp_path, "  - {name: fine, command: [/bin/true], every: 100ms}", LATENCY)
    result = Runner(loader.load(path), FakeInjector(fail_inject=True), seed=1).run()
    assert result.outcome == "aborted" and "the kernel said no" in result.reason


def test_the_report_counts_detection_and_recovery(tmp_path: Path) -> None:
    marker = tmp_path / "up"
    probe = f"  - {{name: up, command: [test, -e, {marker}], every: 50ms}}"
    path = scenario_file(tmp_path, probe, "  - latency: {iface: eth0, ms: 5, for: 500ms}")
    marker.write_text("")
    fake = FakeInjector()
    import threading

    def flap() -> None:  # "the fault" takes the marker away while it is open
        while not fake.open:
            time.sleep(0.005)
        marker.unlink()
        while fake.open:
            time.sleep(0.005)
        marker.write_text("")
    threading.Thread(target=flap, daemon=True).start()
    scenario = loader.load(path)
    result = Runner(scenario, fake, seed=1).run()
    data = report.build(scenario, [result])
    (found,) = data["runs"][0]["findings"]
    assert found["detected"] and found["time_to_detect"] < 0.2
    assert found["recovered"] and found["recovery_time"] < 0.3
    assert data["summary"]["recovery_rate"] == 1.0
    assert "<svg" in report.html_page(data)
