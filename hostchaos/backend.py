"""Where a command's work is done: the agent when its socket answers, else this process.

Both backends answer with the same *views* (:mod:`hostchaos.agent.service`),
so every command prints the same thing either way. The click commands
(:mod:`hostchaos.cli`) and the fast path (:mod:`hostchaos.fastpath`) both do
their work through one of these. Importing this module loads nothing but
``os`` and ``sys``: the agent path then imports only
:mod:`hostchaos.agent.client` (no pyroute2, no psutil, no click), and the
in-process one the engine, when it is made.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (the fast path)

if TYPE_CHECKING:
    from typing import Any, Protocol

    from hostchaos.agent.client import AgentClient
    from hostchaos.engine import Engine

    class Backend(Protocol):
        """What the commands need; every fault comes back as a view (a dict)."""

        def plan(self, kind: str, options: dict[str, Any], duration: float | None,
                 lease: float | None) -> dict[str, Any]: ...

        def inject(self, kind: str, options: dict[str, Any], duration: float | None,
                   lease: float | None) -> dict[str, Any]: ...

        def listing(self, include_ended: bool) -> dict[str, Any]: ...

        def status(self, fault_id: str) -> dict[str, Any]: ...

        def peek(self, fault_id: str) -> dict[str, Any]: ...

        def extend(self, fault_id: str, duration: float | None) -> dict[str, Any]: ...

        def rollback(self, fault_id: str, reason: str = "requested") -> dict[str, Any]: ...

        def rollback_all(self) -> dict[str, Any]: ...


def make_engine(*, revive: bool = True) -> Engine:
    """The engine, with the on-demand warden; ``revive``: restart a dead warden now.

    Every command but `sweep` revives: if open faults exist and no warden
    guards them (it was killed), a new one starts and rolls back at once what
    is overdue. A warden that cannot start is a warning here, not a failure:
    the command itself still runs (and sweep remains the next line of defence).
    """
    from hostchaos.config import Config
    from hostchaos.engine import Engine
    from hostchaos.errors import HostchaosError
    from hostchaos.warden import OnDemand

    config = Config.load()
    engine = Engine(config, warden=OnDemand(config.state_dir))
    if revive:
        try:
            engine.revive_warden()
        except HostchaosError as exc:
            sys.stderr.write(f"hostchaos: warning: {exc}\n")
            sys.stderr.flush()
    return engine


class LocalBackend:
    """The engine in this process (the agent is not running)."""

    def __init__(self) -> None:
        from hostchaos.agent.service import Client, FaultService

        self.service = FaultService(make_engine(), in_process=True)
        self.client = Client.this_process()

    def plan(self, kind: str, options: dict[str, Any], duration: float | None,
             lease: float | None) -> dict[str, Any]:
        return self.service.plan(kind, options, duration, lease)

    def inject(self, kind: str, options: dict[str, Any], duration: float | None,
               lease: float | None) -> dict[str, Any]:
        return self.service.inject(kind, options, duration, lease, client=self.client)

    def listing(self, include_ended: bool) -> dict[str, Any]:
        return self.service.listing(include_ended)

    def status(self, fault_id: str) -> dict[str, Any]:
        return self.service.get(fault_id)

    def peek(self, fault_id: str) -> dict[str, Any]:
        return self.service.get(fault_id, observe=False)

    def extend(self, fault_id: str, duration: float | None) -> dict[str, Any]:
        return self.service.extend(fault_id, duration, client=self.client)

    def rollback(self, fault_id: str, reason: str = "requested") -> dict[str, Any]:
        return self.service.rollback(fault_id, client=self.client, reason=reason)

    def rollback_all(self) -> dict[str, Any]:
        return self.service.rollback_all(client=self.client)


#: what a URL path segment holds as it is (urllib.parse.quote's safe set with safe="")
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~")


def quote(text: str) -> str:
    """``urllib.parse.quote(text, safe="")``, without urllib.parse (3 ms of the fast path)."""
    return "".join(chr(b) if b in _UNRESERVED else f"%{b:02X}" for b in text.encode())


class AgentBackend:
    """The agent's API (it answered on its socket for our state directory)."""

    def __init__(self, client: AgentClient) -> None:
        self.client = client

    @staticmethod
    def _body(kind: str, options: dict[str, Any], duration: float | None,
              lease: float | None, dry_run: bool) -> dict[str, Any]:
        body: dict[str, Any] = {"kind": kind, "options": options}
        if duration is not None:
            body["for"] = duration
        if lease is not None:
            body["lease"] = lease
        if dry_run:
            body["dry_run"] = True
        return body

    @staticmethod
    def _url(fault_id: str, tail: str = "") -> str:
        return f"/v1/faults/{quote(fault_id)}{tail}"

    def plan(self, kind: str, options: dict[str, Any], duration: float | None,
             lease: float | None) -> dict[str, Any]:
        result: dict[str, Any] = self.client.call(
            "POST", "/v1/faults", self._body(kind, options, duration, lease, True))
        return result

    def inject(self, kind: str, options: dict[str, Any], duration: float | None,
               lease: float | None) -> dict[str, Any]:
        result: dict[str, Any] = self.client.call(
            "POST", "/v1/faults", self._body(kind, options, duration, lease, False), ok=(201,))
        return result

    def listing(self, include_ended: bool) -> dict[str, Any]:
        result: dict[str, Any] = self.client.call(
            "GET", "/v1/faults" + ("?all=true" if include_ended else ""))
        return result

    def status(self, fault_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.client.call("GET", self._url(fault_id))
        return result

    def peek(self, fault_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.client.call("GET", self._url(fault_id, "?observe=false"))
        return result

    def extend(self, fault_id: str, duration: float | None) -> dict[str, Any]:
        body = {"for": duration} if duration is not None else {}
        result: dict[str, Any] = self.client.call("POST", self._url(fault_id, "/extend"), body)
        return result

    def rollback(self, fault_id: str, reason: str = "requested") -> dict[str, Any]:
        tail = "" if reason == "requested" else "?reason=" + quote(reason)
        result: dict[str, Any] = self.client.call("DELETE", self._url(fault_id, tail))
        return result

    def rollback_all(self) -> dict[str, Any]:
        status, data = self.client.request("POST", "/v1/rollback-all", {})
        if isinstance(data, dict) and "rolled_back" in data and "errors" in data:
            return {"rolled_back": data["rolled_back"], "errors": data["errors"]}
        from hostchaos.agent.client import error_from

        raise error_from(status, data)


def agent_backend() -> AgentBackend | None:
    """The agent's backend if it answers on its socket for this state directory."""
    from hostchaos.agent.client import answering
    from hostchaos.config_file import agent_location

    socket_path, state_dir = agent_location()
    client = answering(socket_path, state_dir)
    return AgentBackend(client) if client is not None else None


def get_backend() -> Backend:
    """The agent if it answers on its socket for this state directory, else this process."""
    from hostchaos.config import Config

    Config.load()  # a broken config file is reported before anything is asked
    return agent_backend() or LocalBackend()
