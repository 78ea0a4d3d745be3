"""kill -9 of the warden at random moments, many rounds: does any fault outlive its deadline?

Each round (see tests/support/warden_chaos.py): inject open-files limits with
deadlines 0.3-2 s away on sleeping victims, kill -9 the warden at a random
moment, wait, run one random command (list, status, extend, rollback, inject,
or sweep alone), then check every fault ended within 1 s of its deadline (or
of the command, if nobody guarded it meanwhile) and every victim got its limit
back. Needs root::

    .venv/bin/python bench/warden_kill.py --rounds 200 \\
        --write bench/results/warden_kill-host-nofile.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from tests.support import warden_chaos


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--write", type=Path, help="also write the results as JSON here")
    args = parser.parse_args()
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as state:
        report = warden_chaos.run(Path(state) / "state", args.rounds, seed=args.seed)
    result = {**report.to_dict(), "seed": args.seed,
              "seconds": round(time.monotonic() - started, 1),
              "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    print(json.dumps(result, indent=2))
    if args.write:
        args.write.parent.mkdir(parents=True, exist_ok=True)
        args.write.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if not report.problems else 1


if __name__ == "__main__":
    sys.exit(main())
