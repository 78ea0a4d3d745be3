"""Time the engine's apply+rollback pair after a gap: back to back, or after sleeping,
busy-waiting or running the ``tc`` calls of ``tc-identical-tree``.

``bench/apply_rollback.py --interleave`` puts each engine pair right after nine
``tc`` processes and finds it 50% slower than back to back. This tells whether
it is what runs in between or only the time that passes::

    .venv/bin/python bench/pair_after_gap.py --rounds 50 [--state-base /dev/shm]

One sandbox (two namespaces joined by veth), one engine without a warden, a rate
(tbf) fault; medians in ms per way of spending the gap. The control is work that
makes no system call at all (twenty JSON round trips of the fault's record, in the
same process), timed after the same gaps: if it slows by as much, the machine
is what slows after a gap, not the engine's kernel work.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import tc_equivalent
from bench.common import machine
from hostchaos.config import Config
from hostchaos.engine import Engine
from hostchaos.faults.rate import RateSpec
from hostchaos.sandbox import NetnsPair


def spin(seconds: float) -> None:
    until = time.perf_counter() + seconds
    while time.perf_counter() < until:
        pass


def control_work(document: dict[str, object]) -> None:
    for _ in range(20):
        json.loads(json.dumps(document))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--state-base", default=None, help="directory for the journal")
    parser.add_argument("--write", type=Path, help="also write the results as JSON here")
    args = parser.parse_args()
    results: dict[str, float] = {}
    control: dict[str, float] = {}
    with tempfile.TemporaryDirectory(dir=args.state_base) as state, \
            NetnsPair(prefix="hc-gap") as pair:
        engine = Engine(Config(state_dir=Path(state)))
        spec = RateSpec(iface=pair.iface_a, netns=pair.a, rate="1mbit")
        calls = tc_equivalent.commands(spec, pair.iface_a,
                                       tc_equivalent.RATE_1MBIT_LEAF)
        before = pair.tc_config()
        gaps: dict[str, Callable[[], None]] = {
            "nothing": lambda: None,
            "sleep 1 ms": lambda: time.sleep(0.001),
            "sleep 12 ms": lambda: time.sleep(0.012),
            "spin 12 ms": lambda: spin(0.012),
            "sleep 50 ms": lambda: time.sleep(0.05),
            "tc-identical-tree": lambda: tc_equivalent.build_and_remove(pair.a, calls),
        }
        try:
            document = engine.rollback(engine.inject(spec, 60).id).to_dict()  # warm-up
            for name, gap in gaps.items():
                times, control_times = [], []
                for _ in range(args.rounds):
                    gap()
                    started = time.perf_counter()
                    engine.rollback(engine.inject(spec, 60).id)
                    times.append((time.perf_counter() - started) * 1000)
                    gap()
                    started = time.perf_counter()
                    control_work(document)
                    control_times.append((time.perf_counter() - started) * 1000)
                results[name] = round(statistics.median(times), 3)
                control[name] = round(statistics.median(control_times), 3)
                print(f"{name:20} pair {results[name]:8.2f} ms   control {control[name]:6.3f} ms",
                      flush=True)
            assert pair.tc_config() == before, "benchmark left a qdisc behind"
        finally:
            engine.rollback_all("benchmark ended")  # a pair that failed half way
            subprocess.run(["umount", "--lazy", f"{state}/netns"], capture_output=True,
                           check=False)
    if args.write:
        args.write.write_text(json.dumps({"bench": "pair_after_gap", "machine": machine(),
                                          "command": " ".join(sys.argv), "rounds": args.rounds,
                                          "median_ms": results,
                                          "control_median_ms": control}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
