"""The commands' backends: :mod:`hostchaos.backend` (here under the name the commands use)."""

from __future__ import annotations

from hostchaos.backend import AgentBackend, LocalBackend, agent_backend, get_backend

__all__ = ["AgentBackend", "LocalBackend", "agent_backend", "get_backend"]
