"""Shared pieces of the fuzz tests (tests/unit/test_fuzz_*.py, tests/host/test_fuzz_*.py).

Hypothesis settings with a fixed derandomized seed, so a CI run is repeatable
and a failure prints the smallest input it found; the number of examples per
surface can be lowered for a quick local run with ``HOSTCHAOS_FUZZ_EXAMPLES``
(CI keeps the default of 2000).
"""

from __future__ import annotations

import os
import re

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

EXAMPLES = int(os.environ.get("HOSTCHAOS_FUZZ_EXAMPLES", "2000"))

FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck), print_blob=True)

#: text that is hard on parsers: controls, quotes, YAML/JSON/shell specials, unicode, NUL
NASTY = ["", " ", "\t", "\n", "\x00", "-", "--", "--x", "'", '"', "\\", "${x}", "${", "%s",
         "{", "}", "[", "]", ":", "#", "&a", "*a", "!!python/object", "~", "null", "yes",
         "no", "on", "off", "true", "NaN", "inf", "-inf", "1e400", "-0", "0x10", "0o7",
         "1_000", "\u202e", "\ufeff", "é", "日本", "🙂", "\u0000x", "a" * 300,
         "../..", "/", "-1", "9" * 40, "1.5", "30s", "-5m", "1h30m", "0s", "500ms",
         "2**64", "\U0001d7d9\U0001d7da", "\uff11\uff12"]  # unicode digits

garbage_text = st.one_of(st.sampled_from(NASTY), st.text(max_size=40),
                         st.text(alphabet=st.characters(codec="ascii"), max_size=12))
huge_numbers = st.sampled_from([0, -1, 1, 2**31 - 1, 2**31, 2**63, 2**64 + 1, -(2**63),
                                10**400 // 10**380, 1e308, -1e308, 1e-320, 0.5, -0.0])
durations = st.one_of(st.sampled_from(["1s", "30s", "5m", "1h", "1h30m", "500ms", "2", "0",
                                       "-1s", "-5m", "0s", "10d", "1e9s", "s", "ms", "5 m",
                                       "1h-30m", "+3s", "inf", "nan", "2h", "59m59s"]),
                      garbage_text, huge_numbers.map(str))

#: 2000 examples take a few minutes on a loaded 2-core machine: beyond the default 300 s
SLOW = pytest.mark.timeout(1800)

_LINE_ERROR = re.compile(r"^hostchaos: (?P<rest>.*)$")


def one_line(stderr: str) -> str:
    """The one error line (without ``hostchaos: ``) of a failed command; asserts the shape."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one error line, got: {stderr!r}"
    match = _LINE_ERROR.match(lines[0])
    assert match, lines[0]
    assert "internal error" not in lines[0], lines[0]
    return match["rest"]
