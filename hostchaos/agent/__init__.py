"""The hostchaos agent: the API service on a unix socket (see docs/api.md).

``hostchaos agent`` runs :mod:`hostchaos.agent.server`; the CLI talks to it
through :mod:`hostchaos.agent.client`, which imports only the standard library
(so the thin-client path never loads pyroute2, psutil, uvicorn or starlette).
Nothing is imported here.
"""
