"""Fuzzing scenario files: `hostchaos run FILE --dry-run` on generated YAML (issue 15).

Documents are built from the scenario grammar (hostchaos/scenario/model.py and
the kinds' own option names) and then mutated: wrong types, unknown keys and
kinds, bad durations, deep nesting, bare yes/no, anchors and aliases, YAML
syntax garbage, bytes that are not UTF-8, big files. Every input must end in
success (exit 0) or one line ``hostchaos: FILE...`` with exit 2: never a
traceback, an internal error or another exit code. --dry-run looks nothing up
and changes nothing, so target names here are never used on the host.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from hostchaos.cli import cli
from hostchaos.faults import KINDS, fault_class
from hostchaos.faults.options import spec_options
from hostchaos.scenario import loader
from tests.support.fuzz import FUZZ, SLOW, durations, garbage_text, huge_numbers, one_line

#: plausible values for a kind's option, by option name (dry-run: never looked up)
VALUES: dict[str, list[Any]] = {
    "iface": ["hcfz0", "veth-x"], "netns": ["hcfz-ns"], "pid": [4242, "4242", "${pid}"],
    "ms": [100, 0.5, "100"], "percent": [10, 50.5, 100], "rate": ["1mbit", "10kbit", 1000],
    "limit": [0.5, "1", 2], "max": [1 << 20, "64M", 10], "soft": [64], "hard": [128],
    "path": ["/tmp/hcfz-nowhere"], "size": ["10M", 1 << 20], "offset": ["+5m", "-30s", 60],
    "direction": ["egress", "ingress", "both"], "protocol": ["tcp", "udp", "icmp"],
    "dst": ["10.0.0.0/8", ["198.18.0.1", "fd00::/8"]], "dport": [80, 65535],
    "signal": ["KILL", "TERM", "STOP"], "count": [1, 3], "name": ["hcfz-victim"],
}
KIND_OPTIONS = {kind: [o.name for o in spec_options(fault_class(kind).spec_type)]
                for kind in KINDS}

scalars = st.one_of(garbage_text, huge_numbers, st.booleans(), st.none(), durations,
                    st.floats(allow_nan=True, allow_infinity=True))
anything = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(garbage_text, inner, max_size=4)),
    max_leaves=12)


@st.composite
def fault_step(draw: st.DrawFn, steps: st.SearchStrategy[Any]) -> dict[str, Any]:
    kind = draw(st.sampled_from(KINDS) | st.sampled_from(["latencyy", "Latency", "", "wait "])
                | garbage_text)
    names = KIND_OPTIONS.get(kind) or ["iface", "ms"]
    body: dict[str, Any] = {}
    for name in draw(st.lists(st.sampled_from(names), max_size=5, unique=True)):
        body[name] = draw(st.sampled_from(VALUES.get(name, [1, "x"])) | anything
                          if draw(st.booleans()) else st.sampled_from(VALUES.get(name, [1])))
    if draw(st.integers(0, 9)):
        body["for"] = draw(durations)
    if not draw(st.integers(0, 15)):
        body[draw(garbage_text | st.just("lease"))] = draw(anything)
    return {kind: body if draw(st.integers(0, 12)) else draw(anything)}


def steps_of(depth: int) -> st.SearchStrategy[Any]:
    wait = st.builds(lambda d: {"wait": d}, durations)
    if depth <= 0:
        return st.lists(wait | fault_step(st.nothing()), min_size=0, max_size=3)
    inner = steps_of(depth - 1)
    nested = st.builds(lambda k, s: {k: s}, st.sampled_from(["parallel", "random"]), inner)
    return st.lists(wait | fault_step(inner) | nested | anything, min_size=0, max_size=4)


probe = st.fixed_dictionaries({}, optional={
    "name": garbage_text | st.just("p"),
    "command": st.one_of(st.just(["true"]), st.just({"argv": ["false"], "exit": 1}), anything),
    "http": st.one_of(st.just({"url": "http://127.0.0.1:1/", "status": 200}), anything),
    "tcp": st.one_of(st.just({"host": "127.0.0.1", "port": 1}), anything),
    "process": st.one_of(st.just({"pid": 4242}), st.just({"name": "x"}), anything),
    "every": durations, "timeout": durations, "abort": anything,
    "when": st.one_of(st.sampled_from(["before", "during", "after"]), anything),
    "netns": garbage_text,
})

document = st.fixed_dictionaries({}, optional={
    "name": st.just("fuzz") | scalars,
    "description": garbage_text | anything,
    "params": st.dictionaries(st.sampled_from(["pid", "iface", "x"]) | garbage_text,
                              garbage_text | huge_numbers, max_size=3) | anything,
    "settings": st.fixed_dictionaries({}, optional={
        "consecutive": huge_numbers | garbage_text, "steady-timeout": durations,
        "recovery-timeout": durations, "lease": durations}) | anything,
    "probes": st.lists(probe, max_size=3) | anything,
    "steps": steps_of(2) | anything,
    "bogus": anything,
})

#: text-level mutations of a dumped document
TEMPLATES = [
    "name: x\nsteps:\n  - wait: yes\n",
    "name: no\nsteps: [{wait: 1s}]\n",
    "base: &b {iface: hcfz0, ms: 5, for: 1s}\nname: x\nsteps:\n  - latency: *b\n",
    "name: x\nsteps:\n  - latency: &b {iface: hcfz0, ms: 5, for: 1s}\n  - latency: *b\n",
    "name: x\nsteps: &s [{wait: 1s}, *s]\n",
    "name: x\nsteps:\n  - latency: {<<: {iface: hcfz0}, ms: 5, for: 1s}\n",
    "name: !!python/object:os.system x\nsteps: [{wait: 1s}]\n",
    "name: x\nsteps: [{wait: !!float 1}]\n",
    "name: x\nname: y\nsteps: [{wait: 1s}]\n",
    "name: x\nsteps:\n\t- wait: 1s\n",
    "%YAML 1.1\n---\nname: x\nsteps: [{wait: 1s}]\n...\n",
    "name: x\nsteps: [{wait: 1s}]\n---\nname: y\n",
    "? [a, b]\n: c\n",
    "[1, 2, 3]\n",
    "\"just a string\"\n",
    "name: x\nsteps: [{wait: 1s}\n",
    "name: x\nsteps: " + "[" * 600 + "]" * 600 + "\n",
    "name: x\nsteps:\n" + "".join("  " * i + "- parallel:\n" for i in range(1, 300))
    + "  " * 300 + "- wait: 1s\n",
    "name: x\nsteps:\n" + "  - wait: 1s\n" * 2000,
    "name: x\nsteps:\n  - random:\n" + "      - wait: 1ms\n" * 1000,
]


@st.composite
def scenario_bytes(draw: st.DrawFn) -> bytes:
    how = draw(st.integers(0, 9))
    if how == 0:
        return draw(st.sampled_from(TEMPLATES)).encode()
    if how == 1:
        return draw(st.binary(max_size=200))
    text = yaml.safe_dump(draw(document), allow_unicode=draw(st.booleans()),
                          default_flow_style=draw(st.sampled_from([None, True, False])))
    if how in (2, 3):  # splice garbage into the text
        at = draw(st.integers(0, len(text)))
        cut = draw(st.integers(0, 10))
        text = text[:at] + draw(garbage_text) + text[at + cut:]
    raw = text.encode("utf-8", "surrogatepass")
    if how == 4:
        raw = raw[:draw(st.integers(0, len(raw)))]
    return raw


def dry_run(path: Path, *extra: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["run", str(path), "--dry-run", *extra])
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        repr(result.exception))
    return result.exit_code, result.stdout, result.stderr


def judge(path: Path, code: int, out: str, err: str) -> None:
    assert code in (0, 2), (code, out, err)
    if code == 0:
        assert err == "" and "nothing was changed" in out, (out, err)
        return
    rest = one_line(err)
    assert rest.startswith(f"{path}:") or rest.startswith("--set "), rest


@SLOW
@FUZZ
@given(raw=scenario_bytes(), sets=st.lists(st.sampled_from(["pid=1234", "iface=x", "x",
                                                           "=v", "nope=1", "x=${x}"]),
                                           max_size=2), as_json=st.booleans())
def test_any_scenario_file_is_a_plan_or_one_line_with_exit_2(
        raw: bytes, sets: list[str], as_json: bool, tmp_path_factory: Any) -> None:
    path = tmp_path_factory.getbasetemp() / "fuzz-scenario.yaml"
    path.write_bytes(raw)
    extra = [f"--set={s}" for s in sets] + (["--json"] if as_json else [])
    code, out, err = dry_run(path, *extra)
    if as_json and code == 0:
        assert err == "", err
        return
    if as_json:
        assert err.count("\n") == 1 and err.startswith("hostchaos: "), err
        assert "Traceback" not in err and "internal error" not in err
        assert code == 2
        return
    judge(path, code, out, err)


def test_a_file_that_is_not_utf8_is_one_line_naming_its_line(tmp_path: Path) -> None:
    """Found by the fuzzing: a byte that is not UTF-8 was an internal error (exit 1)."""
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"name: caf\xe9\nsteps: [{wait: 1s}]\n")
    code, _, err = dry_run(path)
    assert code == 2
    assert one_line(err) == f"{path}:1: not UTF-8 text (byte 0xe9): save the scenario as UTF-8"


def test_deep_nesting_is_one_line_not_a_recursion_error(tmp_path: Path) -> None:
    """Found by the fuzzing: 300 nested parallel: steps (or 600 nested lists) raised
    RecursionError, shown as an internal error with exit 1."""
    for text in (TEMPLATES[-4], TEMPLATES[-3]):
        path = tmp_path / "deep.yaml"
        path.write_text(text)
        code, _, err = dry_run(path)
        assert code == 2
        assert one_line(err).startswith(f"{path}: nested too deeply to read")
    try:
        loader.load(path)
    except Exception as exc:  # the library raises the same one-line SpecError
        assert type(exc).__name__ == "SpecError"


def test_a_control_character_is_one_line_naming_its_line(tmp_path: Path) -> None:
    """Found by the fuzzing: a NUL byte made PyYAML's reader raise outside the loader's
    handler (an internal error, exit 1); later in a file its message took two lines."""
    path = tmp_path / "nul.yaml"
    for raw, line in ((b"\x00", 1), (b"name: x\nsteps: [{wait: 1s}]\n" + b"#" * 9000 + b"\x01",
                                     3)):
        path.write_bytes(raw)
        code, _, err = dry_run(path)
        assert code == 2
        assert one_line(err).startswith(f"{path}:{line}: YAML: character U+000")
