"""Where a command's work is done: the agent when its socket answers, else this process.

Both backends answer with the same *views* (:mod:`hostchaos.agent.service`),
so every command prints the same thing either way. The agent path imports
only :mod:`hostchaos.agent.client` (standard library): no pyroute2, no psutil.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

if TYPE_CHECKING:
    from hostchaos.agent.client import AgentClient


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


class LocalBackend:
    """The engine in this process (the agent is not running)."""

    def __init__(self) -> None:
        from hostchaos.agent.service import Client, FaultService
        from hostchaos.cli.common import make_engine

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
        return f"/v1/faults/{quote(fault_id, safe='')}{tail}"

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
        tail = "" if reason == "requested" else "?reason=" + quote(reason, safe="")
        result: dict[str, Any] = self.client.call("DELETE", self._url(fault_id, tail))
        return result

    def rollback_all(self) -> dict[str, Any]:
        status, data = self.client.request("POST", "/v1/rollback-all", {})
        if isinstance(data, dict) and "rolled_back" in data and "errors" in data:
            return {"rolled_back": data["rolled_back"], "errors": data["errors"]}
        from hostchaos.agent.client import error_from

        raise error_from(status, data)


def get_backend() -> Backend:
    """The agent if it answers on its socket for this state directory, else this process."""
    from hostchaos.agent.client import answering
    from hostchaos.config import Config

    config = Config.load()
    client = answering(config.socket_path, config.state_dir)
    if client is not None:
        return AgentBackend(client)
    return LocalBackend()
