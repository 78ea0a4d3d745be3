"""The fast path through the agent (hostchaos.fastpath) asks exactly what click would ask.

Each command line is read twice: by the fast path, and by the click command
with an agent backend. Both talk to the same recording client, and the
requests they make must be equal, byte for byte in their JSON bodies. Command
lines the fast path must leave to click (help, errors click words itself,
options it does not read) are checked to raise ``Unhandled``. The CLI tests
(test_cli.py and the kinds' CLI tests) then run the real program in agent
mode, which takes this path.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from hostchaos import fastpath
from hostchaos.backend import AgentBackend
from hostchaos.cli import cli
from tests.support.cli import records

VALID = [
    ["inject", "latency", "--iface", "lo", "--ms", "20", "--jitter", "5", "--dst", "10.0.0.1",
     "--dst", "fd00::1", "--dport", "80", "--protocol", "tcp", "--direction", "egress",
     "--for", "30s", "--lease", "10s"],
    ["inject", "latency", "--iface=lo", "--ms=0.5", "--jitter=1", "--distribution", "pareto",
     "--json"],
    ["inject", "loss", "--iface", "lo", "--percent", "5", "--correlation", "25"],
    ["inject", "loss", "--iface", "lo", "--ge", "1,10,100,0", "--no-protect-ssh"],
    ["inject", "corrupt", "--iface", "lo", "--percent", "1.5", "--netns", "hc-test"],
    ["inject", "duplicate", "--iface", "lo", "--percent", "2", "--protect", "10.9.0.0/16"],
    ["inject", "reorder", "--iface", "lo", "--percent", "25", "--ms", "10", "--gap", "5"],
    ["inject", "rate", "--iface", "lo", "--rate", "1mbit", "--burst", "32kb", "--for", "2m"],
    ["inject", "partition", "--iface", "lo", "--host", "192.0.2.1", "--direction", "both",
     "--dry-run"],
    ["inject", "partition", "--iface", "lo", "--src", "192.0.2.0/24", "--dry-run", "--json"],
    ["inject", "cpu", "--pid", "1", "--limit", "50%"],
    ["inject", "memory", "--pid", "1", "--max", "256M", "--high", "200M"],
    ["inject", "pids", "--unit", "nginx.service", "--max", "64"],
    ["inject", "nofile", "--pid", "1", "--soft", "64", "--hard", "128"],
    ["inject", "disk-fill", "--path", "/tmp", "--size", "1M"],
    ["inject", "kill", "--name", "nginx", "--count", "1", "--interval", "5s"],
    ["inject", "stop", "--pid", "1"],
    ["inject", "freeze", "--cgroup", "/hc-test", "--for", "5s"],
    ["inject", "clock", "--pid", "1", "--offset", "-5m"],
    ["inject", "clock", "--pid", "1", "--offset=-90s", "--monotonic"],
    ["extend", "hc-loss-0123abcd"],
    ["extend", "hc-loss-0123abcd", "--for", "90s", "--json"],
    ["rollback", "hc-loss-0123abcd"],
    ["rollback", "hc-loss/../x?y", "--json"],
    ["extend", "hc a%2F~b_c.d#e&f+g"],  # percent-encoded as urllib.parse.quote(safe="") does
    ["rollback", "--all"],
    ["rollback", "--all", "--json"],
]

UNHANDLED = [
    ["inject", "latency", "--help"],
    ["inject", "latency", "-h"],
    ["--json", "inject", "latency", "--iface", "lo", "--ms", "5"],
    ["inject", "latency", "--iface", "lo"],  # click names the missing --ms
    ["inject", "latency", "--iface", "lo", "--ms", "abc"],  # click: not a valid float
    ["inject", "latency", "--iface", "lo", "--ms", "5", "--ms", "6"],
    ["inject", "latency", "--iface", "lo", "--ms", "5", "--wait"],
    ["inject", "latency", "--iface", "lo", "--ms", "5", "--for", "-1s"],
    ["inject", "latency", "--iface", "lo", "--ms", "5", "--bogus"],
    ["inject", "latency", "--iface", "lo", "--ms", "5", "extra"],
    ["inject", "latency", "--iface", "lo", "--ms"],
    ["inject", "latency", "--iface", "lo", "--ms", "5", "--direction", "sideways"],
    ["inject", "latency", "--iface", "lo", "--ms", "5", "--force=yes"],
    ["inject", "pids", "--pid", "1", "--max", "1.5"],  # click: not a valid integer
    ["inject", "nosuchkind", "--iface", "lo"],
    ["inject", "latency", "--", "--iface", "lo", "--ms", "5"],
    ["extend"],
    ["extend", "a", "b"],
    ["extend", "a", "--json", "--json"],
    ["rollback"],
    ["rollback", "a", "--all"],
    ["rollback", "a", "b"],
    ["rollback", "hc-lössß"],  # not ASCII: no fault id is; click's path answers it
    ["list"],
    ["status", "hc-loss-0123abcd"],
    ["sweep"],
    ["inject"],
]


class _Asked(Exception):
    pass


class RecordingClient:
    """An agent client that records the one request it is given and stops there."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, str, str, Any]] = []

    def call(self, method: str, path: str, body: Any = None, ok: tuple[int, ...] = (200,)
             ) -> Any:
        self.asked.append((method, path, json.dumps(body, sort_keys=True), tuple(ok)))
        raise _Asked

    def request(self, method: str, path: str, body: Any = None) -> Any:
        self.asked.append((method, path, json.dumps(body, sort_keys=True), "request"))
        raise _Asked


