"""`hostchaos agent`: run the API service (see docs/api.md)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click


@click.command()
@click.option("--socket", "socket_path", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Unix socket to serve on (default: socket in the config file, "
                                 "$HOSTCHAOS_SOCKET, /run/hostchaos/hostchaos.sock).")
@click.option("--group", default=None, metavar="NAME",
              help="Members of this group may use the API too (socket 0660); default: root "
                   "only (0600).")
@click.option("--tcp", default=None, metavar="HOST:PORT",
              help="Also listen on this loopback address (127.0.0.1:PORT or [::1]:PORT). Off "
                   "by default.")
@click.option("--metrics-textfile", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Keep this node_exporter textfile current (every 15 s).")
def agent(socket_path: Path | None, group: str | None, tcp: str | None,
          metrics_textfile: Path | None) -> None:
    """Serve the hostchaos API (HTTP/1.1 + JSON) on a unix socket.

    Sweeps the journal first (faults past their deadline or lease are rolled
    back), then guards the rest with their original deadlines from a warden
    thread, and serves; tells systemd READY=1 once serving and pets its
    watchdog. SIGTERM rolls every open fault back and exits 0. A small
    sentinel process starts a warden process the moment the agent dies, so
    even kill -9 of the agent leaves every deadline enforced. While it
    answers, the other hostchaos commands go through it.

    \b
    Example:
      sudo hostchaos agent --group chaos
      curl --unix-socket /run/hostchaos/hostchaos.sock http://agent/v1/health
    """
    import dataclasses

    from hostchaos.agent.server import Agent
    from hostchaos.config import Config

    config = Config.load()
    changes: dict[str, Any] = {key: value for key, value in (
        ("socket_path", socket_path), ("socket_group", group), ("tcp", tcp),
        ("metrics_textfile", metrics_textfile)) if value is not None}
    config = dataclasses.replace(config, **changes)
    if tcp is not None:
        from hostchaos.agent.sockets import tcp_address

        tcp_address(tcp)  # bad input before anything starts
    code = Agent(config).run()
    # Every open fault has been rolled back (or left to its warden and the next sweep):
    # exit now, without waiting for a request thread that may still be stuck in the kernel.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
