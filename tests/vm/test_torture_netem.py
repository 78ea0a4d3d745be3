"""Issue 15, VM tier: the torture of tests/torture for the netem kinds (latency, loss,
corrupt, duplicate, reorder, partition, and rate beside them), which this kernel has.

About 30 iterations over 2 lanes (``HOSTCHAOS_TORTURE_VM_ITERATIONS``); the CLI, the CLI
and the warden, or the warden alone is killed (the agent is tortured on the host tier: it
takes longer to start here than the iteration it would serve). The seed is printed;
``HOSTCHAOS_TORTURE_SEED`` repeats the choices, ``HOSTCHAOS_TORTURE_REPLAY`` replays one.

Opt-in (``HOSTCHAOS_TORTURE_VM=1``, e.g. ``make torture-vm``), not part of ``make test``:
its one run on the merged code had a report nobody has explained yet (an inject with
``--wait`` that neither parked at its undo note nor exited; see docs/benchmarks.md,
"Torture"). Until that is understood it must not decide whether CI passes.
"""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path

import pytest

from tests.support import torture


@pytest.mark.timeout(1500)
def test_kill_9_anywhere_leaves_no_netem_behind(tmp_path: Path) -> None:
    if os.environ.get("HOSTCHAOS_TORTURE_VM") != "1":
        pytest.skip("opt-in: HOSTCHAOS_TORTURE_VM=1 (make torture-vm); see the module's note")
    iterations = int(os.environ.get("HOSTCHAOS_TORTURE_VM_ITERATIONS", "30"))
    seed = int(os.environ.get("HOSTCHAOS_TORTURE_SEED") or random.randrange(1 << 20))
    replay_text = os.environ.get("HOSTCHAOS_TORTURE_REPLAY")
    replay = int(replay_text) if replay_text else None
    print(f"torture (vm): seed {seed}")
    started = time.monotonic()
    report = torture.run(tmp_path, iterations=iterations, seed=seed, lanes=2,
                         kinds=torture.NETEM_KINDS, targets=("cli", "cli+warden", "warden"),
                         replay=replay, progress=torture.print_line)
    summary = {**report.to_dict(), "seed": seed, "wall_s": round(time.monotonic() - started, 1)}
    print("torture (vm):", json.dumps(summary, indent=1))
    assert report.failures == [], "\n".join(report.failures)
    assert report.iterations == (1 if replay is not None else iterations)