def asked_by_click(argv: list[str], monkeypatch: pytest.MonkeyPatch, state_dir: Path
                   ) -> list[tuple[str, str, str, Any]]:
    client = RecordingClient()
    monkeypatch.setattr("hostchaos.backend.get_backend", lambda: AgentBackend(client))
    result = CliRunner().invoke(cli, argv, env={"HOSTCHAOS_STATE_DIR": str(state_dir)})
    # the group turns any exception into one line; this one stopped the command at the ask
    assert "internal error: _Asked" in result.output, result.output
    return client.asked


def asked_by_fastpath(argv: list[str]) -> list[tuple[str, str, str, Any]]:
    client = RecordingClient()
    with pytest.raises(_Asked):
        fastpath.parse(argv)(AgentBackend(client))  # type: ignore[arg-type]
    return client.asked


@pytest.mark.parametrize("argv", VALID, ids=[" ".join(a)[:60] for a in VALID])
def test_the_fast_path_asks_the_agent_what_click_asks(
        argv: list[str], monkeypatch: pytest.MonkeyPatch, state_dir: Path) -> None:
    fast = asked_by_fastpath(argv)
    assert len(fast) == 1
    assert fast == asked_by_click(argv, monkeypatch, state_dir)


@pytest.mark.parametrize("argv", UNHANDLED, ids=[" ".join(a)[:60] for a in UNHANDLED])
def test_what_the_fast_path_does_not_read_goes_to_click(argv: list[str]) -> None:
    with pytest.raises(fastpath.Unhandled):
        fastpath.parse(argv)


def test_every_kind_is_sampled_and_the_table_is_current() -> None:
    from hostchaos import faults

    assert {argv[1] for argv in VALID if argv[0] == "inject"} == set(faults.KINDS)
    committed = Path(fastpath.__file__).with_name("fastpath_options.py").read_text()
    assert committed == fastpath.table_source(), (
        "regenerate: python -m hostchaos.fastpath > hostchaos/fastpath_options.py")


def in_process(argv: list[str], state_dir: Path) -> tuple[int | None, str, str]:
    """A real `python -m hostchaos ARGV` with no agent: (exit code, stdout, stderr)."""
    done = subprocess.run([sys.executable, "-m", "hostchaos", *argv], capture_output=True,
                          text=True, env={**os.environ, "HOSTCHAOS_STATE_DIR": str(state_dir)})
    return done.returncode, done.stdout, done.stderr


def by_click(argv: list[str], state_dir: Path) -> tuple[int | None, str, str]:
    """The same command line, through click alone."""
    done = subprocess.run([sys.executable, "-c", "from hostchaos.cli import main; main()",
                           *argv], capture_output=True, text=True,
                          env={**os.environ, "HOSTCHAOS_STATE_DIR": str(state_dir)})
    return done.returncode, done.stdout, done.stderr


@pytest.mark.parametrize("as_json", [[], ["--json"]], ids=["text", "json"])
def test_without_an_agent_the_fast_path_does_what_click_does(
        state_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        as_json: list[str]) -> None:
    """In-process, with the engine: the same output, exit codes and effects as click.

    (The id and the deadline differ between two injections; they are replaced.)
    """
    monkeypatch.setenv("HOSTCHAOS_SOCKET", str(tmp_path / "nobody.sock"))
    victim = subprocess.Popen(["sleep", "60"])
    try:
        def soft_limit() -> int:
            for line in Path(f"/proc/{victim.pid}/limits").read_text().splitlines():
                if line.startswith("Max open files"):
                    return int(line.split()[3])
            raise AssertionError("no open-files line")

        before = soft_limit()
        results = []
        for run in (in_process, by_click):
            inject = ["inject", "nofile", "--pid", str(victim.pid), "--soft", "64", "--for",
                      "1m", *as_json]
            code, out, err = run(inject, state_dir)
            assert code == 0, err
            assert soft_limit() == 64
            fault_id = (json.loads(out)["id"] if as_json else out.split()[0])
            dry = run([*inject, "--dry-run"], state_dir)
            twice = run(inject, state_dir)  # the same target: refused, naming the first
            extended = run(["extend", fault_id, "--for", "2m", *as_json], state_dir)
            back = run(["rollback", fault_id, *as_json], state_dir)
            assert soft_limit() == before
            unknown = run(["rollback", "hc-nofile-00000000", *as_json], state_dir)
            every = run(["rollback", "--all", *as_json], state_dir)
            results.append(_without_times(
                repr([(code, out, err), dry, twice, extended, back, unknown, every])))
        assert results[0] == results[1]
        assert "already carries fault" in results[0]
    finally:
        victim.kill()
        victim.wait()


