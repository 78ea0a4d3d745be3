"""Fidelity: what each fault was asked for against what a real measurement sees.

Every check builds its own sandbox, applies one fault through the engine in this
process, measures the effect the way the tests do (tests/support: real traffic
between the two namespaces of a NetnsPair, CPU ticks of a busy victim, a
memory hog's progress and its cgroup's peak, statvfs of a tmpfs, the clocks a
clock-ready victim prints), and rolls the fault back.

- network (netem, so the VM tier): ``latency`` (mean RTT over ping minus the
  base RTT), ``jitter`` (ping's mdev with a normal distribution), ``loss`` and
  ``duplicate`` (numbered UDP datagrams b -> a);
- host: ``rate`` (tbf; TCP throughput), ``cpu`` (CPU share of a busy victim),
  ``memory`` (peak usage of the victim's cgroup and where the OOM kill came),
  ``disk-fill`` (statvfs of a 128 MiB tmpfs: by size and by percent),
  ``clock-offset`` and ``clock-rate`` (a victim started by `hostchaos exec
  --clock-ready`).

    .venv/bin/python bench/fidelity.py --checks rate,cpu,memory,disk-fill,clock-offset,clock-rate
    scripts/vm-run --venv .venv -- python bench/fidelity.py --checks latency,jitter,loss,duplicate

(`bench/run.py` runs both with ``--write bench/results/fidelity-{host,vm}.json``.)
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import REPO, report, write
from hostchaos.config import Config
from hostchaos.engine import Engine
from hostchaos.faults.from_options import spec_from_options
from hostchaos.sandbox import NetnsPair

MiB = 1 << 20
Row = dict[str, Any]


def row(check: str, kind: str, requested: str, want: float, got: float, unit: str,
        how: str, **extra: Any) -> Row:
    error = got - want
    return {"check": check, "kind": kind, "requested": requested, "requested_value": want,
            "measured_value": round(got, 3), "unit": unit, "error": round(error, 3),
            "error_percent": round(100 * error / want, 2) if want else None, "how": how,
            **extra}


@contextmanager
def fault(engine: Engine, kind: str, options: dict[str, Any]) -> Iterator[str]:
    record = engine.inject(spec_from_options(kind, options), 600)
    try:
        yield record.id
    finally:
        engine.rollback(record.id)


@contextmanager
def sandbox(state: Path) -> Iterator[tuple[NetnsPair, Engine]]:
    with NetnsPair(prefix="hc-fid") as pair:
        try:
            yield pair, Engine(Config(state_dir=state))
        finally:
            subprocess.run(["umount", "--lazy", str(state / "netns")], capture_output=True,
                           check=False)


def on(pair: NetnsPair) -> dict[str, str]:
    return {"netns": pair.a, "iface": pair.iface_a}


# -- network -----------------------------------------------------------------------------

def check_latency(state: Path) -> list[Row]:
    with sandbox(state) as (pair, engine):
        base = pair.ping(count=20, interval=0.05).rtt_avg_ms or 0.0
        with fault(engine, "latency", {**on(pair), "ms": 100}):
            hit = pair.ping(count=50, interval=0.05)
        assert hit.rtt_avg_ms is not None, hit
        return [row("latency", "latency", "--ms 100", 100, hit.rtt_avg_ms - base, "ms",
                    f"ping a->b, 50 probes, mean RTT minus base RTT {base:.2f} ms",
                    base_ms=base)]


def check_jitter(state: Path) -> list[Row]:
    with sandbox(state) as (pair, engine):
        base = pair.ping(count=20, interval=0.05)
        opts = {**on(pair), "ms": 50, "jitter": 10, "distribution": "normal"}
        with fault(engine, "latency", opts):
            hit = pair.ping(count=200, interval=0.02)
        assert hit.rtt_avg_ms is not None and hit.rtt_mdev_ms is not None, hit
        return [row("jitter: mean", "latency", "--ms 50 --jitter 10 --distribution normal", 50,
                    hit.rtt_avg_ms - (base.rtt_avg_ms or 0.0), "ms",
                    "ping a->b, 200 probes, mean RTT minus base RTT"),
                row("jitter: spread", "latency", "--ms 50 --jitter 10 --distribution normal", 10,
                    hit.rtt_mdev_ms, "ms",
                    f"ping's mdev of 200 RTTs (base mdev {base.rtt_mdev_ms} ms)")]


def udp_percent(kind: str, state: Path, percent: float) -> list[Row]:
    from tests.support.traffic import udp_probe

    with sandbox(state) as (pair, engine):
        # egress of a's veth: the datagrams go a -> b
        with fault(engine, kind, {**on(pair), "percent": percent}):
            result = udp_probe(pair.b, pair.a, pair.addr_b, count=4000)
        got = result.loss_percent if kind == "loss" else result.duplicate_percent
        return [row(kind, kind, f"--percent {percent:g}", percent, got, "%",
                    f"{result.sent} numbered UDP datagrams a->b: {result.unique} arrived, "
                    f"{result.duplicates} twice")]


def check_loss(state: Path) -> list[Row]:
    return udp_percent("loss", state, 10)


def check_duplicate(state: Path) -> list[Row]:
    return udp_percent("duplicate", state, 10)


# -- host --------------------------------------------------------------------------------

def check_rate(state: Path) -> list[Row]:
    from tests.support.traffic import tcp_throughput

    out = []
    with sandbox(state) as (pair, engine):
        for rate, bits in (("2mbit", 2e6), ("10mbit", 10e6)):
            with fault(engine, "rate", {**on(pair), "rate": rate}):
                got = tcp_throughput(pair.b, pair.a, pair.addr_b, seconds=5)
            out.append(row("rate", "rate", f"--rate {rate}", bits / 1e6, got / 1e6, "Mbit/s",
                           "TCP a->b for 5 s, bytes received / time (payload, no headers)"))
    return out


def check_cpu(state: Path) -> list[Row]:
    from tests.support.victims import BUSY, Victim, cpu_share, free_share

    busy = Victim(BUSY)
    try:
        os.setpriority(os.PRIO_PROCESS, busy.pid, -20)
        free = free_share(busy.pid)
        engine = Engine(Config(state_dir=state))
        out = []
        for limit in (25, 50):
            with fault(engine, "cpu", {"pid": busy.pid, "limit": f"{limit}%"}):
                got = cpu_share(busy.pid, seconds=5)
            after = free_share(busy.pid)
            how = (f"utime+stime of a busy victim (nice -20) over 5 s; unlimited just before "
                   f"{free:.1f}%, just after {after:.1f}%")
            if min(free, after) < limit + 20:
                how += " (machine too busy for this limit to show: not a measurement of it)"
            out.append(row("cpu", "cpu", f"--limit {limit}%", limit, got, "% of a CPU", how))
            free = after
        return out
    finally:
        busy.kill()


def check_memory(state: Path) -> list[Row]:
    from tests.support.victims import MEMORY, victim

    engine = Engine(Config(state_dir=state))
    with victim(MEMORY) as hog:
        with fault(engine, "memory", {"pid": hog.pid, "max": "64M"}) as fault_id:
            hog.send("alloc 4 512")
            reached = 0
            while (line := hog.read(timeout=60)).startswith("at "):
                reached = int(line.split()[1])
            code = hog.proc.wait(timeout=30)
            _, seen = engine.status(fault_id)
        peaks = [g.get("stats", {}).get("peak_bytes") for g in seen.get("cgroups", [])]
        peak = max((p for p in peaks if p), default=0)
        killed = "OOM-killed (SIGKILL)" if code == -signal.SIGKILL else f"exit {code}"
        return [row("memory: peak", "memory", "--max 64M", 64, peak / MiB, "MiB",
                    "the cgroup's peak usage (memory.max_usage_in_bytes / memory.peak)"),
                row("memory: reached", "memory", "--max 64M", 64, reached, "MiB",
                    f"a hog touching 4 MiB steps of 512: last step it reported before it was "
                    f"{killed}")]




def check_disk_fill(state: Path) -> list[Row]:
    from tests.support.fs import settled_statvfs

    mount = state.parent / "fill-tmpfs"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=128m", "hc-bench-fill", str(mount)],
                   check=True)
    try:
        engine = Engine(Config(state_dir=state))
        before = settled_statvfs(mount)
        free_before = before.f_bavail * before.f_frsize
        with fault(engine, "disk-fill", {"path": str(mount), "size": "40M"}):
            during = settled_statvfs(mount)
        taken = free_before - during.f_bavail * during.f_frsize
        with fault(engine, "disk-fill", {"path": str(mount), "percent": 90}):
            st = settled_statvfs(mount)
        used = (st.f_blocks - st.f_bfree) * st.f_frsize
        percent = 100.0 * used / (used + st.f_bavail * st.f_frsize)
        return [row("disk-fill: size", "disk-fill", "--size 40M", 40, taken / MiB, "MiB",
                    "statvfs free space of a 128 MiB tmpfs, before minus during"),
                row("disk-fill: percent", "disk-fill", "--percent 90", 90, percent, "% used",
                    "statvfs of the same tmpfs: used / (used + available), as df's Use%")]
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def check_clock_offset(state: Path) -> list[Row]:
    from tests.support.clocks import clock_victim

    engine = Engine(Config(state_dir=state))
    with clock_victim(state.parent, state, name="offset") as victim:
        time.sleep(0.3)
        start = time.monotonic()
        base = statistics.median(off for mono, off in victim.offsets() if mono < start)
        with fault(engine, "clock", {"pid": victim.pid, "offset": "+5m"}):
            returned = time.monotonic()
            victim.wait_samples_after(returned + 0.5, count=5)
            seen = [off - base for mono, off in victim.offsets(returned)]
        first_late = max(abs(s - 300) for s in seen)
        return [row("clock offset", "clock", "--offset +5m", 300, statistics.median(seen), "s",
                    f"victim's time.time() - time.monotonic(), median of {len(seen)} samples "
                    f"after inject returned, minus before (worst {first_late * 1000:.1f} ms "
                    f"off)")]


def check_clock_rate(state: Path) -> list[Row]:
    from tests.support.clocks import clock_victim

    engine = Engine(Config(state_dir=state))
    with clock_victim(state.parent, state, period=0.05, name="rate") as victim:
        with fault(engine, "clock", {"pid": victim.pid, "rate": "1.01"}):
            returned = time.monotonic()
            victim.wait_samples_after(returned + 10.2, count=1, timeout=30)
            samples = [(w, m) for w, m in victim.samples() if m > returned]
        first = samples[0]
        last = next(s for s in samples if s[1] - first[1] >= 10.0)
        speed = (last[0] - first[0]) / (last[1] - first[1])
        return [row("clock rate", "clock", "--rate 1.01", 1.01, speed, "x",
                    "victim's wall-clock seconds per real (monotonic) second over 10 s")]


CHECKS: dict[str, Callable[[Path], list[Row]]] = {
    "latency": check_latency, "jitter": check_jitter, "loss": check_loss,
    "duplicate": check_duplicate, "rate": check_rate, "cpu": check_cpu,
    "memory": check_memory, "disk-fill": check_disk_fill,
    "clock-offset": check_clock_offset, "clock-rate": check_clock_rate,
}
NETEM_CHECKS = ["latency", "jitter", "loss", "duplicate"]
HOST_CHECKS = ["rate", "cpu", "memory", "disk-fill", "clock-offset", "clock-rate"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checks", default=",".join(HOST_CHECKS),
                        help=f"comma-separated, of: {', '.join(CHECKS)}")
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()
    names = [c for c in args.checks.split(",") if c]
    unknown = set(names) - set(CHECKS)
    if unknown:
        parser.error(f"unknown checks: {', '.join(sorted(unknown))}")
    rows: list[Row] = []
    failed: dict[str, str] = {}
    for name in names:
        print(f"-- {name}", file=sys.stderr, flush=True)
        with tempfile.TemporaryDirectory(prefix=f"hc-bench-fid-{name}-") as tmp:
            state = Path(tmp) / "state"
            os.environ["HOSTCHAOS_STATE_DIR"] = str(state)
            try:
                got = CHECKS[name](state)
            except Exception as exc:  # one failed check must not lose the others
                failed[name] = f"{type(exc).__name__}: {exc}"
                print(f"   FAILED: {failed[name]}", file=sys.stderr, flush=True)
                continue
        for one in got:
            print(f"   {one['check']:20} requested {one['requested_value']:>8} measured "
                  f"{one['measured_value']:>10} {one['unit']}", file=sys.stderr, flush=True)
        rows += got
    write(args.write, report("fidelity", {"rows": rows, "failed": failed}))
    return 1 if failed else 0


if __name__ == "__main__":
    os.chdir(REPO)
    sys.exit(main())
