"""The on-demand warden ends many faults due together in batches, and a kill -9 mid-batch
loses none of them: real `nofile` faults on victim processes, the real detached warden.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from hostchaos.config import Config
from hostchaos.engine import Engine
from hostchaos.faults.nofile import NofileSpec
from hostchaos.warden import OnDemand, holder
from tests.support.cli import hostchaos
from tests.support.victims import nofile_of, sleepers
from tests.support.waiting import wait_for

FAULTS = 80


def ended_count(state_dir: Path) -> int:
    try:
        return sum(n.endswith(".json") for n in os.listdir(state_dir / "faults" / "ended"))
    except FileNotFoundError:
        return 0


def test_kill_9_of_the_warden_mid_batch_then_any_command_finishes_the_rest(
        state_dir: Path) -> None:
    engine = Engine(Config(state_dir=state_dir), warden=OnDemand(state_dir))
    with sleepers(FAULTS) as pids:
        original = nofile_of(pids[0])
        killed_mid_batch = False
        for _attempt in range(3):  # the kill must land while a batch is under way
            ids = [engine.inject(NofileSpec(pids=(pid,), soft=64), 600).id for pid in pids]
            assert all(nofile_of(pid)[0] == 64 for pid in pids)
            warden = holder(state_dir)
            assert warden is not None and warden.pid > 0
            due = time.monotonic() + 1.0
            for fault_id in ids:  # all due within a few ms of each other
                engine.extend(fault_id, max(due - time.monotonic(), 0.01))
            before = ended_count(state_dir)
            while ended_count(state_dir) == before and time.monotonic() < due + 20:
                time.sleep(0.0005)
            os.kill(warden.pid, signal.SIGKILL)
            done = ended_count(state_dir) - before
            wait_for(lambda: holder(state_dir) is None, 10)
            if 0 < done < FAULTS:
                killed_mid_batch = True
                # any command revives a warden, which ends the rest at once
                assert hostchaos("list", state_dir=state_dir).returncode == 0
            else:
                assert hostchaos("sweep", state_dir=state_dir).returncode in (0, 7)
            wait_for(lambda: not engine.journal.has_open_records(), 30)
            assert all(nofile_of(pid) == original for pid in pids)
            if killed_mid_batch:
                break
        assert killed_mid_batch, "the warden was never caught mid-batch"
        records, unreadable = engine.journal.scan(include_ended=True)
        assert not unreadable and all(not r.is_open for r in records)

