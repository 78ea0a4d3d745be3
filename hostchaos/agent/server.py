"""`hostchaos agent`: the API on a unix socket, served by uvicorn, with sd_notify and a watchdog.

Start-up, in this order: sweep the journal (faults past their deadline or
lease are rolled back, records a reboot undid are closed), start the warden
that guards the rest with their original deadlines
(:meth:`Agent._start_deadline_enforcement`: a thread of the agent, with a
sentinel process that starts a warden process the moment the agent dies, so
the dead-man's switch never depends on the agent staying up; see
:mod:`hostchaos.agent.warden_host`), bind
the socket, serve, and only then tell systemd READY=1. While serving, uvicorn's
main loop ticks every 0.1 s on the event loop; each tick that is due sends
WATCHDOG=1 (so a wedged event loop stops the petting and systemd restarts the
agent) and keeps the node_exporter textfile current. On SIGTERM (or SIGINT) it
stops accepting, sends STOPPING=1, rolls every open fault back and exits 0 (7
when a rollback failed).

The sockets are made by :mod:`hostchaos.agent.sockets` (0600 or 0660 with a
group; loopback TCP only when configured) or passed by systemd (socket
activation). Every connection's peer is checked (:mod:`hostchaos.agent.peers`)
whatever the file mode says.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Generator
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from hostchaos.agent import notify
from hostchaos.agent.app import CLIENT_KEY, create_app, error_response
from hostchaos.agent.logs import INFO, NOTICE, WARNING, log
from hostchaos.agent.metrics import AgentMetrics
from hostchaos.agent.peers import PeerPolicy
from hostchaos.agent.service import Client, FaultService
from hostchaos.agent.sockets import (
    check_socket_path,
    group_id,
    prepare_tcp_socket,
    prepare_unix_socket,
    tcp_address,
)
from hostchaos.config import Config
from hostchaos.errors import (
    ConflictError,
    HostchaosError,
    RollbackError,
)

TEXTFILE_EVERY = 15.0
GRACEFUL_SECONDS = 10
#: at stop, how long rollback-all waits for a request still using the engine
STOP_WAIT_SECONDS = 10.0


def settle_garbage_collector() -> None:
    """Keep the collector's pauses out of the warden's deadlines.

    A full collection walks every tracked object: with uvicorn, starlette,
    prometheus-client and pyroute2 loaded that is ~45 000 objects and 25-30 ms on
    the build machine, more with a thousand records, and the warden thread
    waits for it. What exists after start-up lives as long as the agent, so it is
    moved out of the collector's sight (``gc.freeze``): a full collection then
    walks only what came after.
    """
    import gc

    gc.collect()
    gc.freeze()


def protocol_for(policy: PeerPolicy) -> type[H11Protocol]:
    """uvicorn's h11 protocol, judging each connection's peer before any request is read."""

    class PeerCheckedProtocol(H11Protocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            peer, allowed = policy.judge(transport)
            inner = self.app
            client = peer.client if peer else Client(None, None)
            if allowed:
                async def app(scope: Any, receive: Any, send: Any) -> None:
                    scope[CLIENT_KEY] = client
                    await inner(scope, receive, send)
            else:
                async def app(scope: Any, receive: Any, send: Any) -> None:
                    if scope["type"] != "http":
                        return
                    log(WARNING, "request refused", status=403, client_uid=client.uid,
                        client_pid=client.pid, path=scope.get("path"))
                    response = error_response(403, "forbidden", f"uid {client.uid} may not use "
                                              "the hostchaos API (root or the configured group "
                                              "only)", exit_code=3)
                    await response(scope, receive, send)
            self.app = app

    return PeerCheckedProtocol


def server_config(app: Any, policy: PeerPolicy) -> uvicorn.Config:
    """uvicorn's settings: h11 with the peer check, no lifespan, no access log, small limits."""
    return uvicorn.Config(
        app, http=protocol_for(policy), loop="asyncio", lifespan="off", log_config=None,
        access_log=False, proxy_headers=False, server_header=False,
        timeout_graceful_shutdown=GRACEFUL_SECONDS, limit_concurrency=64,
        h11_max_incomplete_event_size=64 * 1024, timeout_keep_alive=5)


