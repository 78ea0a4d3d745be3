"""Issue 15, host tier: kill -9 the CLI, the warden or the agent at random points, for every
kind this machine can run (all but the netem ones), and find the sandbox as it was.

CI-sized by default (200 iterations over 4 lanes); ``HOSTCHAOS_TORTURE_ITERATIONS=N`` for a
long run, ``HOSTCHAOS_TORTURE_SEED=S`` to repeat a run's choices, ``HOSTCHAOS_TORTURE_REPLAY=
SEED`` to replay one failed iteration (its seed is in the failure message). See
tests/support/torture.py for what one iteration does and what "as it was" means.
"""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path

import pytest

from hostchaos.system import capabilities
from tests.support import torture
from tests.support.capability import need


def settings() -> tuple[int, int, int | None, int]:
    iterations = int(os.environ.get("HOSTCHAOS_TORTURE_ITERATIONS", "200"))
    seed = int(os.environ.get("HOSTCHAOS_TORTURE_SEED") or random.randrange(1 << 20))
    replay = os.environ.get("HOSTCHAOS_TORTURE_REPLAY")
    lanes = int(os.environ.get("HOSTCHAOS_TORTURE_LANES", "4"))
    return iterations, seed, int(replay) if replay else None, lanes


@pytest.mark.timeout(0)  # a long run takes hours; each command in it has its own timeout
def test_kill_9_anywhere_leaves_nothing_behind(tmp_path: Path) -> None:
    for controller in ("cpu", "memory", "pids", "freezer"):
        need(capabilities.cgroup_controller(controller))
    need(capabilities.libfaketime())
    iterations, seed, replay, lanes = settings()
    print(f"torture: seed {seed} (HOSTCHAOS_TORTURE_SEED={seed} repeats these choices)")
    started = time.monotonic()
    report = torture.run(tmp_path, iterations=iterations, seed=seed, lanes=lanes,
                         kinds=torture.HOST_KINDS, replay=replay, progress=torture.print_line)
    summary = {**report.to_dict(), "seed": seed, "lanes": lanes,
               "wall_s": round(time.monotonic() - started, 1)}
    print("torture:", json.dumps(summary, indent=1))
    out = os.environ.get("HOSTCHAOS_TORTURE_REPORT")
    if out:
        Path(out).write_text(json.dumps(summary, indent=1) + "\n")
    assert report.failures == [], "\n".join(report.failures)
    assert report.iterations == (1 if replay is not None else iterations)
    if replay is None and iterations >= 200:  # every kind, every target, both kill points
        assert set(report.kinds) == set(torture.HOST_KINDS), report.kinds
        assert set(report.targets) == set(torture.TARGETS), report.targets
        assert sum(n for hit, n in report.hits.items() if "parked after note" in hit) >= 20
