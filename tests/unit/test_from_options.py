"""spec_from_options: a kind's spec from a mapping keyed by its option names (API, scenarios).

Every kind's documented example is parsed twice, by its generated command and
from the mapping a JSON body would carry, and the two specs must be equal.
"""

from __future__ import annotations

import shlex
from typing import Any

import click
import pytest

from hostchaos import faults, reference
from hostchaos.cli.inject import inject
from hostchaos.errors import SpecError
from hostchaos.faults.from_options import fault_request, known_options, spec_from_options
from hostchaos.faults.options import options_from_click


def example_words(kind: str) -> list[str]:
    _, paragraphs = reference.sections(faults.fault_class(kind))
    example = next(p for p in paragraphs if p.startswith("Example"))
    line = example.partition(":")[2].strip().splitlines()[0].strip().strip("`")
    words = shlex.split(line)
    assert words[:4] == ["sudo", "hostchaos", "inject", kind], line
    return words[4:]


def as_mapping(kind: str, words: list[str]) -> dict[str, Any]:
    """The words of a command line as an API body's options, written by hand-rule:
    `--name value` -> "name": "value" (repeats -> a list), `--flag` -> "flag": true."""
    known = known_options(kind)
    out: dict[str, Any] = {}
    timing: dict[str, Any] = {}
    i = 0
    while i < len(words):
        name = words[i].removeprefix("--")
        if name in ("for", "lease"):
            timing[name] = words[i + 1]
            i += 2
            continue
        each = known[name]
        if each.is_flag:
            out[name] = True
            i += 1
            continue
        value = words[i + 1]
        if each.option.multiple:
            out.setdefault(name, []).append(value)
        else:
            out[name] = value
        i += 2
    return {**out, **timing}


def click_spec(kind: str, words: list[str]) -> Any:
    command = inject.get_command(click.Context(inject), kind)
    assert command is not None
    with command.make_context(kind, list(words)) as ctx:
        given = dict(ctx.params)
    for common in ("duration", "lease", "wait", "dry_run", "as_json"):
        given.pop(common)
    return spec_from_options(kind, options_from_click(faults.fault_class(kind).spec_type, given))


@pytest.mark.parametrize("kind", faults.KINDS)
def test_every_documented_example_gives_the_same_spec_from_a_mapping(kind: str) -> None:
    words = example_words(kind)
    mapping = as_mapping(kind, words)
    request = fault_request(kind, mapping)
    assert request.spec == click_spec(kind, words)
    if "for" in mapping:
        assert request.duration is not None and request.duration > 0


def test_numbers_strings_lists_and_flags() -> None:
    spec = spec_from_options("latency", {"iface": "eth0", "ms": 100, "jitter": "5",
                                         "dst": "10.0.0.0/8", "no-protect-ssh": True,
                                         "direction": "both", "dport": 443.0})
    assert spec.ms == 100.0 and spec.jitter_ms == 5.0  # type: ignore[attr-defined]
    assert spec.dst == ("10.0.0.0/8",)  # type: ignore[attr-defined]
    assert spec.protect_ssh is False and spec.direction == "both"  # type: ignore[attr-defined]
    assert spec.dport == 443  # type: ignore[attr-defined]
    unset = spec_from_options("latency", {"iface": "eth0", "ms": 1, "force": False,
                                          "no-protect-ssh": False})
    assert unset.protect_ssh is True and unset.force is False  # type: ignore[attr-defined]
    fill = spec_from_options("disk-fill", {"path": "/var/tmp", "leave-free": "1G",
                                           "include-reserve": True})
    assert fill.leave_free == 1 << 30 and fill.include_reserve  # type: ignore[attr-defined]
    hosts = spec_from_options("partition", {"iface": "eth0", "host": ["a.example",
                                                                     "b.example"]})
    assert hosts.hosts == ("a.example", "b.example")  # type: ignore[attr-defined]


@pytest.mark.parametrize(("kind", "options", "fragment"), [
    ("latency", {"iface": "eth0", "ms": 1, "bogus": 1}, "unknown latency option(s): bogus"),
    ("latency", {"iface": "eth0", "ms": 1, "jitter_ms": 1}, "known: "),
    ("latency", {"iface": "eth0", "ms": 1, "for": "5m"}, "beside the options"),
    ("latency", {"iface": "eth0"}, "missing option '--ms'"),
    ("latency", {"iface": "eth0", "ms": "abc"}, "--ms 'abc' is not a valid number"),
    ("latency", {"iface": "eth0", "ms": True}, "--ms takes one value"),
    ("latency", {"iface": "eth0", "ms": [1, 2]}, "--ms takes one value"),
    ("latency", {"iface": "eth0", "ms": -5}, "--ms must be between 0.001"),
    ("latency", {"iface": "eth0", "ms": 1, "direction": "sideways"}, "not one of: egress"),
    ("latency", {"iface": "eth0", "ms": 1, "force": "yes"}, "--force is a flag"),
    ("latency", {"iface": "eth0", "ms": 1, "dport": 1.5}, "not a valid integer"),
    ("disk-fill", {"path": "/tmp", "size": "lots"}, "is not a size"),
    ("cpu", {"pid": 1, "limit": "0%"}, "--limit must be above 0%"),
    ("nosuch", {}, "unknown fault kind 'nosuch'"),
])
def test_bad_options_are_one_spec_error_naming_them(kind: str, options: dict[str, Any],
                                                    fragment: str) -> None:
    with pytest.raises(SpecError) as caught:
        spec_from_options(kind, options)
    assert fragment in str(caught.value)
    assert "\n" not in str(caught.value)


def test_timing_beside_the_options() -> None:
    request = fault_request("loss", {"iface": "eth0", "percent": 5, "for": "5m", "lease": 30})
    assert (request.duration, request.lease) == (300.0, 30.0)
    with pytest.raises(SpecError, match="not a duration"):
        fault_request("loss", {"iface": "eth0", "percent": 5, "for": "soon"})
    tiny = fault_request("loss", {"iface": "eth0", "percent": 5, "for": 1e-05})
    assert tiny.duration == 1e-05  # a number is seconds as it is, not re-parsed as text
    for bad in (0, -1.5, float("inf"), float("nan")):
        with pytest.raises(SpecError, match="greater than zero"):
            fault_request("loss", {"iface": "eth0", "percent": 5, "for": bad})
    with pytest.raises(SpecError, match="must be a mapping"):
        fault_request("loss", ["iface"])  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", faults.KINDS)
def test_a_spec_is_recorded_as_dataclasses_asdict_would(kind: str) -> None:
    """Spec.to_dict skips asdict's deep copy; what a record keeps must not change, nor
    read back as another spec."""
    import dataclasses

    spec = click_spec(kind, example_words(kind))
    data = spec.to_dict()
    assert data == dataclasses.asdict(spec)
    assert type(spec).from_dict(data) == spec
