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

``--kind rate`` uses a tbf fault on ``hcv0`` in each of N network namespaces
instead (one veth pair each, made by bench/many_netns.py and removed after);
the check is then that each namespace's root qdisc is back to ``noqueue``.
``--via agent`` injects and extends through a real ``hostchaos agent`` (a
process of its own, on a temporary socket and state directory; its warden is
a thread of it, with its sentinel process beside it) instead of ``Engine`` in
this process; the RSS reported is then agent + sentinel (+ a warden process,
if one ran), the sum of the processes' VmRSS sampled together.

Needs root::

    .venv/bin/python bench/warden_scale.py --faults 1000 \
        --write bench/results/warden_scale-host-nofile.json
    .venv/bin/python bench/warden_scale.py --faults 1000 --kind rate --via agent \
        --spacing 0.005 --write bench/results/warden_scale-host-rate-agent-5ms.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(REPO))

import many_netns  # noqa: E402
from targets import root_qdisc_kind, soft_nofile  # noqa: E402

from hostchaos.config import Config  # noqa: E402
from hostchaos.engine import Engine  # noqa: E402
from hostchaos.faults.from_options import spec_from_options  # noqa: E402
from hostchaos.warden import OnDemand, holder  # noqa: E402
from tests.support.agent import call, start_agent, stop_agent  # noqa: E402