def _without_times(text: str) -> str:
    import re

    text = re.sub(r"hc-nofile-[0-9a-f]{8}", "ID", text)
    text = re.sub(r"\d{4}-\d\d-\d\dT[0-9:.+]+", "TIME", text)
    text = re.sub(r"\d\d:\d\d:\d\d", "HH:MM:SS", text)
    # the warden may be another process the second time; seconds_left ticks
    return re.sub(r'"(holder_pid|seconds_left)": [0-9.]+', r'"\1": N', text)


#: what the fast path through the agent must not load (each is milliseconds of a command
#: whose target is 60 ms: docs/benchmarks.md); without an agent, only click is excluded
HEAVY_FOR_THE_THIN_CLIENT = ["re", "enum", "json", "socket", "typing", "pathlib",
                             "dataclasses", "click", "urllib", "inspect"]

PROBE = """
import io, sys
from hostchaos import fastpath
pid, heavy = sys.argv[1], sys.argv[2].split(",")
real_stdout, sys.stdout = sys.stdout, io.StringIO()
codes = [fastpath.run(["inject", "nofile", "--pid", pid, "--soft", "64", "--for", "5m"])]
fault_id = sys.stdout.getvalue().split()[0]
codes.append(fastpath.run(["extend", fault_id, "--for", "90s"]))
codes.append(fastpath.run(["rollback", fault_id]))
codes.append(fastpath.run(["rollback", "--all"]))
codes.append(fastpath.run(["rollback", "hc-nofile-00000000"]))
loaded = sorted({m.split(".")[0] for m in sys.modules} & set(heavy))
print(repr({"codes": codes, "loaded": loaded}), file=real_stdout)
"""


def run_probe(state_dir: Path, socket_path: Path, heavy: list[str]) -> dict[str, Any]:
    """Inject, extend, roll back, roll back all, roll back an unknown id: one real process."""
    victim = subprocess.Popen(["sleep", "60"])
    try:
        done = subprocess.run(
            [sys.executable, "-c", PROBE, str(victim.pid), ",".join(heavy)],
            capture_output=True, text=True, check=True,
            env={**os.environ, "HOSTCHAOS_STATE_DIR": str(state_dir),
                 "HOSTCHAOS_SOCKET": str(socket_path)})
        limits = Path(f"/proc/{victim.pid}/limits").read_text()
    finally:
        victim.kill()
        victim.wait()
    result: dict[str, Any] = ast.literal_eval(done.stdout)
    assert "not found" in done.stderr, done.stderr
    assert "64 " not in limits.split("Max open files")[1].split("\n")[0]  # rolled back
    return result


def test_through_the_agent_the_fast_path_loads_only_what_it_needs(
        state_dir: Path, tmp_path: Path) -> None:
    from tests.support.agent import running_agent

    socket_path = tmp_path / "agent" / "hostchaos.sock"
    with running_agent(state_dir, socket_path, log=tmp_path / "agent.log") as agent:
        result = run_probe(state_dir, socket_path, HEAVY_FOR_THE_THIN_CLIENT)
        (record,) = records(state_dir)
        assert record["holder"]["pid"] == agent.pid  # the agent's warden held it: it did it
    assert result == {"codes": [0, 0, 0, 0, 4], "loaded": []}


def test_without_an_agent_the_fast_path_still_skips_click(state_dir: Path, tmp_path: Path
                                                          ) -> None:
    result = run_probe(state_dir, tmp_path / "nobody.sock", ["click"])
    assert result == {"codes": [0, 0, 0, 0, 4], "loaded": []}
    (record,) = records(state_dir)
    assert record["end_reason"] == "requested" and record["state"] == "rolled-back"


@given(st.text())
def test_fault_ids_are_quoted_as_urllib_quotes_them(text: str) -> None:
    from urllib.parse import quote

    from hostchaos.backend import quote as quote_without_urllib

    assert quote_without_urllib(text) == quote(text, safe="")
