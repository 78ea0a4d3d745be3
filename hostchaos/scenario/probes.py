"""Probes: how a scenario watches the system it breaks.

Each probe is sampled by a thread of its own every ``every`` seconds from the
start of the run to its end; a sample is (time since the run began, passed,
latency in ms, a short detail). The kinds:

- ``command``: run ``argv`` (no shell), pass if it exits with ``exit`` (0)
  within ``timeout``;
- ``http``: one request to ``url``, pass on ``status`` (200) within
  ``timeout`` and, if given, ``max-latency``; the connection is kept open
  between samples (``keep-alive: false`` opens one per sample), as a client's
  connection pool would;
- ``tcp``: connect to ``host``:``port`` within ``timeout`` (and ``max-latency``);
- ``process``: ``pid`` is alive, or some process is named ``name``.

With ``netns: NAME`` the probe runs inside that network namespace (the
sampling thread joins it; a command runs under ``nsenter``).
"""

from __future__ import annotations

import http.client
import socket
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass

from hostchaos.errors import TargetNotFoundError
from hostchaos.scenario.model import Probe

Check = Callable[[], tuple[bool, float | None, str]]


@dataclass(frozen=True)
class Sample:
    """One probe result: ``t`` seconds after the run began (monotonic)."""

    t: float
    ok: bool
    latency_ms: float | None
    detail: str

    def to_list(self) -> list[object]:
        return [round(self.t, 3), self.ok,
                None if self.latency_ms is None else round(self.latency_ms, 2), self.detail]


def _elapsed_ms(started: float) -> float:
    return (time.monotonic() - started) * 1000


def _command_check(probe: Probe) -> Check:
    argv = list(probe.settings["argv"])
    if probe.netns:
        argv = ["nsenter", f"--net=/run/netns/{probe.netns}", "--", *argv]
    expected = probe.settings["exit"]

    def check() -> tuple[bool, float | None, str]:
        started = time.monotonic()
        try:
            result = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, timeout=probe.timeout, check=False)
        except subprocess.TimeoutExpired:
            return False, _elapsed_ms(started), f"no exit within {probe.timeout:g} s"
        except OSError as exc:
            return False, None, f"cannot run {argv[0]}: {exc.strerror}"
        latency = _elapsed_ms(started)
        if result.returncode == expected:
            return True, latency, f"exit {result.returncode}"
        tail = result.stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
        return False, latency, f"exit {result.returncode} {tail[0][:120]}".strip()
    return check


def _limit(probe: Probe, latency: float) -> str | None:
    limit = probe.settings.get("max-latency")
    if limit is not None and latency > limit * 1000:
        return f"{latency:.0f} ms is over max-latency {limit * 1000:.0f} ms"
    return None


def _http_check(probe: Probe) -> Check:
    url = urllib.parse.urlsplit(probe.settings["url"])
    secure = url.scheme == "https"
    target = url.path or "/"
    if url.query:
        target += "?" + url.query
    keep = probe.settings["keep-alive"]
    idle: list[http.client.HTTPConnection] = []  # a client's pool: samples may overlap
    lock = threading.Lock()

    def connection() -> http.client.HTTPConnection:
        with lock:
            if idle:
                return idle.pop()
        cls = http.client.HTTPSConnection if secure else http.client.HTTPConnection
        return cls(url.hostname or "", url.port, timeout=probe.timeout)

    def check() -> tuple[bool, float | None, str]:
        started = time.monotonic()
        conn = connection()
        try:
            conn.request(probe.settings["method"], target,
                         headers={"Connection": "keep-alive" if keep else "close"})
            response = conn.getresponse()
            response.read()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            return False, _elapsed_ms(started), f"{type(exc).__name__}: {exc}"[:160]
        latency = _elapsed_ms(started)
        if keep and not response.will_close:
            with lock:
                idle.append(conn)
        else:
            conn.close()
        if response.status != probe.settings["status"]:
            return False, latency, f"status {response.status}"
        over = _limit(probe, latency)
        return (over is None), latency, over or f"status {response.status}"
    return check


