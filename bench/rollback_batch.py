"""What one rollback costs with many faults open: one at a time vs in one batch.

Injects N real ``nofile`` faults (prlimit on N sleeping victims) with no warden
(this process guards them), then rolls half of them back in one
``Engine.rollback_many`` (what the warden does now for every fault due at
once) and then the other half one by one with
``Engine.rollback`` (what it did per deadline before: the state lock, the peers
read from the journal, the record's writes),
and reports the CPU milliseconds of this process per rollback for each, so a
loaded machine does not blur the comparison. Every victim's limit is checked.

    .venv/bin/python bench/rollback_batch.py --faults 400 \
        --write bench/results/rollback_batch-host-nofile.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hostchaos.config import Config
from hostchaos.engine import Engine
from hostchaos.faults.nofile import NofileSpec

sys.path.insert(0, str(Path(__file__).resolve().parent))
from targets import soft_nofile


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faults", type=int, default=400)
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()
    victims = [subprocess.Popen(["sleep", "3600"]) for _ in range(args.faults)]
    original = soft_nofile(victims[0].pid)
    try:
        with tempfile.TemporaryDirectory(prefix="hcbatch-") as tmp:
            engine = Engine(Config(state_dir=Path(tmp)))
            ids = [engine.inject(NofileSpec(pids=(p.pid,), soft=64), 600).id for p in victims]
            half = len(ids) // 2
            # the batch first, with more faults open: the comparison favours one at a time
            cpu, wall = time.process_time(), time.monotonic()
            results = engine.rollback_many([(i, "deadline reached", None) for i in ids[half:]])
            batch = (time.process_time() - cpu, time.monotonic() - wall)
            cpu, wall = time.process_time(), time.monotonic()
            for fault_id in ids[:half]:
                engine.rollback(fault_id, "deadline reached")
            single = (time.process_time() - cpu, time.monotonic() - wall)
            assert all(not isinstance(r, Exception) and not r.is_open for _, r in results)
            assert all(soft_nofile(p.pid) == original for p in victims)
    finally:
        for proc in victims:
            proc.kill()
        for proc in victims:
            proc.wait()
    result = {
        "faults": args.faults,
        "one_at_a_time": {"rollbacks": half, "open_at_start": half,
                          "cpu_ms_per_rollback": round(single[0] * 1000 / half, 2),
                          "wall_ms_per_rollback": round(single[1] * 1000 / half, 2)},
        "one_batch": {"rollbacks": args.faults - half, "open_at_start": args.faults,
                      "cpu_ms_per_rollback": round(batch[0] * 1000 / (args.faults - half), 2),
                      "wall_ms_per_rollback": round(batch[1] * 1000 / (args.faults - half), 2)},
        "load_average_1m": os.getloadavg()[0],
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    print(json.dumps(result, indent=2))
    if args.write:
        args.write.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
