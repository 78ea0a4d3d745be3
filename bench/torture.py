"""The long torture run of issue 15: kill -9 the CLI, the warden or the agent at random
points (or between an undo note and its change), for every kind this host runs, then check
that the sandbox is as before and nothing is left (records, processes, mounts, cgroups).

What one iteration does is in tests/support/torture.py; the CI-sized run is
tests/torture/test_torture.py. Needs root::

    .venv/bin/python bench/torture.py --iterations 2000 --seed 15 \\
        --write bench/results/torture-host.json --log /tmp/torture-long.log

``--minutes M`` starts no iteration after M minutes (the result then counts the
iterations that ran). Exit status 1 if anything was left behind.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TextIO

from tests.support import torture


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument("--lanes", type=int, default=4)
    parser.add_argument("--minutes", type=float, help="start no iteration after this long")
    parser.add_argument("--write", type=Path, help="also write the results as JSON here")
    parser.add_argument("--log", type=Path, help="one line per iteration here")
    args = parser.parse_args()
    started = time.monotonic()
    stop_at = started + args.minutes * 60 if args.minutes else None
    log: TextIO = open(args.log, "a") if args.log else sys.stderr
    lock = threading.Lock()

    def progress(outcome: torture.Outcome) -> None:
        status = ("LEFTOVER " + "; ".join(outcome.leftovers)) if outcome.leftovers else "ok"
        with lock:
            log.write(f"{time.strftime('%H:%M:%S')} {outcome.plan.describe()} -> "
                      f"{outcome.hit}; killed {outcome.killed or 'nothing'}; {status}\n")
            log.flush()

    with tempfile.TemporaryDirectory(prefix="hc-torture-") as root:
        report = torture.run(Path(root), iterations=args.iterations, seed=args.seed,
                             lanes=args.lanes, kinds=torture.HOST_KINDS, progress=progress,
                             stop_at=stop_at)
    result = {**report.to_dict(), "asked": args.iterations, "seed": args.seed,
              "lanes": args.lanes, "seconds": round(time.monotonic() - started, 1),
              "command": " ".join(["bench/torture.py", *sys.argv[1:]]),
              "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    print(json.dumps(result, indent=2))
    if args.write:
        args.write.parent.mkdir(parents=True, exist_ok=True)
        args.write.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if not report.failures else 1


if __name__ == "__main__":
    sys.exit(main())
