"""Measure traffic between two network namespaces: TCP throughput and numbered UDP probes.

Each side runs as ``python -m tests.support.traffic MODE ...`` inside its
namespace (``ip netns exec NAME`` or ``nsenter --net=/proc/PID/ns/net``), so
all traffic stays inside the sandbox the test built.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MAGIC = b"hcprobe!"


def in_netns(target: str | int) -> list[str]:
    if isinstance(target, int):
        return ["nsenter", f"--net=/proc/{target}/ns/net"]
    return ["ip", "netns", "exec", target]


def _start(target: str | int, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([*in_netns(target), sys.executable, "-m", "tests.support.traffic",
                             *args], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(REPO)})


def _family(address: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


@dataclass(frozen=True)
class UdpResult:
    sent: int
    received: int
    unique: int
    duplicates: int
    inversions: int

    @property
    def loss_percent(self) -> float:
        return 100.0 * (self.sent - self.unique) / self.sent

    @property
    def duplicate_percent(self) -> float:
        return 100.0 * self.duplicates / self.sent


def tcp_throughput(server: str | int, client: str | int, address: str, *, seconds: float = 3.0,
                   port: int = 5201) -> float:
    """Bits per second the client pushes to the server for ``seconds``."""
    sink = _start(server, "tcp-sink", address, str(port), str(seconds + 30))
    try:
        assert sink.stdout is not None
        assert sink.stdout.readline().strip() == "READY", sink.stderr.read() if sink.stderr else ""
        source = _start(client, "tcp-source", address, str(port), str(seconds))
        source.communicate(timeout=seconds + 60)
        out, _ = sink.communicate(timeout=60)
        result = json.loads(out.strip().splitlines()[-1])
        return float(result["bits_per_second"])
    finally:
        if sink.poll() is None:
            sink.kill()
            sink.wait()


def udp_probe(server: str | int, client: str | int, address: str, *, count: int = 2000,
              interval: float = 0.0005, port: int = 5202, settle: float = 2.0) -> UdpResult:
    """Send ``count`` numbered datagrams and count what arrives, twice or out of order."""
    sink = _start(server, "udp-sink", address, str(port))
    try:
        assert sink.stdout is not None
        assert sink.stdout.readline().strip() == "READY"
        source = _start(client, "udp-source", address, str(port), str(count), str(interval))
        source.communicate(timeout=600)
        time.sleep(settle)
        sink.terminate()
        out, _ = sink.communicate(timeout=30)
        data = json.loads(out.strip().splitlines()[-1])
        return UdpResult(sent=count, received=data["received"], unique=data["unique"],
                         duplicates=data["duplicates"], inversions=data["inversions"])
    finally:
        if sink.poll() is None:
            sink.kill()
            sink.wait()


# -- the two ends, run inside the namespaces ---------------------------------------

def _tcp_sink(address: str, port: int, timeout: float) -> None:
    with socket.socket(_family(address), socket.SOCK_STREAM) as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind((address, port))
        server.listen(1)
        server.settimeout(timeout)
        print("READY", flush=True)
        conn, _ = server.accept()
        total, first, last = 0, 0.0, 0.0
        with conn:
            while chunk := conn.recv(65536):
                now = time.monotonic()
                if not total:
                    first = now
                total += len(chunk)
                last = now
        seconds = max(last - first, 1e-6)
        print(json.dumps({"bytes": total, "seconds": seconds,
                          "bits_per_second": total * 8 / seconds}), flush=True)


def _tcp_source(address: str, port: int, seconds: float) -> None:
    block = b"\0" * 16384
    with socket.create_connection((address, port), timeout=30) as conn:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            conn.sendall(block)


def _udp_sink(address: str, port: int) -> None:
    import signal

    seen: dict[int, int] = {}
    state = {"received": 0, "inversions": 0, "highest": -1}

    def report(*_: object) -> None:
        print(json.dumps({"received": state["received"], "unique": len(seen),
                          "duplicates": sum(n - 1 for n in seen.values()),
                          "inversions": state["inversions"]}), flush=True)
        os._exit(0)

    signal.signal(signal.SIGTERM, report)
    with socket.socket(_family(address), socket.SOCK_DGRAM) as sock:
        sock.bind((address, port))
        print("READY", flush=True)
        while True:
            data = sock.recv(2048)
            if not data.startswith(MAGIC):
                continue
            (seq,) = struct.unpack("!I", data[len(MAGIC):len(MAGIC) + 4])
            state["received"] += 1
            seen[seq] = seen.get(seq, 0) + 1
            if seq < state["highest"]:
                state["inversions"] += 1
            state["highest"] = max(state["highest"], seq)


def _udp_source(address: str, port: int, count: int, interval: float) -> None:
    with socket.socket(_family(address), socket.SOCK_DGRAM) as sock:
        for seq in range(count):
            sock.sendto(MAGIC + struct.pack("!I", seq) + b"x" * 64, (address, port))
            if interval:
                time.sleep(interval)


def main(argv: list[str]) -> None:
    mode, address, port, *rest = argv
    if mode == "tcp-sink":
        _tcp_sink(address, int(port), float(rest[0]))
    elif mode == "tcp-source":
        _tcp_source(address, int(port), float(rest[0]))
    elif mode == "udp-sink":
        _udp_sink(address, int(port))
    elif mode == "udp-source":
        _udp_source(address, int(port), int(rest[0]), float(rest[1]))
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main(sys.argv[1:])
