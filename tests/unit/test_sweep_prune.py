"""Sweep prunes ended records older than a week, reading only the files old enough to be.

Ended records are written when their fault ends, so the file's time tells which
ones can be due for pruning; the record itself (its ``ended_at`` and state)
still decides. A sweep of a journal with thousands of young ended records thus
reads none of them.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from hostchaos.config import Config
from hostchaos.engine import KEEP_ENDED_SECONDS, Engine
from hostchaos.records import ACTIVE, ROLLED_BACK, FaultRecord
from hostchaos.system.procs import boot_id


def ended_record(engine: Engine, fault_id: str, ended_ago: float, file_ago: float) -> Path:
    now = time.time()
    record = FaultRecord(id=fault_id, kind="nofile", spec={"pids": [1], "soft": 64},
                         boot_id=boot_id(), created_at=now - ended_ago - 60,
                         expires_at=now - ended_ago, survives_reboot=False)
    record.transition(ACTIVE)
    record.transition(ROLLED_BACK, "deadline reached")
    record.ended_at, record.end_reason = now - ended_ago, "deadline reached"
    engine.journal.save(record)
    path = engine.journal.path_of(fault_id, ended=True)
    os.utime(path, (now - file_ago, now - file_ago))
    return path


def test_sweep_prunes_what_ended_over_a_week_ago_and_keeps_the_rest(state_dir: Path) -> None:
    engine = Engine(Config(state_dir=state_dir))
    engine.journal.prepare()
    week = KEEP_ENDED_SECONDS
    old = ended_record(engine, "hc-nofile-00000001", week + 3600, week + 3600)
    young = ended_record(engine, "hc-nofile-00000002", 3600, 3600)
    # rewritten since it ended (its file is young): kept until the file is a week old too
    rewritten = ended_record(engine, "hc-nofile-00000003", week + 3600, 60)
    # an old file in ended/ that holds an open record is never pruned
    stray = ended_record(engine, "hc-nofile-00000004", week + 3600, week + 3600)
    data = json.loads(stray.read_text())
    data["state"] = "active"
    stray.write_text(json.dumps(data))
    os.utime(stray, (time.time() - week - 3600,) * 2)
    # an old, unreadable file is reported, not removed
    torn = engine.journal.path_of("hc-nofile-00000005", ended=True)
    torn.write_text('{"id": "hc-nofile-000')
    os.utime(torn, (time.time() - week - 3600,) * 2)

    report = engine.sweep()

    assert report.pruned == 1
    assert not old.exists()
    assert young.exists() and rewritten.exists() and stray.exists() and torn.exists()
    assert [item["path"] for item in report.unreadable] == [str(torn)]
