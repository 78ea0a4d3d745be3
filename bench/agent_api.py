"""The agent's footprint and a request's latency over its unix socket.

Starts a real `hostchaos agent` on a temporary socket and state directory and
reports its resident memory (VmRSS) after start-up and after the requests,
then the latency of ``GET /v1/health`` and ``GET /v1/faults`` (one connection
per request, as the CLI makes them), and the wall time of a whole
`hostchaos list` process through the agent and in-process. For comparison it
runs the same health endpoint on the standard library's ThreadingHTTPServer
over AF_UNIX (no request validation, no h11, no router: the floor).

    .venv/bin/python bench/agent_api.py [--rounds 300] [--write bench/results/agent_api.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.agent import raw_request, start_agent, stop_agent  # noqa: E402

STDLIB_SERVER = textwrap.dedent("""
    import json, os, socket, socketserver, sys
    from http.server import BaseHTTPRequestHandler
    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        def address_string(self): return "unix"
        def log_message(self, *a): pass
        def do_GET(self):
            body = json.dumps({"status": "ok", "pid": os.getpid()}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
    class S(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
        daemon_threads = True
    server = S(sys.argv[1], H)
    print("ready", flush=True)
    server.serve_forever()
""")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def latencies(sock: Path, path: str, rounds: int) -> dict[str, float]:
    raw_request(sock, "GET", path)  # warm-up
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        status, _, _ = raw_request(sock, "GET", path)
        times.append((time.perf_counter() - started) * 1000)
        assert status == 200, status
    times.sort()
    return {"median_ms": round(statistics.median(times), 3),
            "p90_ms": round(times[int(len(times) * 0.9)], 3), "min_ms": round(times[0], 3)}


def cli_seconds(env: dict[str, str], rounds: int = 10) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "hostchaos", "list"], env=env, check=True,
                       capture_output=True, cwd=REPO)
        times.append(time.perf_counter() - started)
    return round(statistics.median(times) * 1000, 1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()
    result: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        state, sock = base / "state", base / "run" / "agent.sock"
        env = {**os.environ, "HOSTCHAOS_STATE_DIR": str(state), "HOSTCHAOS_SOCKET": str(sock),
               "HOSTCHAOS_CONFIG": str(base / "none.toml")}
        result["cli_list_in_process_ms"] = cli_seconds(env)
        agent = start_agent(state, sock, env=env)
        try:
            result["agent_rss_kib_at_start"] = rss_kib(agent.pid)
            result["health"] = latencies(sock, "/v1/health", args.rounds)
            result["list"] = latencies(sock, "/v1/faults", args.rounds)
            result["cli_list_through_agent_ms"] = cli_seconds(env)
            result["agent_rss_kib_after"] = rss_kib(agent.pid)
        finally:
            stop_agent(agent)
        floor_sock = base / "stdlib.sock"
        floor = subprocess.Popen([sys.executable, "-c", STDLIB_SERVER, str(floor_sock)],
                                 stdout=subprocess.PIPE, text=True)
        try:
            assert floor.stdout is not None and floor.stdout.readline().strip() == "ready"
            result["stdlib_rss_kib"] = rss_kib(floor.pid)
            result["stdlib_health"] = latencies(floor_sock, "/", args.rounds)
        finally:
            floor.kill()
            floor.wait()
    print(json.dumps(result, indent=2))
    if args.write:
        args.write.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
