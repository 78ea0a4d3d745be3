"""Cold start: the wall time of whole `hostchaos` processes, from fork to exit.

Median (and p95, min) of ``--rounds`` runs each, after one uncounted run that
warms the page cache, timed with subprocess + perf_counter (no hyperfine):

- ``hostchaos --help``;
- ``hostchaos inject latency --netns NS --iface X --ms 100 --dry-run`` on the veth
  of a sandbox (NetnsPair; needs root); the plan is computed, nothing changes (on
  a kernel without sch_netem, where latency is refused, ``inject rate --rate 10mbit
  --dry-run``: the same path with a tbf leaf);
- ``python -c pass`` of the same interpreter: the floor every Python CLI pays.

Each command is the venv's ``hostchaos`` console script, as an operator runs it. Beside
the wall time, the CPU time (user + system) each run used: on a loaded machine the wall
time includes waiting for a CPU, the CPU time is the work itself.
Acceptance (issue 15): ``--help`` under 150 ms, median of 10, on the build machine.

    .venv/bin/python bench/coldstart.py --write bench/results/coldstart-host.json
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import REPO, report, summary, write

TARGET_MS = 150.0


def script() -> str:
    found = Path(sys.executable).parent / "hostchaos"
    return str(found) if found.exists() else "hostchaos"


def cpu_ms_of_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (usage.ru_utime + usage.ru_stime) * 1000


def run_times(argv: list[str], rounds: int, env: dict[str, str]
              ) -> tuple[list[float], list[float]]:
    """Wall milliseconds and CPU milliseconds (user + system, of the process and its
    children) of each run: on a busy machine the wall time waits for a CPU, the CPU time
    does not."""
    out, cpu = [], []
    for i in range(rounds + 1):
        cpu_before = cpu_ms_of_children()
        started = time.perf_counter()
        done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              env=env, check=False)
        elapsed = (time.perf_counter() - started) * 1000
        used = cpu_ms_of_children() - cpu_before
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}: "
                               f"{done.stderr.decode().strip()}")
        if i:
            out.append(elapsed)
            cpu.append(used)
    return out, cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--no-dry-run", action="store_true",
                        help="skip the inject --dry-run case (it needs root for its sandbox)")
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory(prefix="hc-bench-cold-") as tmp:
        env = {**os.environ, "HOSTCHAOS_STATE_DIR": str(Path(tmp) / "state"),
               "HOSTCHAOS_SOCKET": str(Path(tmp) / "none.sock"),
               "HOSTCHAOS_CONFIG": str(Path(tmp) / "none.toml")}
        hc = script()
        cases: dict[str, list[str]] = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "hostchaos --help": [hc, "--help"],
        }
        pair = None
        if not args.no_dry_run:
            from hostchaos.sandbox import NetnsPair

            pair = NetnsPair(prefix="hc-cold").create()
            target = ["--netns", pair.a, "--iface", pair.iface_a]
            latency = [hc, "inject", "latency", *target, "--ms", "100", "--dry-run"]
            probe = subprocess.run(latency, capture_output=True, env=env, check=False)
            if probe.returncode == 3:  # no sch_netem on this kernel: the same path with tbf
                cases["hostchaos inject rate --dry-run"] = [
                    hc, "inject", "rate", *target, "--rate", "10mbit", "--dry-run"]
            else:
                cases["hostchaos inject latency --dry-run"] = latency
        try:
            for name, argv in cases.items():
                wall, cpu = run_times(argv, args.rounds, env)
                results[name] = {**summary(wall),
                                 "cpu_median_ms": round(statistics.median(cpu), 1)}
                print(f"{name:40} median {results[name]['median_ms']:8.1f} ms, CPU "
                      f"{results[name]['cpu_median_ms']:8.1f} ms", file=sys.stderr)
        finally:
            if pair is not None:
                pair.remove()
            subprocess.run(["umount", "--lazy", str(Path(tmp) / "state" / "netns")],
                           capture_output=True, check=False)
    help_ms = results["hostchaos --help"]["median_ms"]
    write(args.write, report("coldstart", {
        "rounds": args.rounds, "results": results, "target_help_ms": TARGET_MS,
        "help_meets_target": help_ms < TARGET_MS}))
    return 0


if __name__ == "__main__":
    os.chdir(REPO)
    sys.exit(main())
