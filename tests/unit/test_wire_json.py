"""hostchaos.agent.wire_json gives what json gives, for every JSON value and every error."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hostchaos.agent import wire_json

values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=20)


@given(values)
def test_dumps_is_json_dumps_compact(value: Any) -> None:
    assert wire_json.dumps(value) == json.dumps(value, separators=(",", ":"))


@given(values, st.sampled_from(["", " ", "\n\t ", "\r\n"]))
def test_loads_is_json_loads(value: Any, padding: str) -> None:
    for text in (json.dumps(value), json.dumps(value, indent=2, ensure_ascii=False)):
        padded = padding + text + padding
        assert wire_json.loads(padded) == json.loads(padded)
        assert wire_json.loads(padded.encode()) == json.loads(padded.encode())


def test_constants_and_big_numbers() -> None:
    assert math.isnan(wire_json.loads("NaN"))
    assert wire_json.loads("[Infinity, -Infinity, 1e400, 12345678901234567890]") == \
        [math.inf, -math.inf, math.inf, 12345678901234567890]


@pytest.mark.parametrize("text", ["", "   ", "{", "[1,]", "{} {}", "nul", "\"\x01\"", "1 2",
                                  b"\xff\xfe{}", "{'a': 1}"])
def test_what_json_refuses_is_refused(text: str | bytes) -> None:
    with pytest.raises(ValueError):
        json.loads(text)
    with pytest.raises(ValueError):
        wire_json.loads(text)


def test_what_json_cannot_hold_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="set is not JSON serializable"):
        wire_json.dumps({"a": {1, 2}})
    cycle: list[Any] = []
    cycle.append(cycle)
    with pytest.raises(ValueError):
        wire_json.dumps(cycle)