def rss_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def cpu_s(pid: int) -> float:
    """User + system CPU seconds the process has used so far."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as handle:
            for line in handle:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]






@contextlib.contextmanager
def targets(kind: str, count: int) -> Iterator[tuple[list[Any], Callable[[Any], dict[str, Any]],
                                                     Callable[[Any], bool], Callable[[Any], bool]]]:
    """(targets, options of a fault on one, is it faulted?, is it as before?)."""
    if kind == "nofile":
        victims = [subprocess.Popen(["sleep", "3600"]) for _ in range(count)]
        original = soft_nofile(victims[0].pid)
        try:
            yield ([p.pid for p in victims], lambda pid: {"pid": pid, "soft": 64},
                   lambda pid: soft_nofile(pid) == 64, lambda pid: soft_nofile(pid) == original)
        finally:
            for proc in victims:
                proc.kill()
            for proc in victims:
                proc.wait()
    elif kind == "rate":
        with many_netns.made(count) as names:
            yield (names, lambda ns: {"netns": ns, "iface": "hcv0", "rate": "10mbit"},
                   lambda ns: root_qdisc_kind(ns) == "htb",
                   lambda ns: root_qdisc_kind(ns) == "noqueue")
    else:
        raise SystemExit(f"unknown kind {kind}: nofile or rate")


class Injector:
    """Inject and extend through the engine in this process, or through a real agent."""

    def __init__(self, via: str, state_dir: Path, base: Path) -> None:
        self.via, self.state_dir = via, state_dir
        self.engine = Engine(Config(state_dir=state_dir), warden=OnDemand(state_dir))
        self.agent: subprocess.Popen[bytes] | None = None
        self.sock = base / "agent.sock"
        if via == "agent":
            env = {"HOSTCHAOS_STATE_DIR": str(state_dir), "HOSTCHAOS_SOCKET": str(self.sock),
                   "HOSTCHAOS_CONFIG": str(base / "no-config.toml")}
            self.agent = start_agent(state_dir, self.sock, env=env, log=base / "agent.log")

    def inject(self, kind: str, options: dict[str, Any], seconds: float) -> str:
        if self.agent is None:
            return self.engine.inject(spec_from_options(kind, options), seconds).id
        status, data = call(self.sock, "POST", "/v1/faults",
                            {"kind": kind, "options": options, "for": seconds})
        assert status in (200, 201), (status, data)
        return str(data["id"])

    def extend(self, fault_id: str, seconds: float) -> None:
        if self.agent is None:
            self.engine.extend(fault_id, seconds)
            return
        status, data = call(self.sock, "POST", f"/v1/faults/{fault_id}/extend", {"for": seconds})
        assert status == 200, (status, data)

    def processes(self) -> dict[str, int]:
        """hostchaos's own processes: the warden, and the agent and its sentinel if one runs
        (the agent's warden is a thread of the agent: then no warden process is listed)."""
        found = {}
        warden = holder(self.state_dir)
        if self.agent is not None and self.agent.poll() is None:
            found["agent"] = self.agent.pid
        if warden is not None and warden.pid > 0 and warden.pid not in found.values():
            found["warden"] = warden.pid
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if str(self.state_dir).encode() in argv and any(
                    part.endswith(b"sentinel.py") for part in argv):
                found["sentinel"] = int(entry.name)
        return found

    def rss_kib(self) -> dict[str, int]:
        return {name: rss_kib(pid) or 0 for name, pid in self.processes().items()}

    def pss_kib(self) -> dict[str, int]:
        """Proportional set size: shared pages (libpython, the same .so files) split between
        the processes sharing them, where VmRSS counts them in full in each."""
        return {name: pss_kib(pid) for name, pid in self.processes().items()}

    def close(self) -> None:
        if self.agent is not None:
            stop_agent(self.agent)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faults", type=int, default=1000)
    parser.add_argument("--kind", choices=("nofile", "rate"), default="nofile")
    parser.add_argument("--via", choices=("engine", "agent"), default="engine")
    parser.add_argument("--lead", type=float, default=5.0,
                        help="seconds from the end of step 2 to the first deadline")
    parser.add_argument("--spacing", type=float, default=0.02,
                        help="seconds between consecutive deadlines")
    parser.add_argument("--write", type=Path, help="also write the results as JSON here")
    args = parser.parse_args()
    import signal

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # clean up on the way out
    load_before = os.getloadavg()[0]
    result: dict[str, object] = {}
    with targets(args.kind, args.faults) as (items, options, faulted, restored), \
            tempfile.TemporaryDirectory(prefix="hcwarden-") as tmp:
        base = Path(tmp)
        state_dir = base / "state"
        os.environ["HOSTCHAOS_STATE_DIR"] = str(state_dir)
        injector = Injector(args.via, state_dir, base)
        try:
            inject_ms: list[float] = []
            started = time.monotonic()
            ids = []
            for item in items:
                t0 = time.perf_counter()
                ids.append(injector.inject(args.kind, options(item), 600))
                inject_ms.append((time.perf_counter() - t0) * 1000)
            apply_all = time.monotonic() - started
            procs = injector.processes()
            guard = holder(state_dir)
            assert guard is not None and guard.pid > 0, "no warden"
            rss_all_open = injector.rss_kib()
            step = max(len(items) // 20, 1)
            sample = items[::step]
            assert all(faulted(item) for item in sample)

            t0 = time.monotonic()
            for i, fault_id in enumerate(ids):
                injector.extend(fault_id, args.lead + i * args.spacing
                                - (time.monotonic() - t0))
            extend_all = time.monotonic() - t0

            warden_pid = guard.pid  # with --via agent: the agent, whose thread it is
            warden_cpu_before = cpu_s(warden_pid)
            warden_cpu = 0.0
            peak = dict(rss_all_open)
            peak_sum = sum(rss_all_open.values())
            pss_at_peak = injector.pss_kib()
            last_deadline = time.monotonic() + args.lead + args.faults * args.spacing
            engine = injector.engine
            while time.monotonic() < last_deadline + 120:
                now_rss = injector.rss_kib()
                for name, kib in now_rss.items():
                    peak[name] = max(peak.get(name, 0), kib)
                if sum(now_rss.values()) >= peak_sum:
                    peak_sum = sum(now_rss.values())
                    pss_at_peak = injector.pss_kib()
                warden_cpu = max(warden_cpu, cpu_s(warden_pid) - warden_cpu_before)
                if not engine.journal.has_open_records():
                    break
                time.sleep(0.2)
            time.sleep(0.5)  # the last batch's bookkeeping
            warden_cpu = max(warden_cpu, cpu_s(warden_pid) - warden_cpu_before)
            records, unreadable = engine.journal.scan(include_ended=True)
            still_open = [r.id for r in records if r.is_open]
            ended = sorted((r for r in records if not r.is_open and r.ended_at is not None),
                           key=lambda r: r.expires_at)
            late = [r.ended_at - r.expires_at for r in ended]  # type: ignore[operator]
            tenth = max(len(late) // 10, 1)
            by_tenth = [round(max(late[i:i + tenth]) * 1000, 1)
                        for i in range(0, len(late), tenth)]
            back = sum(map(restored, sample))
            reasons: dict[str, int] = {}
            for r in records:
                reasons[str(r.end_reason)] = reasons.get(str(r.end_reason), 0) + 1
            batches = warden_batches(state_dir, base / "agent.log")
            result = {
                "faults": args.faults,
                "kind": args.kind,
                "via": args.via,
                "spacing_s": args.spacing,
                "apply_all_s": round(apply_all, 2),
                "inject_ms_p50": round(pct(inject_ms, 0.5), 2),
                "inject_ms_p99": round(pct(inject_ms, 0.99), 2),
                "inject_ms_first_n10": [round(x, 1) for x in inject_ms[:10]],
                "inject_ms_last": round(inject_ms[-1], 2),
                "extend_all_s": round(extend_all, 2),
                "lead_s": args.lead,
                # if not, the first deadlines fell while the extends still competed for the lock
                "extends_done_before_first_deadline": extend_all < args.lead,
                "rss_mib_all_open": {k: round(v / 1024, 1) for k, v in rss_all_open.items()},
                "rss_mib_peak": {k: round(v / 1024, 1) for k, v in peak.items()},
                "rss_mib_peak_sum": round(peak_sum / 1024, 1),
                "rss_mb_peak_sum": round(peak_sum * 1024 / 1e6, 1),
                "pss_mib_at_peak": {k: round(v / 1024, 1) for k, v in pss_at_peak.items()},
                "pss_mib_sum_at_peak": round(sum(pss_at_peak.values()) / 1024, 1),
                "warden_rss_mib_peak": round(peak.get("warden", peak.get("agent", 0)) / 1024, 1),
                "warden_is_a_thread_of_the_agent": guard.pid == procs.get("agent"),
                "lateness_ms_p50": round(pct(late, 0.5) * 1000, 1),
                "lateness_ms_p99": round(pct(late, 0.99) * 1000, 1),
                "lateness_ms_max": round(max(late) * 1000, 1),
                "lateness_ms_min": round(min(late) * 1000, 1),
                "lateness_ms_first_n20": [round(x * 1000, 1) for x in late[:20]],
                "lateness_ms_worst10_by_index": sorted(
                    ((i, round(x * 1000, 1)) for i, x in enumerate(late)),
                    key=lambda item: -item[1])[:10],
                "lateness_ms_max_by_tenth_of_deadlines": by_tenth,
                "load_average_1m_before": load_before,
                "rolled_back": len(late),
                "still_open": still_open,
                "unreadable": len(unreadable),
                "end_reasons": reasons,
                "restored_of_sample": f"{back}/{len(sample)}",
                "warden_batches": batches,
                "warden_cpu_s_while_rolling_back": round(warden_cpu, 2),
                "warden_cpu_ms_per_rollback": round(warden_cpu * 1000 / max(len(late), 1), 2),
                "host": platform.node(),
                "kernel": platform.release(),
                "python": sys.version.split()[0],
                "cpus": os.cpu_count(),
                "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
        finally:
            injector.close()
        time.sleep(3)
        result["warden_exited_after"] = holder(state_dir) is None
    print(json.dumps(result, indent=2))
    if args.write:
        args.write.parent.mkdir(parents=True, exist_ok=True)
        args.write.write_text(json.dumps(result, indent=2) + "\n")
    ok = not result.get("still_open") and result.get("restored_of_sample", "").split("/")[0] \
        == result.get("restored_of_sample", "").split("/")[-1]  # type: ignore[union-attr]
    return 0 if ok else 1


def warden_batches(state_dir: Path, agent_log: Path) -> dict[str, object]:
    """The warden's batches, from the line it logs for each of more than one fault (in
    warden.log, or in the agent's log when it is the agent's thread)."""
    sizes, millis = [], []
    lines = [line for log in (state_dir / "warden.log", agent_log) if log.exists()
             for line in log.read_text().splitlines()]
    for line in lines:
        words = line.split()
        if "one batch of" in line:
            sizes.append(int(words[words.index("of") + 1]))
            millis.append(float(words[-2]))
    return {"batches_of_more_than_one": len(sizes), "largest": max(sizes, default=0),
            "faults_in_batches": sum(sizes), "slowest_batch_ms": max(millis, default=0)}


if __name__ == "__main__":
    sys.exit(main())
