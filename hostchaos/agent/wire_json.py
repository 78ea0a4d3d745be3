"""JSON for the thin client, on the C codec the standard ``json`` module itself uses.

``import json`` also loads ``re`` and ``enum`` (its pure-Python fallbacks
compile regular expressions at import): 10-15 ms of a ~60 ms `hostchaos
inject` through the agent on the build machine (measured, docs/benchmarks.md).
The client's requests and the agent's answers are plain JSON, which CPython's
``_json`` scanner and encoder handle alone, so this module builds
:func:`loads` and :func:`dumps` from them with ``json``'s defaults. The
results are the same as ``json.loads`` and ``json.dumps(separators=(",", ":"))``
(tests/unit/test_wire_json.py checks that).
"""

from __future__ import annotations

import _json  # CPython's, which json itself uses (the package requires CPython 3.11+)

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (the fast path)

if TYPE_CHECKING:
    from typing import Any

_WHITESPACE = " \t\n\r"


def _not_serializable(value: object) -> object:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


class _DecoderOptions:
    """What the C scanner reads from a ``json.JSONDecoder``: the defaults of ``json.loads``."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = {"-Infinity": float("-inf"), "Infinity": float("inf"),
                      "NaN": float("nan")}.__getitem__


_scan = _json.make_scanner(_DecoderOptions())  # type: ignore[arg-type]  # duck-typed


def loads(text: str | bytes) -> Any:
    """The value of one JSON document (ValueError if it is not one)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8")  # UnicodeDecodeError is a ValueError
    start = len(text) - len(text.lstrip(_WHITESPACE))
    try:
        value, end = _scan(text, start)
    except StopIteration as exc:
        raise ValueError(f"Expecting value: char {exc.value}") from None
    if text[end:].strip(_WHITESPACE):
        raise ValueError(f"Extra data: char {end}")
    return value


def dumps(value: Any) -> str:
    """``value`` as compact JSON (TypeError for what JSON cannot hold)."""
    encode = _json.make_encoder({}, _not_serializable, _json.encode_basestring_ascii,
                                None, ":", ",", False, False, True)
    return "".join(encode(value, 0))


__all__ = ["dumps", "loads"]
