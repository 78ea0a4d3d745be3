from __future__ import annotations

import pytest

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
