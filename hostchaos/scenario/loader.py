"""Read a scenario file: YAML, checked whole before anything runs.

Every error is one line, ``FILE:LINE: KEY: reason`` (exit 2), and nothing is
injected. Fault steps use the same kind names and option names as the
command line (``hostchaos inject <kind> --help``), checked by the kinds' own
specs. ``${name}`` in a string is replaced by a parameter (``params:`` gives
defaults, ``hostchaos run --set name=value`` overrides them).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from hostchaos.errors import SpecError
from hostchaos.scenario.model import (
    PHASES,
    FaultStep,
    ParallelStep,
    Probe,
    RandomStep,
    Scenario,
    Step,
    WaitStep,
)

PROBE_KINDS = ("command", "http", "tcp", "process")
_PARAM = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_-]*)\}")
_TOP = {"name", "description", "params", "settings", "probes", "steps"}
_SETTINGS = {"consecutive", "steady-timeout", "recovery-timeout", "lease"}
_PROBE_COMMON = {"name", "every", "timeout", "when", "abort", "netns", *PROBE_KINDS}
_PROBE_SETTINGS = {
    "command": {"argv", "exit"},
    "http": {"url", "status", "max-latency", "method", "keep-alive"},
    "tcp": {"host", "port", "max-latency"},
    "process": {"pid", "name"},
}


class _Mapping(dict[str, Any]):
    """A YAML mapping that remembers the line of each key."""

    line = 0
    lines: dict[str, int]


class _Sequence(list[Any]):
    line = 0
    lines: list[int]


class _Loader(yaml.SafeLoader):
    pass


def _mapping(loader: _Loader, node: yaml.MappingNode) -> _Mapping:
    out = _Mapping()
    out.line = node.start_mark.line + 1
    out.lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, str):
            raise SpecError(f"{loader.name}:{key_node.start_mark.line + 1}: keys must be "
                            f"text, not {key!r}")
        if key in out:
            raise SpecError(f"{loader.name}:{key_node.start_mark.line + 1}: {key}: given twice")
        out[key] = loader.construct_object(value_node, deep=True)
        out.lines[key] = key_node.start_mark.line + 1
    return out


def _sequence(loader: _Loader, node: yaml.SequenceNode) -> _Sequence:
    out = _Sequence(loader.construct_object(child, deep=True) for child in node.value)
    out.line = node.start_mark.line + 1
    out.lines = [child.start_mark.line + 1 for child in node.value]
    return out


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _sequence)


class _Reader:
    """Walks the loaded document, turning each problem into FILE:LINE: KEY: reason."""

    def __init__(self, path: str, params: dict[str, str]) -> None:
        self.path = path
        self.params = params

    def fail(self, line: int, key: str, reason: str) -> SpecError:
        return SpecError(f"{self.path}:{line}: {key}: {reason}")

    def where(self, line: int) -> str:
        return f"{self.path}:{line}"

    def mapping(self, value: Any, line: int, key: str, allowed: set[str]) -> _Mapping:
        if not isinstance(value, _Mapping):
            raise self.fail(line, key, f"must be a mapping, not {_kind(value)}")
        unknown = sorted(set(value) - allowed)
        if unknown:
            raise self.fail(value.lines[unknown[0]], f"{key}.{unknown[0]}",
                            f"unknown key (known: {', '.join(sorted(allowed))})")
        return value

    def text(self, value: Any, line: int, key: str) -> str:
        if isinstance(value, bool):
            raise self.fail(line, key, "must be text, not true/false (YAML reads yes, no, on, "
                                       "off, true and false as those: quote the word)")
        if not isinstance(value, str | int | float):
            raise self.fail(line, key, f"must be text, not {_kind(value)}")
        return self.expand(str(value), line, key)

    def expand(self, text: str, line: int, key: str) -> str:
        def one(match: re.Match[str]) -> str:
            name = match[1]
            if name not in self.params:
                raise self.fail(line, key, f"${{{name}}} is not a parameter (give it under "
                                "params: or with --set)")
            return self.params[name]
        return _PARAM.sub(one, text)

    def substituted(self, value: Any, line: int, key: str) -> Any:
        """``value`` with parameters expanded in every string inside it."""
        if isinstance(value, str):
            return self.expand(value, line, key)
        if isinstance(value, list):
            return [self.substituted(v, line, key) for v in value]
        if isinstance(value, dict):
            return {k: self.substituted(v, line, key) for k, v in value.items()}
        return value

    def duration(self, value: Any, line: int, key: str) -> float:
        from hostchaos.quantities import parse_duration

        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise self.fail(line, key, f"must be a duration such as 500ms or 30s, not "
                                       f"{_kind(value)}")
        try:
            return parse_duration(self.expand(str(value), line, key), what=key)
        except SpecError as exc:
            raise self.fail(line, key, str(exc)) from None

    def integer(self, value: Any, line: int, key: str, low: int, high: int) -> int:
        if isinstance(value, str):
            value = self.expand(value, line, key)
            try:
                value = int(value)
            except ValueError:
                raise self.fail(line, key, f"must be a whole number, not {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(line, key, f"must be a whole number, not {_kind(value)}")
        if not low <= value <= high:
            raise self.fail(line, key, f"must be from {low} to {high}, not {value}")
        return value

    def flag(self, value: Any, line: int, key: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(line, key, f"must be true or false, not {_kind(value)}")
        return value

    # -- steps ------------------------------------------------------------------------
    def steps(self, value: Any, line: int, key: str) -> tuple[Step, ...]:
        if not isinstance(value, _Sequence) or not value:
            raise self.fail(line, key, "must be a non-empty list of steps")
        return tuple(self.step(item, value.lines[i], f"{key}[{i}]")
                     for i, item in enumerate(value))

    def step(self, value: Any, line: int, key: str) -> Step:
        from hostchaos.faults import KINDS

        if not isinstance(value, _Mapping) or len(value) != 1:
            raise self.fail(line, key, "a step is one of: a fault (KIND: {options, for: ...}), "
                                       "wait: DURATION, parallel: [steps], random: [steps]")
        ((name, body),) = value.items()
        line = value.lines[name]
        here = f"{key}.{name}"
        if name == "wait":
            return WaitStep(self.duration(body, line, here), self.where(line))
        if name == "parallel":
            return ParallelStep(self.steps(body, line, here), self.where(line))
        if name == "random":
            return RandomStep(self.steps(body, line, here), self.where(line))
        if name not in KINDS:
            raise self.fail(line, here, f"unknown step or fault kind (kinds: "
                                        f"{', '.join(KINDS)}; steps: wait, parallel, random)")
        return self.fault(name, body, line, here)

    def fault(self, kind: str, body: Any, line: int, key: str) -> FaultStep:
        from hostchaos.faults.from_options import spec_from_options

        if not isinstance(body, _Mapping):
            raise self.fail(line, key, f"must be a mapping of {kind} options and for:, not "
                                       f"{_kind(body)}")
        if "for" not in body:
            raise self.fail(body.line, f"{key}.for", "missing: every fault says how long it "
                                                     "lasts (for: 30s)")
        duration = self.duration(body["for"], body.lines["for"], f"{key}.for")
        if "lease" in body:
            raise self.fail(body.lines["lease"], f"{key}.lease", "not used in scenarios: the "
                            "runner holds a lease on every fault (settings: lease)")
        options = {k: self.substituted(v, body.lines[k], f"{key}.{k}")
                   for k, v in body.items() if k != "for"}
        try:
            spec = spec_from_options(kind, options)
        except SpecError as exc:
            bad = _option_named(str(exc), options)
            at = body.lines.get(bad, body.line) if bad else body.line
            raise self.fail(at, f"{key}.{bad}" if bad else key, str(exc)) from None
        return FaultStep(kind, spec, duration, self.where(line), options)

    # -- probes ------------------------------------------------------------------------
    def probes(self, value: Any, line: int) -> tuple[Probe, ...]:
        if value is None:
            return ()
        if not isinstance(value, _Sequence):
            raise self.fail(line, "probes", f"must be a list, not {_kind(value)}")
        out = []
        for i, item in enumerate(value):
            out.append(self.probe(item, value.lines[i], f"probes[{i}]"))
        names = [p.name for p in out]
        for name in names:
            if names.count(name) > 1:
                raise self.fail(line, "probes", f"two probes are named {name!r}")
        return tuple(out)

    def probe(self, value: Any, line: int, key: str) -> Probe:
        body = self.mapping(value, line, key, _PROBE_COMMON)
        kinds = [k for k in PROBE_KINDS if k in body]
        if len(kinds) != 1:
            raise self.fail(body.line, key, f"give exactly one of: {', '.join(PROBE_KINDS)}")
        kind = kinds[0]
        name = self.text(body.get("name", f"{kind}-{line}"), body.lines.get("name", line),
                         f"{key}.name")
        raw = body[kind]
        if kind == "command" and isinstance(raw, _Sequence):
            raw = _Mapping(argv=raw)
            raw.line, raw.lines = body.lines[kind], {"argv": body.lines[kind]}
        settings = self.probe_settings(kind, raw, body.lines[kind], f"{key}.{kind}")
        when = body.get("when", list(PHASES))
        when_line = body.lines.get("when", line)
        if isinstance(when, str):
            when = [when]
        if not isinstance(when, list) or not when or any(w not in PHASES for w in when):
            raise self.fail(when_line, f"{key}.when", f"must list some of: {', '.join(PHASES)}")
        every = self.duration(body.get("every", "500ms"), body.lines.get("every", line),
                              f"{key}.every")
        if every < 0.05:
            raise self.fail(body.lines.get("every", line), f"{key}.every", "at least 50ms")
        timeout = self.duration(body.get("timeout", "2s"), body.lines.get("timeout", line),
                                f"{key}.timeout")
        netns = body.get("netns")
        if netns is not None:
            netns = self.text(netns, body.lines["netns"], f"{key}.netns")
            if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", netns):
                raise self.fail(body.lines["netns"], f"{key}.netns",
                                "a network namespace name (ip netns list)")
        abort = self.flag(body.get("abort", False), body.lines.get("abort", line),
                          f"{key}.abort")
        return Probe(name, kind, settings, every=every, timeout=timeout,
                     phases=tuple(p for p in PHASES if p in when), abort=abort, netns=netns,
                     where=self.where(line))

    def probe_settings(self, kind: str, raw: Any, line: int, key: str) -> dict[str, Any]:
        body = self.mapping(raw, line, key, _PROBE_SETTINGS[kind])
        at = body.lines

        def get(name: str) -> tuple[Any, int, str]:
            return body[name], at[name], f"{key}.{name}"

        out: dict[str, Any] = {}
        if kind == "command":
            if "argv" not in body:
                raise self.fail(body.line, f"{key}.argv", "missing: the program and its "
                                                          "arguments, as a list")
            argv, argv_line, argv_key = get("argv")
            if not isinstance(argv, list) or not argv:
                raise self.fail(argv_line, argv_key, "must be a non-empty list (no shell runs "
                                                     "it: one item per argument)")
            out["argv"] = [self.text(a, argv_line, argv_key) for a in argv]
            out["exit"] = self.integer(body.get("exit", 0), at.get("exit", line), f"{key}.exit",
                                       0, 255)
        elif kind == "http":
            if "url" not in body:
                raise self.fail(body.line, f"{key}.url", "missing")
            url = self.text(*get("url"))
            if not re.match(r"https?://[^/\s]+", url):
                raise self.fail(at["url"], f"{key}.url", f"{url!r} is not an http(s) URL")
            out["url"] = url
            out["status"] = self.integer(body.get("status", 200), at.get("status", line),
                                         f"{key}.status", 100, 599)
            out["method"] = self.text(body.get("method", "GET"), at.get("method", line),
                                      f"{key}.method").upper()
            out["keep-alive"] = self.flag(body.get("keep-alive", True),
                                          at.get("keep-alive", line), f"{key}.keep-alive")
        elif kind == "tcp":
            for name in ("host", "port"):
                if name not in body:
                    raise self.fail(body.line, f"{key}.{name}", "missing")
            out["host"] = self.text(*get("host"))
            out["port"] = self.integer(body["port"], at["port"], f"{key}.port", 1, 65535)
        else:
            if ("pid" in body) == ("name" in body):
                raise self.fail(body.line, key, "give exactly one of: pid, name")
            if "pid" in body:
                out["pid"] = self.integer(body["pid"], at["pid"], f"{key}.pid", 1, 2**22)
            else:
                out["name"] = self.text(*get("name"))
        if "max-latency" in body:
            out["max-latency"] = self.duration(*get("max-latency"))
        return out


def _option_named(message: str, options: Mapping[str, Any]) -> str | None:
    """Which of ``options`` a kind's error message is about, if it says."""
    unknown = re.search(r"option\(s\): ([^ (]+)", message)
    if unknown:
        first = unknown[1].split(",")[0]
        if first in options:
            return first
    for name in options:
        if re.search(rf"--{re.escape(name)}(?![\w-])", message):
            return name
    for name in options:
        if re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", message):
            return name
    return None


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    return {str: "text", int: "a number", float: "a number", bool: "true/false",
            _Mapping: "a mapping", _Sequence: "a list"}.get(type(value), type(value).__name__)