class AgentServer(uvicorn.Server):
    """uvicorn's server, with our signals, READY=1 after start-up, and a petted watchdog."""

    def __init__(self, config: uvicorn.Config, *, on_ready: Callable[[], None] | None = None,
                 metrics: AgentMetrics | None = None, textfile: Path | None = None) -> None:
        super().__init__(config)
        self.on_ready = on_ready
        self.metrics = metrics
        self.textfile = textfile
        self.stop_signal: int | None = None
        self._watchdog_every = notify.watchdog_interval()
        self._last_pet = 0.0
        self._last_textfile = 0.0
        self._textfile_busy = threading.Lock()

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        """SIGTERM/SIGINT stop serving; unlike uvicorn's, they are not re-raised after."""
        if threading.current_thread() is not threading.main_thread():
            yield  # served from a thread (tests): its owner stops it with should_exit
            return

        def on_signal(signum: int, frame: FrameType | None) -> None:
            if self.should_exit and signum == signal.SIGINT:
                self.force_exit = True
            self.stop_signal = self.stop_signal or signum
            self.should_exit = True

        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started and not self.should_exit and self.on_ready is not None:
            self.on_ready()

    async def on_tick(self, counter: int) -> bool:
        now = time.monotonic()
        if self._watchdog_every is not None and now - self._last_pet >= self._watchdog_every:
            notify.notify("WATCHDOG=1")
            self._last_pet = now
        textfile = self.textfile
        if textfile is not None and now - self._last_textfile >= TEXTFILE_EVERY:
            self._last_textfile = now
            if self._textfile_busy.acquire(blocking=False):
                asyncio.get_running_loop().run_in_executor(None, self._write_textfile, textfile)
        return await super().on_tick(counter)

    def _write_textfile(self, path: Path) -> None:
        try:
            if self.metrics is not None:
                self.metrics.write_textfile(path)
        except Exception as exc:
            log(WARNING, "cannot write the metrics textfile", path=path, error=exc)
        finally:
            self._textfile_busy.release()


