"""Fuzzing the agent's API (issue 15): generated requests to a real `hostchaos agent`.

One agent process on a temporary socket and state directory; generated JSON
bodies (and some that are not JSON, are too large or have the wrong content
type) for POST /v1/faults, extend and delete with generated ids and bodies,
list, get and rollback-all. Every answer must have a status the committed
OpenAPI document lists for that route, never an internal error; every error
body is ``{"error": {"type", "message", "fault_id", "exit_code"}}`` with a
one-line message. A fault that is created is on a sandbox target only
(tests/support/fuzz_targets.py) and is deleted at once; the agent must answer
/v1/health every 50 requests and at the end, with no open record left and the
sandbox as it was.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hostchaos.agent.app import OPENAPI_PATH
from hostchaos.faults import KINDS
from hostchaos.sandbox import NetnsPair
from tests.support.agent import raw_request, running_agent
from tests.support.cli import open_records
from tests.support.fs import tmpfs
from tests.support.fuzz import FUZZ, SLOW, durations, garbage_text, huge_numbers
from tests.support.fuzz_sandbox import FuzzSandbox
from tests.support.fuzz_targets import PLACEHOLDER, option_values, plausible_options, safe_options

DOCUMENTED = {(path, method.upper()): {int(code) for code in spec.get("responses", {})}
              for path, methods in json.loads(OPENAPI_PATH.read_text())["paths"].items()
              for method, spec in methods.items()}
ERROR_TYPES = {"spec", "precondition", "target-not-found", "conflict", "busy", "apply",
               "rollback", "journal", "bad-request", "too-large", "unsupported-media-type",
               "forbidden", "not-found", "method-not-allowed"}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzSandbox]:
    base = tmp_path_factory.mktemp("fuzz-api")
    with NetnsPair(prefix=f"hcfa{os.getpid() % 1000}") as pair, \
            tmpfs(base / "fill", "16m", "hc-fuzz") as fill, \
            FuzzSandbox(pair, fill) as sandbox:
        state_dir, socket_path = base / "state", base / "run" / "agent.sock"
        with running_agent(state_dir, socket_path, log=base / "agent.log"):
            sandbox.state_dir, sandbox.socket_path = state_dir, socket_path
            yield sandbox
            sandbox.counts["health-at-end"] = health(socket_path)
        assert open_records(state_dir) == []
        sandbox.assert_as_before()
        print(f"\nAPI fuzz: {dict(sandbox.counts)}")


def health(socket_path: Path) -> int:
    status, _, data = raw_request(socket_path, "GET", "/v1/health")
    assert status == 200 and json.loads(data)["status"] == "ok", (status, data)
    return status


# -- requests ------------------------------------------------------------------------------
VALUES = option_values(PLACEHOLDER)
junk = st.recursive(garbage_text | huge_numbers | st.booleans() | st.none(),
                    lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(garbage_text, inner, max_size=3), max_leaves=8)


@st.composite
def options_for(draw: st.DrawFn, kind: str) -> Any:
    from hostchaos.faults import fault_class
    from hostchaos.faults.options import spec_options

    names = [o.name for o in spec_options(fault_class(kind).spec_type)] if kind in KINDS \
        else list(VALUES)[:6]
    chosen = draw(st.lists(st.sampled_from(names), max_size=6, unique=True))
    options: dict[Any, Any] = {name: draw(VALUES[name]) for name in chosen}
    if not draw(st.integers(0, 9)):
        options[draw(garbage_text | st.sampled_from(["for", "lease", "--ms", "ms "]))] = \
            draw(junk)
    return options if draw(st.integers(0, 15)) else draw(junk)


@st.composite
def create_body(draw: st.DrawFn, sure: bool = False) -> Any:
    kind = draw(st.sampled_from(KINDS)) if sure else draw(
        st.sampled_from(KINDS) | st.sampled_from(["", "Latency", "disk_fill"]) | garbage_text)
    plausible = kind in KINDS and (sure or draw(st.booleans()))
    body: dict[str, Any] = {"kind": kind, "options": draw(
        plausible_options(kind, VALUES) if plausible else options_for(kind))}
    if plausible:
        body["for"] = draw(st.sampled_from(["1s", "30s", 5, "5m"]))
        if not draw(st.integers(0, 3)):
            body["lease"] = draw(st.sampled_from(["1s", 2, "10s"]))
        if not draw(st.integers(0, 3)):
            body["dry_run"] = True
        return body
    for key, values in (("for", durations | huge_numbers | junk),
                        ("lease", durations | huge_numbers | junk),
                        ("dry_run", st.booleans() | junk)):
        if draw(st.booleans()):
            body[key] = draw(values)
    if not draw(st.integers(0, 12)):
        body[draw(garbage_text)] = draw(junk)
    for key in draw(st.lists(st.sampled_from(["kind", "options"]), max_size=1)):
        body.pop(key, None)
    return body if draw(st.integers(0, 20)) else draw(junk)


fault_ids = st.one_of(st.just("LAST"), st.sampled_from(["hc-latency-deadbeef", "..", "%2e%2e",
                                                        "a/b", "hc-", "x" * 300]), garbage_text)

request = st.one_of(
    st.tuples(st.just("create"), create_body()),
    st.tuples(st.just("create"), create_body()),
    st.tuples(st.just("create"), create_body(sure=True)),
    st.tuples(st.just("create"), create_body(sure=True)),
    st.tuples(st.just("create"), create_body(sure=True)),
    st.tuples(st.just("raw"), st.sampled_from(["not json", "{", "[]", "null", '"x"', "1e999",
                                               '{"kind": "loss", "kind": "cpu"}', "\xff",
                                               "BIG", "EMPTY"]),
              st.sampled_from(["application/json", "text/plain", "", "application/JSON; x=1",
                               "multipart/form-data"])),
    st.tuples(st.just("extend"), fault_ids, st.none() | st.fixed_dictionaries(
        {}, optional={"for": durations | junk, "lease": junk})),
    st.tuples(st.just("delete"), fault_ids, st.none() | garbage_text),
    st.tuples(st.just("get"), fault_ids, st.sampled_from(["", "?observe=false", "?observe=x"])),
    st.tuples(st.just("list"), st.sampled_from(["", "?all=true", "?all=2", "?x=y"])),
    st.tuples(st.just("rollback-all"), st.sampled_from([None, "{}", '{"x": 1}', "[]"])),
    st.tuples(st.just("method"), st.sampled_from(["PUT", "PATCH", "GET", "OPTIONS"]),
              st.sampled_from(["/v1/faults", "/v1/health", "/v1/nope", "/", "/v1/faults/x"])),
)


def _route(path: str) -> str:
    bare = path.split("?")[0]
    if bare.startswith("/v1/faults/"):
        return "/v1/faults/{fault_id}/extend" if bare.endswith("/extend") \
            else "/v1/faults/{fault_id}"
    return bare


def send(world: FuzzSandbox, method: str, path: str, body: bytes | None = None,
         content_type: str | None = "application/json") -> tuple[int, Any]:
    headers = {"Content-Type": content_type} if body is not None and content_type else {}
    status, _, data = raw_request(world.socket_path, method, path, body, headers)
    assert status != 0, f"the agent closed the connection on {method} {path}"
    documented = DOCUMENTED.get((_route(path), method), {404, 405})
    decoded = json.loads(data) if data else None
    assert status in documented | {404, 405}, (method, path, status, decoded)
    if status >= 400:
        error = decoded["error"]
        assert set(error) == {"type", "message", "fault_id", "exit_code"}, decoded
        assert error["type"] in ERROR_TYPES, decoded  # never "internal"
        assert isinstance(error["message"], str) and error["message"], decoded
        assert "\n" not in error["message"] and "Traceback" not in error["message"], decoded
        if status >= 500:
            assert error["type"] in ("apply", "journal", "busy"), decoded
            world.counts[f"{status} {error['type']}"] += 1
    world.counts[f"{method} {status}"] += 1
    return status, decoded


def _id(world: FuzzSandbox, raw: str) -> str:
    return quote(world.last_id if raw == "LAST" else raw, safe="")


@SLOW
@FUZZ
@given(req=request)
def test_every_request_gets_a_documented_answer_and_leaves_nothing(
        world: FuzzSandbox, req: tuple[Any, ...]) -> None:
    world.refresh()
    what = req[0]
    if what == "create":
        body = req[1]
        if isinstance(body, dict) and "options" in body:
            body = {**body, "options": safe_options(body["options"], world.targets)}
        status, view = send(world, "POST", "/v1/faults", json.dumps(body).encode())
        if os.environ.get("HOSTCHAOS_FUZZ_SHOW"):
            print(status, json.dumps(body)[:300], json.dumps(view)[:300])
        if status == 201:
            world.last_id = view["id"]
            world.counts[f"created {view['kind']}"] += 1
            status, ended = send(world, "DELETE", f"/v1/faults/{quote(view['id'], safe='')}")
            assert status == 200 and ended["state"] == "rolled-back", ended
            world.assert_as_before()
    elif what == "raw":
        text, content_type = req[1], req[2]
        data = {"BIG": b'{"kind": "' + b"x" * (1 << 20) + b'"}', "EMPTY": b"",
                "\xff": b"\xff\xfe{"}.get(
            text, text.encode("utf-8", "surrogateescape"))
        send(world, "POST", "/v1/faults", data, content_type)
    elif what == "extend":
        body = None if req[2] is None else json.dumps(req[2]).encode()
        send(world, "POST", f"/v1/faults/{_id(world, req[1])}/extend", body)
    elif what == "delete":
        tail = "" if req[2] is None else "?reason=" + quote(req[2], safe="")
        send(world, "DELETE", f"/v1/faults/{_id(world, req[1])}{tail}")
    elif what == "get":
        send(world, "GET", f"/v1/faults/{_id(world, req[1])}{req[2]}")
    elif what == "list":
        status, listing = send(world, "GET", f"/v1/faults{req[1]}")
        if status == 200 and req[1] == "":
            assert listing["faults"] == [], listing
    elif what == "rollback-all":
        send(world, "POST", "/v1/rollback-all", None if req[1] is None else req[1].encode())
    else:
        send(world, req[1], req[2], b"{}" if req[1] in ("PUT", "PATCH") else None)
    world.requests += 1
    if world.requests % 50 == 0:
        health(world.socket_path)
    assert open_records(world.state_dir) == []
