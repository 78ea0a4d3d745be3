"""kill -9 of the warden at random moments, then one hostchaos command: nothing outlives it.

Used by tests/host/test_never_lose_a_fault.py (a few dozen rounds) and
bench/warden_kill.py (hundreds, with a report). Faults are real: open-files
limits (prlimit) on sleeping victim processes this module starts.

One round: inject faults with short deadlines on free victims, wait a random
moment, kill -9 whatever warden holds the lock (maybe mid-rollback, mid-adopt,
mid-write), wait another random moment (deadlines pass with nobody guarding),
run one command (list, status, extend, rollback of another fault, inject, or
sweep alone). From the end of that command, every fault must be rolled back
within 1 s of its deadline, or within 1 s of the command if it was overdue
by then; each victim's limit is checked back to its original.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hostchaos.warden import holder
from tests.support.cli import hostchaos, records
from tests.support.victims import nofile_of

COMMANDS = ("list", "status", "extend", "rollback", "inject", "sweep")
#: how far past max(deadline, end of the command) a fault may still be on the host
SLACK = 1.0


@dataclass
class ChaosReport:
    rounds: int = 0
    faults: int = 0
    kills: int = 0
    #: seconds each fault was rolled back after max(deadline, the command's end)
    lateness: list[float] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    by_command: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        late = sorted(self.lateness)

        def pct(q: float) -> float | None:
            return round(late[min(int(q * len(late)), len(late) - 1)], 3) if late else None

        return {"rounds": self.rounds, "faults": self.faults, "kills": self.kills,
                "lateness_p50_s": pct(0.5), "lateness_p99_s": pct(0.99),
                "lateness_max_s": round(late[-1], 3) if late else None,
                "problems": self.problems, "by_command": self.by_command}


def _pid_of(record: dict[str, Any]) -> int:
    pids = record["spec"].get("pids") or [0]
    return int(pids[0])


def _kill_warden(state_dir: Path) -> bool:
    ref = holder(state_dir)
    if ref is None or ref.pid <= 0:
        return False
    try:
        os.kill(ref.pid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + 5
    while ref.alive() and time.monotonic() < deadline:
        time.sleep(0.005)
    return True


def run(state_dir: Path, rounds: int, *, seed: int = 0, victims: int = 6) -> ChaosReport:
    rng = random.Random(seed)
    report = ChaosReport()
    procs = [subprocess.Popen(["sleep", "3600"]) for _ in range(victims)]
    original = {p.pid: nofile_of(p.pid) for p in procs}
    try:
        for round_no in range(rounds):
            _one_round(state_dir, rng, procs, original, report, round_no)
            report.rounds += 1
    finally:
        hostchaos("rollback", "--all", state_dir=state_dir)
        for proc in procs:
            proc.kill()
            proc.wait()
    return report


def _inject(state_dir: Path, pid: int, seconds: float) -> str | None:
    result = hostchaos("inject", "nofile", "--pid", str(pid), "--soft", "64", "--for",
                       f"{seconds:.2f}s", "--json", state_dir=state_dir)
    if result.returncode != 0:
        return None
    fault_id: str = json.loads(result.stdout)["id"]
    return fault_id


def _one_round(state_dir: Path, rng: random.Random, procs: list[subprocess.Popen[bytes]],
               original: dict[int, tuple[int, int]], report: ChaosReport, round_no: int) -> None:
    busy = {_pid_of(r) for r in records(state_dir)
            if r["state"] not in ("rolled-back", "failed")}
    free = [p.pid for p in procs if p.pid not in busy]
    rng.shuffle(free)
    made: list[str] = []
    for pid in free[:2]:
        fault_id = _inject(state_dir, pid, rng.uniform(0.3, 2.0))
        if fault_id is None:
            report.problems.append(f"round {round_no}: inject on pid {pid} failed")
        else:
            made.append(fault_id)
    report.faults += len(made)
    time.sleep(rng.uniform(0, 1.5))
    if _kill_warden(state_dir):
        report.kills += 1
    open_at_kill = {r["id"] for r in records(state_dir)
                    if r["state"] not in ("rolled-back", "failed")}
    time.sleep(rng.uniform(0, 1.0))
    command = rng.choice(COMMANDS)
    report.by_command[command] = report.by_command.get(command, 0) + 1
    open_now = [r for r in records(state_dir) if r["state"] not in ("rolled-back", "failed")]
    some = open_now[0]["id"] if open_now else "hc-nofile-00000000"
    if command == "list":
        hostchaos("list", state_dir=state_dir)
    elif command == "status":
        hostchaos("status", some, state_dir=state_dir)
    elif command == "extend":
        hostchaos("extend", some, state_dir=state_dir)  # no lease: changes nothing
    elif command == "rollback":
        hostchaos("rollback", "hc-nofile-00000000", state_dir=state_dir)  # not found: exit 4
    elif command == "inject":
        spare = [p.pid for p in procs if p.pid not in {_pid_of(r) for r in open_now}]
        if spare:
            fault_id = _inject(state_dir, spare[0], rng.uniform(0.3, 2.0))
            if fault_id:
                made.append(fault_id)
                report.faults += 1
    else:
        hostchaos("sweep", state_dir=state_dir)
    command_done = time.time()

    def due(record: dict[str, Any]) -> float:
        """When it must be gone: its deadline, or the command's end if nobody guarded it."""
        if record["id"] in open_at_kill:
            return max(float(record["expires_at"]), command_done)
        return float(record["expires_at"])

    limit = max([due(r) for r in records(state_dir)] + [command_done]) + SLACK
    while time.time() < limit + 0.5:
        if all(r["state"] in ("rolled-back", "failed") for r in records(state_dir)):
            break
        time.sleep(0.05)
    for record in records(state_dir):
        if record["state"] not in ("rolled-back", "failed"):
            report.problems.append(f"round {round_no}: {record['id']} still {record['state']} "
                                   f"{time.time() - due(record):.2f}s after it was due")
        elif record["id"] in made:
            late = float(record["ended_at"]) - due(record)
            report.lateness.append(late)
            if late > SLACK:
                report.problems.append(f"round {round_no}: {record['id']} ended {late:.2f}s "
                                       f"late ({record['end_reason']})")
    for proc in procs:
        pid = proc.pid
        busy_now = any(_pid_of(r) == pid and r["state"] not in
                       ("rolled-back", "failed") for r in records(state_dir))
        if not busy_now and nofile_of(pid) != original[pid]:
            report.problems.append(f"round {round_no}: pid {pid} still has nofile "
                                   f"{nofile_of(pid)} with no open fault")
