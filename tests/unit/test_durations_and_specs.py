from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hostchaos.errors import SpecError
from hostchaos.faults.latency import LatencySpec
from hostchaos.faults.loss import LossSpec
from hostchaos.quantities import format_duration, parse_duration


@pytest.mark.parametrize(("text", "seconds"), [
    ("30s", 30), ("5m", 300), ("1h", 3600), ("90", 90), ("1.5", 1.5), ("1h30m", 5400),
    ("250ms", 0.25), (" 2m ", 120),
])
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "abc", "-5s", "0", "0s", "5x", "m5", "1h-2m", "nan", "inf"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(SpecError):
        parse_duration(text)


def test_format_duration() -> None:
    assert format_duration(59.6) == "1m"
    assert format_duration(3723) == "1h2m3s"
    assert format_duration(0.25) == "250ms"


def test_latency_spec_valid_and_round_trips() -> None:
    spec = LatencySpec(iface="eth0", netns="blue", ms=100, jitter_ms=10, correlation=25)
    assert LatencySpec.from_dict(spec.to_dict()) == spec
    assert spec.target_label() == "eth0 (netns blue)"


@pytest.mark.parametrize("kwargs", [
    {"ms": 0}, {"ms": -1}, {"ms": 60001}, {"ms": 10, "jitter_ms": -1},
    {"ms": 10, "correlation": 30}, {"ms": 10, "jitter_ms": 1, "correlation": 101},
    {"ms": 10, "iface": "a/b"}, {"ms": 10, "iface": "x" * 16}, {"ms": 10, "netns": "../etc"},
])
def test_latency_spec_rejects(kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {"iface": "eth0", **kwargs}
    with pytest.raises(SpecError):
        LatencySpec(**args)  # type: ignore[arg-type]


@pytest.mark.parametrize("percent", [0, -1, 100.5, 101])
def test_loss_spec_rejects(percent: float) -> None:
    with pytest.raises(SpecError):
        LossSpec(iface="eth0", percent=percent)


def test_spec_from_dict_rejects_unknown_settings() -> None:
    with pytest.raises(SpecError, match="unknown latency setting"):
        LatencySpec.from_dict({"iface": "eth0", "ms": 5, "bogus": 1})


def _by_patterns(text: str) -> float | None:
    """parse_duration as it was, all regular expressions (the reference for the shortcut)."""
    import math
    import re

    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
    raw = text.strip().lower()
    if re.fullmatch(r"\d+(?:\.\d+)?", raw):
        seconds = float(raw)
    else:
        parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)", raw)
        if not parts or "".join(n + u for n, u in parts) != raw:
            return None
        seconds = sum(float(n) * units[u] for n, u in parts)
    return seconds if math.isfinite(seconds) and seconds > 0 else None


@pytest.mark.parametrize("text", ["30", "1.5", "1.5s", "250ms", "5m", "2h", "1d", " 10S ",
                                  "0.25h", "007m", "1h30m", "90s5", "1.s", ".5s", "5 m", "-5s",
                                  "1e3", "inf", "nan", "0", "0s", "1..5s", "\u0661", "\u0661s",
                                  "", "m", "ms", "5mss", "2hm", "1" * 400])
def test_durations_read_as_the_patterns_read_them(text: str) -> None:
    """One number and one unit is read without a regular expression: the same seconds."""
    try:
        seconds: float | None = parse_duration(text)
    except SpecError:
        seconds = None
    assert seconds == _by_patterns(text)


def test_a_duration_of_one_part_loads_no_regular_expressions() -> None:
    import subprocess
    import sys

    probe = ("import sys\nfrom hostchaos.quantities import parse_duration\n"
             "assert parse_duration('5m') == 300 and parse_duration('250ms') == 0.25\n"
             "print('re' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "False", done.stderr


@given(st.text(alphabet="0123456789.msdhMS \u0661", max_size=8))
def test_any_short_duration_reads_as_the_patterns_read_it(text: str) -> None:
    test_durations_read_as_the_patterns_read_them(text)
