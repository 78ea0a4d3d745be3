"""One warden holding 1000 open faults: its memory, how late it rolls back, how long applying takes.

Real faults that work on the build machine's own kernel: an open-files limit
(``nofile``, prlimit) on each of N sleeping victim processes this script
starts. Faults go through ``Engine.inject`` in this process with the
on-demand warden the CLI uses (a detached ``python -m hostchaos.warden``):

1. inject N faults with a long deadline (time to apply all, per-inject p50/p99);
2. ``extend`` each so the deadlines are staggered: the first ``--lead`` seconds
   from now, then one every ``--spacing`` seconds (the warden re-arms every
   timer from the journal changes it is told about by inotify);
3. wait until every fault is rolled back, sampling the warden's RSS;
4. lateness = ``ended_at - expires_at`` of each record (when the rollback was
   done minus the deadline), and every victim's limit is checked back.

Needs root::

    .venv/bin/python bench/warden_scale.py --faults 1000 \
        --write bench/results/warden_scale-host-nofile.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hostchaos.config import Config
from hostchaos.engine import Engine
from hostchaos.faults.nofile import NofileSpec
from hostchaos.warden import OnDemand, holder


def rss_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]


def soft_nofile(pid: int) -> int:
    with open(f"/proc/{pid}/limits") as handle:
        for line in handle:
            if line.startswith("Max open files"):
                return int(line.split()[3])
    raise RuntimeError(pid)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faults", type=int, default=1000)
    parser.add_argument("--lead", type=float, default=5.0,
                        help="seconds from the end of step 2 to the first deadline")
    parser.add_argument("--spacing", type=float, default=0.02,
                        help="seconds between consecutive deadlines")
    parser.add_argument("--write", type=Path, help="also write the results as JSON here")
    args = parser.parse_args()

    load_before = os.getloadavg()[0]
    victims = [subprocess.Popen(["sleep", "3600"]) for _ in range(args.faults)]
    original = soft_nofile(victims[0].pid)
    result: dict[str, object] = {}
    try:
        with tempfile.TemporaryDirectory() as state:
            state_dir = Path(state)
            os.environ["HOSTCHAOS_STATE_DIR"] = state
            engine = Engine(Config(state_dir=state_dir), warden=OnDemand(state_dir))
            inject_ms: list[float] = []
            started = time.monotonic()
            ids = []
            for proc in victims:
                t0 = time.perf_counter()
                ids.append(engine.inject(NofileSpec(pids=(proc.pid,), soft=64), 600).id)
                inject_ms.append((time.perf_counter() - t0) * 1000)
            apply_all = time.monotonic() - started
            warden = holder(state_dir)
            assert warden is not None and warden.pid > 0, "no warden"
            rss_all_open = rss_kib(warden.pid)
            assert all(soft_nofile(p.pid) == 64 for p in victims)

            t0 = time.monotonic()
            for i, fault_id in enumerate(ids):
                engine.extend(fault_id, args.lead + i * args.spacing
                              - (time.monotonic() - t0))
            extend_all = time.monotonic() - t0

            peak = rss_all_open or 0
            last_deadline = time.monotonic() + args.lead + args.faults * args.spacing
            while time.monotonic() < last_deadline + 60:
                peak = max(peak, rss_kib(warden.pid) or 0)
                if not engine.journal.has_open_records():
                    break
                time.sleep(0.2)
            records, unreadable = engine.journal.scan(include_ended=True)
            still_open = [r.id for r in records if r.is_open]
            ended = sorted((r for r in records if not r.is_open and r.ended_at is not None),
                           key=lambda r: r.expires_at)
            late = [r.ended_at - r.expires_at for r in ended]  # type: ignore[operator]
            tenth = max(len(late) // 10, 1)
            by_tenth = [round(max(late[i:i + tenth]) * 1000, 1)
                        for i in range(0, len(late), tenth)]
            restored = sum(soft_nofile(p.pid) == original for p in victims)
            reasons: dict[str, int] = {}
            for r in records:
                reasons[str(r.end_reason)] = reasons.get(str(r.end_reason), 0) + 1
            time.sleep(3)
            result = {
                "faults": args.faults,
                "spacing_s": args.spacing,
                "apply_all_s": round(apply_all, 2),
                "inject_ms_p50": round(pct(inject_ms, 0.5), 2),
                "inject_ms_p99": round(pct(inject_ms, 0.99), 2),
                "inject_ms_first_n10": [round(x, 1) for x in inject_ms[:10]],
                "inject_ms_last": round(inject_ms[-1], 2),
                "extend_all_s": round(extend_all, 2),
                "warden_rss_mib_all_open": round((rss_all_open or 0) / 1024, 1),
                "warden_rss_mib_peak": round(peak / 1024, 1),
                "lateness_ms_p50": round(pct(late, 0.5) * 1000, 1),
                "lateness_ms_p99": round(pct(late, 0.99) * 1000, 1),
                "lateness_ms_max": round(max(late) * 1000, 1),
                "lateness_ms_min": round(min(late) * 1000, 1),
                "lateness_ms_max_by_tenth_of_deadlines": by_tenth,
                "load_average_1m_before": load_before,
                "rolled_back": len(late),
                "still_open": still_open,
                "unreadable": len(unreadable),
                "end_reasons": reasons,
                "victims_restored": restored,
                "warden_exited_after": holder(state_dir) is None,
                "host": platform.node(),
                "kernel": platform.release(),
                "python": sys.version.split()[0],
                "cpus": os.cpu_count(),
                "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
    finally:
        for proc in victims:
            proc.kill()
        for proc in victims:
            proc.wait()
    print(json.dumps(result, indent=2))
    if args.write:
        args.write.parent.mkdir(parents=True, exist_ok=True)
        args.write.write_text(json.dumps(result, indent=2) + "\n")
    ok = not result.get("still_open") and result.get("victims_restored") == args.faults
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
