"""A scenario against a real HTTP server in a namespace, its client as the probe (netem).

The server (HTTP/1.1, keep-alive) runs in namespace b; the probe samples it from
namespace a, across the veth that the faults shape. Latency must raise the probe's
own measured latency by the injected amount; a partition must fail it within one
sampling period and let it recover after rollback; three runs give MTTR and the
recovery rate.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from hostchaos.sandbox import NetnsPair
from tests.support.cli import hostchaos, open_records
from tests.support.traffic import REPO, in_netns

SERVER = r"""
import http.server, sys
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        # one write, as real servers answer a small request: headers and body in one
        # segment (two writes would wait on Nagle for the delayed ACK of the first)
        self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    def log_message(self, *args):
        pass
    def handle(self):
        try:
            super().handle()
        except ConnectionError:
            pass
http.server.ThreadingHTTPServer((sys.argv[1], 8080), Handler).serve_forever()
"""
DELAY_MS = 250.0  # large beside the TCG guest's own jitter (tens of ms)
EVERY = 0.2


@pytest.fixture
def server(pair: NetnsPair) -> Iterator[str]:
    process = subprocess.Popen([*in_netns(pair.b), sys.executable, "-c", SERVER, pair.addr_b])
    try:
        url = f"http://{pair.addr_b}:8080/"
        probe = [*in_netns(pair.a), "python3", "-c",
                 f"import urllib.request; urllib.request.urlopen('{url}', timeout=1)"]
        for _ in range(100):
            if subprocess.run(probe, capture_output=True, check=False).returncode == 0:
                break
        yield url
    finally:
        process.kill()
        process.wait()


def test_latency_and_partition_seen_by_an_http_client(pair: NetnsPair, server: str,
                                                      state_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "http.yaml"
    path.write_text(f"""
name: slow, then cut off
settings: {{consecutive: 5, recovery-timeout: 10s, steady-timeout: 20s}}
probes:
  - name: api
    http: {{url: "{server}", status: 200}}
    netns: {pair.a}
    every: {EVERY}s
    timeout: 1s
steps:
  - latency: {{netns: {pair.a}, iface: {pair.iface_a}, dst: {pair.addr_b}/32, ms: {DELAY_MS:g},
              for: 4s}}
  - wait: 2s
  - partition: {{netns: {pair.a}, iface: {pair.iface_a}, dst: {pair.addr_b}/32, for: 3s}}
""")
    html = REPO / ".vm-out" / "scenario-http-report.html"  # written through to the host
    result = hostchaos("run", str(path), "--repeat", "3", "--json", "--html", str(html),
                       state_dir=state_dir, timeout=300)
    assert result.returncode == 0, result.stderr + result.stdout[-2000:]
    report = json.loads(result.stdout)
    summary = report["summary"]
    assert summary["runs"] == 3 and summary["recovery_rate"] == 1.0
    assert summary["mttr_s"] is not None
    for run in report["runs"]:
        assert run["outcome"] == "recovered", run["reason"]
        samples = run["probes"][0]["samples"]

        def latencies(start: float, end: float,
                      rows: list[list[object]] = samples) -> list[float]:
            return [float(row[2]) for row in rows  # type: ignore[arg-type]
                    if start <= float(row[0]) <= end and row[1]]  # type: ignore[arg-type]

        latency, partition = run["faults"]
        calm = latencies(0.0, latency["started_at"]) + \
            latencies(latency["ended_at"] + 0.3, partition["started_at"])
        slow = latencies(latency["applied_at"] + 0.3, latency["ended_at"] - 0.1)
        assert len(calm) >= 5 and len(slow) >= 5, (calm, slow)
        baseline, slowed = statistics.median(calm), statistics.median(slow)
        assert abs((slowed - baseline) - DELAY_MS) <= 0.1 * DELAY_MS, (baseline, slowed)
        cut = next(f for f in run["findings"] if f["kind"] == "partition")
        assert cut["detected"] and cut["time_to_detect"] <= EVERY + 0.05, cut
        assert cut["recovered"], cut
    assert not open_records(state_dir)
