"""Fuzzing the command line (issue 15): generated argument lists, run in-process through main().

Argument lists come from a grammar mixing valid and invalid pieces: commands,
kinds, each kind's own options with plausible values, sandbox targets and
garbage (unicode, huge numbers, negative durations, repeated or missing
options and values, unknown options, stray words), with --json and --dry-run.
Every target an argument can name is one of the test's sandboxes
(tests/support/fuzz_targets.py: the netns pair, the victim process, the
tmpfs). Every run must end with a documented exit code; an error is exactly
one line ``hostchaos: ...`` on stderr, never a traceback or an internal
error. A fault that is injected is rolled back at once (`rollback --all`),
after which no record is open and the sandbox is as it was. 50 of the inputs
also go through a real ``python -m hostchaos`` subprocess, which must answer
the same way.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from hostchaos.cli import main
from hostchaos.faults import KINDS, fault_class
from hostchaos.faults.options import spec_options
from hostchaos.sandbox import NetnsPair
from tests.support.cli import hostchaos, open_records
from tests.support.fs import tmpfs
from tests.support.fuzz import FUZZ, SLOW, durations, garbage_text, huge_numbers, one_line
from tests.support.fuzz_sandbox import FuzzSandbox
from tests.support.fuzz_targets import PLACEHOLDER, option_values, plausible_options, safe_argv

#: what any input may end with: ok, bad input, precondition, not found, conflict, refused
EXIT_CODES = {0, 2, 3, 4, 5, 6}
VALUES = option_values(PLACEHOLDER)
SPECS = {kind: {o.name: o for o in spec_options(fault_class(kind).spec_type)} for kind in KINDS}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzSandbox]:
    base = tmp_path_factory.mktemp("fuzz-cli")
    with NetnsPair(prefix=f"hcfc{os.getpid() % 1000}") as pair, \
            tmpfs(base / "fill", "16m", "hc-fuzz") as fill, \
            FuzzSandbox(pair, fill) as sandbox:
        sandbox.state_dir = base / "state"
        sandbox.state_dir.mkdir()
        try:
            yield sandbox
        finally:
            code, _, err = run_main(["rollback", "--all"], sandbox)
            assert code == 0, err
        assert open_records(sandbox.state_dir) == []
        sandbox.assert_as_before()
        print(f"\nCLI fuzz: {dict(sandbox.counts)}")


def run_main(argv: list[str], world: FuzzSandbox) -> tuple[int, str, str]:
    """`hostchaos ARGV` in this process, as the console script runs it: (exit, out, err)."""
    runner = CliRunner()
    saved = sys.argv
    with runner.isolation(env={"HOSTCHAOS_STATE_DIR": str(world.state_dir)}) as (out, err, _):
        sys.argv = ["hostchaos", *argv]
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        finally:
            sys.argv = saved
        return code, out.getvalue().decode("utf-8", "replace"), \
            err.getvalue().decode("utf-8", "replace")


# -- the grammar ---------------------------------------------------------------------------
def _tokens(name: str, value: Any, spec: Any, draw: st.DrawFn) -> list[str]:
    flag = f"--{name}"
    if spec is not None and spec.is_flag:
        return [flag] if value is not False else []
    values = value if isinstance(value, list) else [value]
    out: list[str] = []
    for each in values:
        text = str(each)
        out += [f"{flag}={text}"] if draw(st.integers(0, 4)) == 0 else [flag, text]
    return out


stray = st.one_of(garbage_text.filter(lambda t: not t.startswith("-")),
                  st.sampled_from(["--bogus", "--", "-x", "--for", "--ms", "--json", "-h",
                                   "--dry-run", "--no-such=1"]), huge_numbers.map(str))


@st.composite
def inject_argv(draw: st.DrawFn) -> list[str]:
    kind = draw(st.sampled_from(KINDS))
    if draw(st.booleans()):
        options: dict[str, Any] = draw(plausible_options(kind, VALUES))
    else:
        names = draw(st.lists(st.sampled_from(list(SPECS[kind])), max_size=6))
        options = {name: draw(VALUES[name]) for name in names}
    argv = ["inject", kind]
    for name, value in options.items():
        argv += _tokens(name, value, SPECS[kind].get(name), draw)
    dry = draw(st.booleans())
    clean = draw(st.integers(0, 3)) > 0
    if draw(st.integers(0, 3)):
        argv += ["--for", draw(st.sampled_from(["1s", "5s", "30s"]) if clean else durations)]
    if not draw(st.integers(0, 4)):
        argv += ["--lease", draw(st.sampled_from(["1s", "2s"]) if clean else durations)]
    if dry:
        argv.append("--dry-run")
        if not draw(st.integers(0, 5)):
            argv.append("--wait")
    if draw(st.booleans()):
        argv.append("--json")
    for _ in range(draw(st.integers(0, 2)) if not clean else 0):
        argv.insert(draw(st.integers(2, len(argv))), draw(stray))
    if not clean and not draw(st.integers(0, 3)) and len(argv) > 2:
        del argv[draw(st.integers(2, len(argv) - 1))]  # a value or an option goes missing
    return argv


fault_id = st.sampled_from(["LAST", "hc-latency-deadbeef", "a/b", "../x?y", "", "hc-"]) \
    | garbage_text
other_argv = st.one_of(
    st.tuples(st.sampled_from(["status", "extend", "rollback"]), fault_id).map(list),
    st.tuples(st.just("extend"), fault_id, st.just("--for"), durations).map(list),
    st.lists(st.sampled_from(["list", "--all", "--json"]), min_size=1, max_size=3)
    .map(lambda a: ["list", *a[1:]]),
    st.just(["rollback", "--all"]), st.just(["rollback"]), st.just(["sweep", "--json"]),
    st.just(["sweep"]),
    st.tuples(st.just("completion"), st.sampled_from(["bash", "zsh", "fish", "tcsh", ""]))
    .map(list),
    st.sampled_from([["--help"], ["--version"], ["inject"], ["inject", "--help"], [],
                     ["inject", "latencyy"], ["nope"], ["inject", "cpu", "--help"],
                     ["--json"], ["list", "extra"], ["--debug", "--version"]]),
    st.lists(stray, min_size=1, max_size=4),
)
#: kinds this machine can apply (no sch_netem here: the netem kinds end in exit 3)
APPLIES_HERE = ("rate", "cpu", "memory", "pids", "nofile", "disk-fill", "kill", "stop",
                "freeze")


@st.composite
def clean_inject_argv(draw: st.DrawFn) -> list[str]:
    """An inject that should succeed on the sandbox: the kind's plain options, a short --for."""
    from tests.support.fuzz_targets import _base_options

    kind = draw(st.sampled_from(APPLIES_HERE))
    argv = ["inject", kind]
    for name, value in _base_options(PLACEHOLDER)[kind].items():
        argv += _tokens(name, value, SPECS[kind].get(name), draw)
    argv += ["--for", draw(st.sampled_from(["2s", "30s", "5m"]))]
    if draw(st.booleans()):
        argv += ["--lease", "2s"]
    return argv + draw(st.sampled_from([[], ["--json"], ["--dry-run"]]))