def load(path: str | Path, overrides: Mapping[str, str] | None = None) -> Scenario:
    """The scenario in ``path``, checked; SpecError ``FILE:LINE: KEY: reason`` otherwise."""
    name = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise SpecError(f"{name}: cannot read the scenario: {exc.strerror}") from None
    try:
        text = data.decode()
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise SpecError(f"{name}:{line}: not UTF-8 text (byte {data[exc.start]:#04x}): save "
                        "the scenario as UTF-8") from None
    try:
        return _load(name, text, overrides)
    except RecursionError:
        raise SpecError(f"{name}: nested too deeply to read: flatten the steps (a parallel: "
                        "or random: inside another is fine a few levels deep)") from None


def _load(name: str, text: str, overrides: Mapping[str, str] | None) -> Scenario:
    try:
        loader = _Loader(text)
    except yaml.reader.ReaderError as exc:
        raise _bad_character(name, text, exc) from None
    loader.name = name
    try:
        document = loader.get_single_data()
    except yaml.reader.ReaderError as exc:
        raise _bad_character(name, text, exc) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 0
        raise SpecError(f"{name}:{line}: YAML syntax: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise SpecError(f"{name}: YAML: {' '.join(str(exc).split())}") from None
    finally:
        loader.dispose()
    if not isinstance(document, _Mapping):
        raise SpecError(f"{name}:1: the scenario must be a mapping with name, probes and steps")
    reader = _Reader(name, {})
    reader.mapping(document, 1, "scenario", _TOP)
    params = document.get("params") or {}
    if not isinstance(params, dict):
        raise reader.fail(document.lines["params"], "params", "must be a mapping")
    reader.params = {str(k): str(v) for k, v in params.items()}
    for key in overrides or {}:
        if key not in reader.params:
            raise SpecError(f"{name}: --set {key}: not a parameter of this scenario (params: "
                            f"{', '.join(sorted(reader.params)) or 'none'})")
    reader.params.update(overrides or {})
    if "name" not in document:
        raise reader.fail(1, "name", "missing")
    if "steps" not in document:
        raise reader.fail(1, "steps", "missing")
    settings = reader.mapping(document.get("settings") or _empty(), document.lines.get(
        "settings", 1), "settings", _SETTINGS)
    sl = settings.lines if settings else {}
    kwargs: dict[str, Any] = {}
    if "consecutive" in settings:
        kwargs["consecutive"] = reader.integer(settings["consecutive"], sl["consecutive"],
                                               "settings.consecutive", 1, 100)
    for key, field in (("steady-timeout", "steady_timeout"),
                       ("recovery-timeout", "recovery_timeout"), ("lease", "lease")):
        if key in settings:
            kwargs[field] = reader.duration(settings[key], sl[key], f"settings.{key}")
    return Scenario(
        name=reader.text(document["name"], document.lines["name"], "name"),
        path=name,
        description=reader.text(document.get("description", ""),
                                document.lines.get("description", 1), "description"),
        probes=reader.probes(document.get("probes"), document.lines.get("probes", 1)),
        steps=reader.steps(document["steps"], document.lines["steps"], "steps"),
        **kwargs,
    )


def _bad_character(name: str, text: str, exc: yaml.reader.ReaderError) -> SpecError:
    line = text[:exc.position].count("\n") + 1
    char = exc.character
    shown = f"U+{char:04X}" if isinstance(char, int) else repr(char)
    return SpecError(f"{name}:{line}: YAML: character {shown} is not allowed in a YAML file: "
                     "remove it")


def _empty() -> _Mapping:
    out = _Mapping()
    out.lines = {}
    return out