class Agent:
    """The hostchaos agent of one state directory: sweep, serve the API, roll back on stop."""

    def __init__(self, config: Config) -> None:
        from hostchaos.agent.warden_host import HostedWarden
        from hostchaos.engine import Engine

        self.config = config
        # the warden is a thread of the agent; its sentinel starts a warden process the
        # moment the agent dies, so a crashed agent never takes enforcement down with it
        self.warden = HostedWarden(config)
        self.engine = Engine(config, warden=self.warden)
        self.metrics = AgentMetrics(self.engine.journal)
        self.service = FaultService(self.engine, metrics=self.metrics)
        self.sockets: list[socket.socket] = []
        self._socket_identity: tuple[int, int] | None = None
        self._agent_lock: int | None = None

    def _start_deadline_enforcement(self) -> None:
        """Start the warden thread (and its sentinel).

        The start-up sweep left active faults whose warden is gone (a crash
        took it): the warden adopts them, rolls back at once what is overdue
        and keeps the original deadlines of the rest. A warden process that
        still guards faults hands them over first.
        """
        self.warden.start()

    def hold_agent_lock(self) -> None:
        """One agent per state directory: flock ``agent.lock`` for the agent's lifetime.

        ConflictError (naming the holder) if another agent has it. A state
        directory that cannot hold the file (read-only, full) is logged and
        the agent serves anyway: rollbacks must stay possible.
        """
        path = self.config.state_dir / "agent.lock"
        try:
            self.engine.journal.prepare()
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except (OSError, HostchaosError) as exc:
            log(WARNING, "cannot hold the agent lock", path=path, error=exc)
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise ConflictError(f"another agent (pid {holder}) already serves state directory "
                                f"{self.config.state_dir}; stop it first") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._agent_lock = fd

    def sweep(self) -> None:
        self.metrics.journal_collector.start()
        try:
            report = self.engine.sweep(orphans=False)  # a new warden adopts those
        except Exception as exc:  # serve anyway: list and rollback must stay possible
            log(WARNING, "start-up sweep failed", error=exc)
            return
        for item in report.rolled_back:
            log(NOTICE, "sweep rolled back", fault_id=item["id"], reason=item["reason"])
        for item in report.failed:
            log(WARNING, "sweep could not roll back", fault_id=item["id"], error=item["error"])
        log(INFO, "swept the journal", rolled_back=len(report.rolled_back),
            still_active=len(report.still_active), failed=len(report.failed))

    def bind(self) -> None:
        """The unix socket: systemd's (socket activation), else one of our own."""
        inherited = [socket.socket(fileno=fd) for fd in notify.listen_fds()]
        unix = [s for s in inherited if s.family == socket.AF_UNIX]
        for sock in inherited:
            if sock not in unix:
                sock.close()
        if unix:
            for sock in unix:
                sock.setblocking(False)
                sock.set_inheritable(False)  # no child (a runtime lookup ...) holds it open
            self.sockets.extend(unix)  # systemd owns the file: it is not removed on exit
            log(INFO, "serving the sockets systemd passed", count=len(unix))
        else:
            self.sockets.append(prepare_unix_socket(self.config.socket_path,
                                                    self.config.socket_group))
            info = os.lstat(self.config.socket_path)
            self._socket_identity = (info.st_dev, info.st_ino)
        if self.config.tcp:
            self.sockets.append(prepare_tcp_socket(self.config.tcp))

    def ready(self) -> None:
        notify.notify("READY=1\nSTATUS=serving on " + str(self.config.socket_path))
        log(INFO, "ready", socket=self.config.socket_path, tcp=self.config.tcp,
            state_dir=self.config.state_dir, pid=os.getpid())

    def run(self) -> int:
        """Sweep, serve until SIGTERM/SIGINT, roll everything back; the exit code."""
        if not os.environ.get("LISTEN_FDS"):  # systemd's socket is not ours to check
            check_socket_path(self.config.socket_path, self.config.socket_group)
        if self.config.tcp:
            tcp_address(self.config.tcp)
        if threading.current_thread() is threading.main_thread():
            # Ctrl-Z in the agent's terminal must not stop its warden thread with it
            for sig in (signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU):
                signal.signal(sig, signal.SIG_IGN)
        self.hold_agent_lock()
        self.sweep()
        self._start_deadline_enforcement()
        settle_garbage_collector()
        self.bind()
        policy = PeerPolicy(group_id(self.config.socket_group)
                            if self.config.socket_group else None)
        app = create_app(self.service, metrics=self.metrics)
        server = AgentServer(server_config(app, policy), on_ready=self.ready,
                             metrics=self.metrics, textfile=self.config.metrics_textfile)
        try:
            server.run(sockets=self.sockets)
        finally:
            self._unlink_socket()
        notify.notify("STOPPING=1")
        name = signal.Signals(server.stop_signal).name if server.stop_signal else "stop"
        log(NOTICE, "stopping: rolling back every open fault", signal=name)
        try:
            result = self.service.rollback_all(client=Client.this_process(),
                                               reason=f"the agent stopped ({name})",
                                               wait=STOP_WAIT_SECONDS)
        except HostchaosError as exc:
            log(WARNING, "rollback at stop failed; a warden process takes the faults over",
                error=exc)
            self.warden.stop(nothing_open=False)
            return RollbackError.exit_code
        self._stop_warden()
        for message in result["errors"]:
            log(WARNING, "rollback at stop failed", error=message)
        log(INFO, "stopped", rolled_back=len(result["rolled_back"]),
            failed=len(result["errors"]))
        return RollbackError.exit_code if result["errors"] else 0

    def _stop_warden(self) -> None:
        """End the warden thread; what is still open goes to the sentinel's warden process."""
        try:
            nothing_open = not self.engine.journal.has_open_records()
        except HostchaosError:
            nothing_open = False
        self.warden.stop(nothing_open=nothing_open)

    def _unlink_socket(self) -> None:
        """Close the listeners; remove the socket file if it is still the one we made."""
        for sock in self.sockets:
            sock.close()
        path = self.config.socket_path
        with contextlib.suppress(OSError):
            info = os.lstat(path)
            if self._socket_identity and (info.st_dev, info.st_ino) == self._socket_identity:
                os.unlink(path)