def _tcp_check(probe: Probe) -> Check:
    host, port = probe.settings["host"], probe.settings["port"]

    def check() -> tuple[bool, float | None, str]:
        started = time.monotonic()
        try:
            with socket.create_connection((host, port), timeout=probe.timeout):
                latency = _elapsed_ms(started)
        except OSError as exc:
            return False, _elapsed_ms(started), f"{type(exc).__name__}: {exc}"[:160]
        over = _limit(probe, latency)
        return (over is None), latency, over or "connected"
    return check


def _process_check(probe: Probe) -> Check:
    from hostchaos.system import procs

    pid, name = probe.settings.get("pid"), probe.settings.get("name")

    def check() -> tuple[bool, float | None, str]:
        if pid is not None:
            alive = procs.exists(pid)
            return alive, None, f"pid {pid} {'alive' if alive else 'gone'}"
        found = [p for p in procs.all_pids() if procs.comm(p) == name and procs.exists(p)]
        return bool(found), None, f"{len(found)} named {name}"
    return check


CHECKS: dict[str, Callable[[Probe], Check]] = {
    "command": _command_check, "http": _http_check, "tcp": _tcp_check,
    "process": _process_check,
}


class Sampler(threading.Thread):
    """Samples one probe on schedule until stopped; ``samples`` grows as results come in.

    A sample starts every ``every`` seconds whether or not the previous one has
    answered (a hung request must not delay the next), each in a short-lived
    worker thread (at most ``timeout / every + 2`` at once); a sample is stamped
    with the time it started.
    """

    def __init__(self, probe: Probe, origin: float) -> None:
        super().__init__(name=f"probe {probe.name}", daemon=True)
        self.probe = probe
        self.origin = origin
        self.samples: list[Sample] = []
        self.problem: str | None = None
        self._stop_event = threading.Event()
        self._lock = threading.Lock()
        self._netns_fd: int | None = None
        self._slots = threading.BoundedSemaphore(int(probe.timeout / probe.every) + 2)

    def stop(self) -> None:
        self._stop_event.set()

    def snapshot(self) -> list[Sample]:
        with self._lock:
            return sorted(self.samples, key=lambda s: s.t)

    def run(self) -> None:
        try:
            if self.probe.netns and self.probe.kind in ("http", "tcp"):
                from hostchaos.system import namespaces

                self._netns_fd = namespaces.open_target(f"/run/netns/{self.probe.netns}",
                                                        self.probe.netns)
            check = CHECKS[self.probe.kind](self.probe)
        except Exception as exc:  # reported as the probe's failure, never a traceback
            self.problem = str(exc)
            return
        workers: list[threading.Thread] = []
        tick = time.monotonic()
        try:
            while not self._stop_event.is_set():
                if self._slots.acquire(timeout=self.probe.timeout + 1):
                    worker = threading.Thread(target=self._sample, args=(check,), daemon=True)
                    worker.start()
                    workers.append(worker)
                tick += self.probe.every
                if time.monotonic() - tick > self.probe.every:  # fell behind: do not burst
                    tick = time.monotonic()
                self._stop_event.wait(max(tick - time.monotonic(), 0.0))
        finally:
            for worker in workers:
                worker.join(timeout=self.probe.timeout + 1)
            if self._netns_fd is not None:
                import os

                os.close(self._netns_fd)

    def _sample(self, check: Check) -> None:
        started = time.monotonic()
        try:
            if self._netns_fd is not None:
                from hostchaos.system import namespaces

                namespaces.setns(self._netns_fd)  # this worker thread only
            ok, latency, detail = check()
        except Exception as exc:
            ok, latency, detail = False, None, f"{type(exc).__name__}: {exc}"[:160]
        finally:
            self._slots.release()
        with self._lock:
            self.samples.append(Sample(started - self.origin, ok, latency, detail))


def check_netns(probe: Probe) -> None:
    """TargetNotFoundError if the probe's network namespace is not there."""
    import os

    if probe.netns and not os.path.exists(f"/run/netns/{probe.netns}"):
        raise TargetNotFoundError(f"probe {probe.name}: network namespace {probe.netns} "
                                  "not found")
