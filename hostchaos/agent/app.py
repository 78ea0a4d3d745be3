"""The agent's HTTP API (a starlette app), described by ``openapi.json`` beside this file.

Routes (all JSON; see docs/api.md)::

    POST   /v1/faults                 inject: {"kind", "options", "for", "lease", "dry_run"}
    GET    /v1/faults[?all=true]      list
    GET    /v1/faults/{id}            one fault, with live kernel state and drift
    POST   /v1/faults/{id}/extend     renew the lease; {"for": ...} moves the deadline
    DELETE /v1/faults/{id}            rollback
    POST   /v1/rollback-all           rollback every open fault
    GET    /v1/health                 liveness and counts
    GET    /v1/openapi.json           this API's description
    GET    /metrics                   Prometheus text format

Errors are ``{"error": {"type", "message", "fault_id", "exit_code"}}`` with the
HTTP status of the hostchaos error class (the CLI's exit code is in
``exit_code``). Request bodies are JSON objects of at most
:data:`MAX_BODY_BYTES`; options are validated by the kind's own spec
(:func:`hostchaos.faults.from_options.spec_from_options`) and never reach a
shell. Who may call is decided by the server before a request gets here
(``scope["hostchaos.client"]``); the app refuses a request without one.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from hostchaos import __version__
from hostchaos.agent.logs import WARNING, log
from hostchaos.agent.service import Client, FaultService
from hostchaos.errors import HostchaosError, SpecError, one_line

MAX_BODY_BYTES = 1 << 20
#: the longest rollback reason a client may have recorded
MAX_REASON = 200
OPENAPI_PATH = Path(__file__).with_name("openapi.json")
#: the ASGI scope key under which the server puts the peer's credentials (a Client)
CLIENT_KEY = "hostchaos.client"

_CREATE_KEYS = {"kind", "options", "for", "lease", "dry_run"}
_EXTEND_KEYS = {"for"}


class HTTPProblem(Exception):
    """A request refused before it reaches the engine (size, JSON, method ...)."""

    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status, self.kind = status, kind


def error_response(status: int, kind: str, message: str, *, fault_id: str | None = None,
                   exit_code: int | None = None) -> JSONResponse:
    return JSONResponse({"error": {"type": kind, "message": one_line(message),
                                   "fault_id": fault_id,
                                   "exit_code": exit_code}}, status_code=status)


def client_of(request: Request) -> Client:
    client = request.scope.get(CLIENT_KEY)
    if not isinstance(client, Client):
        raise HTTPProblem(403, "forbidden", "the client's credentials are unknown")
    return client


async def read_json(request: Request, allowed: set[str], *, optional: bool = False
                    ) -> dict[str, Any]:
    """The request's JSON object, size-limited, with only ``allowed`` keys."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise HTTPProblem(400, "bad-request", "Content-Length is not a number")
        if int(declared) > MAX_BODY_BYTES:
            raise HTTPProblem(413, "too-large", f"request body is larger than "
                                                f"{MAX_BODY_BYTES} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise HTTPProblem(413, "too-large", f"request body is larger than "
                                                f"{MAX_BODY_BYTES} bytes")
    if not body and optional:
        return {}
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json":
        raise HTTPProblem(415, "unsupported-media-type",
                          "send the request body as application/json")
    try:
        data = json.loads(bytes(body))
    except (ValueError, UnicodeDecodeError) as exc:
        raise HTTPProblem(400, "bad-request", f"request body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise HTTPProblem(400, "bad-request", "request body must be a JSON object")
    unknown = sorted(str(k) for k in data if k not in allowed)
    if unknown:
        known = f"known: {', '.join(sorted(allowed))}" if allowed else "this takes no fields"
        raise HTTPProblem(400, "bad-request", f"unknown field(s) {', '.join(unknown)} ({known})")
    return data


def _flag(request: Request, name: str, default: bool) -> bool:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if raw.lower() in ("1", "true", "yes"):
        return True
    if raw.lower() in ("0", "false", "no"):
        return False
    raise HTTPProblem(400, "bad-request", f"query parameter {name} must be true or false")


Handler = Callable[[Request], Awaitable[Response]]


def create_app(service: FaultService, *, metrics: Any = None) -> Starlette:
    """The API over ``service``; ``metrics`` (an AgentMetrics) serves /metrics."""
    started = time.monotonic()
    openapi = OPENAPI_PATH.read_bytes()

    def guarded(handler: Handler) -> Handler:
        async def run(request: Request) -> Response:
            fault_id = request.path_params.get("fault_id")
            try:
                client_of(request)
                return await handler(request)
            except HTTPProblem as exc:
                return error_response(exc.status, exc.kind, str(exc), fault_id=fault_id,
                                      exit_code=SpecError.exit_code if exc.status < 500 else 1)
            except HostchaosError as exc:
                return error_response(exc.http_status, exc.label, str(exc), fault_id=fault_id,
                                      exit_code=exc.exit_code)
            except Exception as exc:  # a bug: one line to the client, the details to the log
                log(WARNING, "internal error", path=request.url.path,
                    error=f"{type(exc).__name__}: {exc}")
                return error_response(500, "internal", f"internal error: {type(exc).__name__}: "
                                      f"{exc}", fault_id=fault_id, exit_code=1)
        return run

    async def create(request: Request) -> Response:
        body = await read_json(request, _CREATE_KEYS)
        dry_run = body.get("dry_run", False)
        if not isinstance(dry_run, bool):
            raise HTTPProblem(400, "bad-request", "dry_run must be true or false")
        args = (body.get("kind"), body.get("options"), body.get("for"), body.get("lease"))
        client = client_of(request)
        if dry_run:
            plan = await run_in_threadpool(lambda: service.plan(*args, client=client))
            return JSONResponse(plan)
        view = await run_in_threadpool(lambda: service.inject(*args, client=client))
        return JSONResponse(view, status_code=201,
                            headers={"Location": f"/v1/faults/{view['id']}"})

    async def listing(request: Request) -> Response:
        every = _flag(request, "all", False)
        return JSONResponse(await run_in_threadpool(service.listing, every))

    async def get(request: Request) -> Response:
        observe = _flag(request, "observe", True)
        fault_id = request.path_params["fault_id"]
        return JSONResponse(await run_in_threadpool(lambda: service.get(fault_id,
                                                                        observe=observe)))

    async def extend(request: Request) -> Response:
        body = await read_json(request, _EXTEND_KEYS, optional=True)
        client = client_of(request)
        fault_id = request.path_params["fault_id"]
        return JSONResponse(await run_in_threadpool(
            lambda: service.extend(fault_id, body.get("for"), client=client)))

    async def delete(request: Request) -> Response:
        client = client_of(request)
        fault_id = request.path_params["fault_id"]
        reason = request.query_params.get("reason") or "requested"
        if len(reason) > MAX_REASON or not reason.isprintable():
            raise HTTPProblem(400, "bad-request", f"reason must be at most {MAX_REASON} "
                                                  "printable characters")
        return JSONResponse(await run_in_threadpool(
            lambda: service.rollback(fault_id, client=client, reason=reason)))

    async def rollback_all(request: Request) -> Response:
        await read_json(request, set(), optional=True)
        client = client_of(request)
        result = await run_in_threadpool(lambda: service.rollback_all(client=client))
        if result["errors"]:
            message = "; ".join(result["errors"])
            return JSONResponse({"error": {"type": "rollback", "message": one_line(message),
                                           "fault_id": None, "exit_code": 7}, **result},
                                status_code=500)
        return JSONResponse(result)

    async def health(request: Request) -> Response:
        return JSONResponse({
            "status": "ok", "version": __version__, "pid": os.getpid(),
            "uptime_seconds": round(time.monotonic() - started, 3),
            "state_dir": str(service.engine.journal.state_dir),
            "open_faults": await run_in_threadpool(service.open_count),
        })

    async def openapi_doc(request: Request) -> Response:
        return Response(openapi, media_type="application/json")

    async def prometheus(request: Request) -> Response:
        if metrics is None:
            raise HTTPProblem(404, "not-found", "this agent keeps no metrics")
        from prometheus_client import CONTENT_TYPE_LATEST

        data = await run_in_threadpool(metrics.exposition)
        return Response(data, headers={"Content-Type": CONTENT_TYPE_LATEST})

    routes = [
        Route("/v1/faults", guarded(create), methods=["POST"]),
        Route("/v1/faults", guarded(listing), methods=["GET"]),
        # ":path": any id reaches the engine, which answers for it as it does on the CLI
        Route("/v1/faults/{fault_id:path}/extend", guarded(extend), methods=["POST"]),
        Route("/v1/faults/{fault_id:path}", guarded(get), methods=["GET"]),
        Route("/v1/faults/{fault_id:path}", guarded(delete), methods=["DELETE"]),
        Route("/v1/rollback-all", guarded(rollback_all), methods=["POST"]),
        Route("/v1/health", guarded(health), methods=["GET"]),
        Route("/v1/openapi.json", guarded(openapi_doc), methods=["GET"]),
        Route("/metrics", guarded(prometheus), methods=["GET"]),
    ]

    async def not_found(request: Request, exc: Exception) -> Response:
        return error_response(404, "not-found", f"no such endpoint: {request.method} "
                              f"{request.url.path} (see /v1/openapi.json)", exit_code=4)

    async def not_allowed(request: Request, exc: Exception) -> Response:
        from starlette.routing import Match

        # RFC 9110: a 405 names what the path allows. One path may have several routes, and
        # ".../ID/extend" also fits "{fault_id:path}": the most literal template is the one
        # the document describes for it
        matched = [route for route in routes if route.matches(request.scope)[0] == Match.PARTIAL]
        longest = max((len(route.path) for route in matched), default=0)
        allowed = sorted({method for route in matched if len(route.path) == longest
                          for method in route.methods or ()})
        response = error_response(405, "method-not-allowed", f"{request.method} is not "
                                  f"allowed on {request.url.path} (see /v1/openapi.json)",
                                  exit_code=2)
        response.headers["Allow"] = ", ".join(allowed)
        return response

    return Starlette(routes=routes, exception_handlers={404: not_found, 405: not_allowed})