argv_strategy = st.one_of(inject_argv(), inject_argv(), inject_argv(), clean_inject_argv(),
                          other_argv)


def _concrete(argv: list[str], world: FuzzSandbox) -> list[str]:
    argv = [world.last_id if a == "LAST" else a for a in argv]
    return safe_argv([PLACEHOLDER_SWAP.get(a, a) for a in argv], world.targets)


PLACEHOLDER_SWAP: dict[str, str] = {}


def judge(argv: list[str], code: int, out: str, err: str, world: FuzzSandbox) -> None:
    assert "Traceback" not in err and "Traceback" not in out, (argv, err)
    assert code in EXIT_CODES, (argv, code, out, err)
    world.counts[f"exit {code}"] += 1
    if os.environ.get("HOSTCHAOS_FUZZ_SHOW"):
        print(f"{time.monotonic():.2f}", code, argv, err.strip()[:200])
    if code != 0:
        one_line(err)
        if "--json" in argv[1:] and out.strip():
            assert "error" in json.loads(out), out


def take_back(argv: list[str], code: int, out: str, world: FuzzSandbox) -> None:
    """Roll back what a successful inject made; then nothing is open and the sandbox is as
    before."""
    if code == 0 and argv[:1] == ["inject"] and "--dry-run" not in argv and "--help" not in \
            argv and "-h" not in argv:
        world.counts[f"injected {argv[1]}"] += 1
        if out.strip().startswith("{"):
            world.last_id = json.loads(out)["id"]
        elif out.strip():
            world.last_id = out.split()[0]
        back, _, err = run_main(["rollback", "--all"], world)
        assert back == 0, err
        world.assert_as_before()
    assert open_records(world.state_dir) == [], argv


@SLOW
@FUZZ
@given(raw=argv_strategy)
def test_any_argument_list_ends_in_success_or_one_line_with_its_exit_code(
        world: FuzzSandbox, raw: list[str]) -> None:
    world.refresh()
    argv = _concrete(raw, world)
    code, out, err = run_main(argv, world)
    judge(argv, code, out, err, world)
    take_back(argv, code, out, world)


def _encodable(argv: list[str]) -> bool:
    try:
        return all("\x00" not in a and os.fsencode(a) is not None for a in argv)
    except UnicodeError:
        return False


@SLOW
@settings(FUZZ, max_examples=50)
@given(raw=argv_strategy)
def test_the_real_command_answers_as_the_in_process_one(world: FuzzSandbox,
                                                        raw: list[str]) -> None:
    world.refresh()
    argv = _concrete(raw, world)
    if not _encodable(argv):
        return
    inner = run_main(argv, world)
    take_back(argv, inner[0], inner[1], world)
    world.refresh()  # the in-process run may have killed the victim: the same input, a live one
    argv = _concrete(raw, world)
    result = hostchaos(*argv, state_dir=world.state_dir, env={"HOSTCHAOS_SOCKET": str(
        Path(world.state_dir) / "no-agent.sock")})
    judge(argv, result.returncode, result.stdout, result.stderr, world)
    take_back(argv, result.returncode, result.stdout, world)
    world.counts["subprocess"] += 1
    assert result.returncode == inner[0], (argv, inner, result.stderr)
    if result.returncode != 0:
        assert one_line(result.stderr).split(":")[0] == one_line(inner[2]).split(":")[0]
