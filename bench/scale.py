"""Scale: 1, 10, 100, 1000 simultaneous faults; `rollback --all`; `sweep` of 10 000 records.

For each kind and size N, on sandboxes this script makes (real faults, real
kernel state, read back):

- ``rate``: a tbf fault on ``hcv0`` in each of N network namespaces (one veth
  pair each, see bench/many_netns.py); ``nofile``: prlimit on each of N
  sleeping victims;
- inject all N through ``Engine.inject`` with the on-demand warden the CLI
  uses (``apply_all_s``), sample the RSS of hostchaos's processes (the warden;
  this script's engine is not counted), then roll all back with
  ``Engine.rollback_all`` (``rollback_all_engine_s``);
- inject all N again and roll them back with the real CLI, ``hostchaos
  rollback --all`` in a process of its own (``rollback_all_cli_s``, the
  interpreter's start included);
- check every target is as before (no hostchaos qdisc left / limit back).

Each time is given as wall-clock seconds (``_s``) and as the CPU seconds
(user + system) of the process doing it (``_cpu_s``: this one for the engine,
the CLI's for the CLI): on a loaded machine the wall clock measures the load,
the CPU time what the work costs.

Then ``sweep_10000``: a journal of 10 000 records in the real format (records
written by ``Journal.save``): 8000 ended this week, 1000 ended more than a week
ago (to prune), 1000 open from a previous boot (on victims of this script: a
reboot took those faults, so sweep closes them without touching anything),
timed as ``hostchaos sweep`` (a process) and ``Engine.sweep`` (in-process).

Needs root::

    .venv/bin/python bench/scale.py --sizes 1,10,100,1000 --write bench/results/scale-host.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import many_netns
from targets import root_qdisc_kind, soft_nofile

from hostchaos.config import Config
from hostchaos.engine import KEEP_ENDED_SECONDS, Engine
from hostchaos.faults.from_options import spec_from_options
from hostchaos.records import ACTIVE, ROLLED_BACK, FaultRecord, boottime
from hostchaos.warden import OnDemand, holder

REPO = Path(__file__).resolve().parents[1]


def rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def env_for(state: Path) -> dict[str, str]:
    return {**os.environ, "HOSTCHAOS_STATE_DIR": str(state),
            "HOSTCHAOS_SOCKET": str(state / "no-agent.sock"),
            "HOSTCHAOS_CONFIG": str(state / "no-config.toml")}


def one_size(kind: str, targets: list[str] | list[int], size: int,
             make_options: Callable[[object], dict[str, object]],
             restored: Callable[[object], bool]) -> dict[str, object]:
    state = Path(tempfile.mkdtemp(prefix="hcscale-state-"))
    os.environ.update(env_for(state))
    engine = Engine(Config(state_dir=state), warden=OnDemand(state))
    try:
        return measure_size(engine, kind, targets, size, make_options, restored)
    finally:
        put_back_and_remove(engine)


def put_back_and_remove(engine: Engine) -> None:
    """Roll back what a failed round left, then remove the state directory only if it
    holds no open record: deleting one beside its fault (or a mounted namespace
    handle) would lose the fault."""
    state = engine.journal.state_dir
    if engine.journal.has_open_records():
        done, errors = engine.rollback_all()
        print(f"scale: cleanup rolled back {len(done)} fault(s), {len(errors)} error(s)",
              file=sys.stderr)
    deadline = time.monotonic() + 10
    while holder(state) is not None and time.monotonic() < deadline:
        time.sleep(0.1)
    if engine.journal.has_open_records():
        print(f"scale: open records remain in {state}; kept for `hostchaos sweep`",
              file=sys.stderr)
        return
    shutil.rmtree(state, ignore_errors=True)


def measure_size(engine: Engine, kind: str, targets: list[str] | list[int], size: int,
                 make_options: Callable[[object], dict[str, object]],
                 restored: Callable[[object], bool]) -> dict[str, object]:
    row: dict[str, object] = {"kind": kind, "faults": size}
    state = engine.journal.state_dir
    for round_name in ("engine", "cli"):
        started, cpu = time.monotonic(), cpu_seconds("engine")
        for target in targets[:size]:
            engine.inject(spec_from_options(kind, make_options(target)), 600)
        row[f"apply_all_{round_name}_round_s"] = round(time.monotonic() - started, 3)
        row[f"apply_all_{round_name}_round_cpu_s"] = round(cpu_seconds("engine") - cpu, 3)
        warden = holder(state)
        assert warden is not None and warden.pid > 0
        row[f"warden_rss_mib_{round_name}_round"] = round(rss_kib(warden.pid) / 1024, 1)
        started, cpu = time.monotonic(), cpu_seconds(round_name)
        if round_name == "engine":
            done, errors = engine.rollback_all()
            assert len(done) == size and not errors, errors
        else:
            result = subprocess.run([sys.executable, "-m", "hostchaos", "rollback", "--all",
                                     "--json"], cwd=REPO, env=env_for(state),
                                    capture_output=True, text=True)
            assert result.returncode == 0, result.stderr
            assert len(json.loads(result.stdout)["rolled_back"]) == size
        row[f"rollback_all_{round_name}_s"] = round(time.monotonic() - started, 3)
        row[f"rollback_all_{round_name}_cpu_s"] = round(cpu_seconds(round_name) - cpu, 3)
        step = max(size // 20, 1)
        checked = targets[:size:step]
        row[f"restored_{round_name}_round"] = f"{sum(map(restored, checked))}/{len(checked)}"
        assert not engine.journal.has_open_records()
    row["apply_all_s"] = row["apply_all_engine_round_s"]
    row["rollback_all_s"] = row["rollback_all_cli_s"]
    row["rss_mib"] = {"warden": max(row["warden_rss_mib_engine_round"],  # type: ignore[type-var]
                                    row["warden_rss_mib_cli_round"])}
    return row


def sweep_10000(victims: list[int]) -> dict[str, object]:
    """A journal of 10 000 real-format records, swept by the CLI and by the engine."""
    out: dict[str, object] = {}
    for how in ("cli", "engine"):
        with tempfile.TemporaryDirectory(prefix="hcscale-sweep-") as tmp:
            state = Path(tmp)
            engine = Engine(Config(state_dir=state))
            engine.journal.prepare()
            now, boot_now = time.time(), boottime()
            made = {"ended_this_week": 0, "ended_over_a_week_ago": 0,
                    "open_from_a_previous_boot": 0}
            for i in range(10_000):
                pid = victims[i % len(victims)]
                if i < 8000:
                    which, ended_at = "ended_this_week", now - 3600 - i * 60
                elif i < 9000:
                    which, ended_at = "ended_over_a_week_ago", now - KEEP_ENDED_SECONDS - 3600 - i
                else:
                    which, ended_at = "open_from_a_previous_boot", None
                created = (ended_at or now - 86400) - 60
                record = FaultRecord(
                    id=f"hc-nofile-{i:08x}", kind="nofile",
                    spec={"pids": [pid], "soft": 64, "hard": None},
                    summary=f"RLIMIT_NOFILE of pid {pid} to 64", boot_id=
                    "00000000-0000-0000-0000-000000000000" if ended_at is None else
                    open("/proc/sys/kernel/random/boot_id").read().strip(),
                    created_at=created, expires_at=created + 600,
                    created_boottime=boot_now - (now - created),
                    expires_boottime=boot_now - (now - created) + 600,
                    survives_reboot=False,
                    undo=[{"step": "rlimit", "pid": pid, "soft": 1024, "hard": 1048576}])
                record.transition("pending")
                record.transition("applying")
                record.transition(ACTIVE)
                if ended_at is not None:
                    record.transition(ROLLED_BACK, "deadline reached")
                    record.ended_at, record.end_reason = ended_at, "deadline reached"
                engine.journal.save(record)
                if ended_at is not None:
                    path = engine.journal.path_of(record.id, ended=True)
                    os.utime(path, (ended_at, ended_at))  # written when it ended
                made[which] += 1
            started, cpu = time.monotonic(), cpu_seconds(how)
            if how == "cli":
                result = subprocess.run([sys.executable, "-m", "hostchaos", "sweep", "--json"],
                                        cwd=REPO, env=env_for(state), capture_output=True,
                                        text=True)
                assert result.returncode == 0, result.stderr
                report = json.loads(result.stdout)
            else:
                report = engine.sweep().to_dict()
            seconds, cpu = time.monotonic() - started, cpu_seconds(how) - cpu
            assert len(report["closed_by_reboot"]) == 1000, report
            assert report["pruned"] == 1000, report["pruned"]
            assert os.environ.get("HC_PROFILE") or not engine.journal.has_open_records()
            out[f"sweep_10000_{how}_s"] = round(seconds, 3)
            out[f"sweep_10000_{how}_cpu_s"] = round(cpu, 3)
            out["sweep_10000_records"] = made
            out["sweep_10000_result"] = {"closed_by_reboot": len(report["closed_by_reboot"]),
                                         "pruned": report["pruned"],
                                         "failed": len(report["failed"])}
    out["sweep_10000_s"] = out["sweep_10000_cli_s"]
    with tempfile.TemporaryDirectory(prefix="hcscale-sweep-") as tmp:  # what any command costs
        started, cpu = time.monotonic(), cpu_seconds("cli")
        subprocess.run([sys.executable, "-m", "hostchaos", "sweep", "--json"], cwd=REPO,
                       env=env_for(Path(tmp)), capture_output=True, check=True)
        out["sweep_empty_cli_s"] = round(time.monotonic() - started, 3)
        out["sweep_empty_cli_cpu_s"] = round(cpu_seconds("cli") - cpu, 3)
    return out


def cpu_seconds(how: str) -> float:
    """CPU time (user + system) of this process, or of its finished children."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN if how == "cli"
                               else resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,10,100,1000")
    parser.add_argument("--kinds", default="rate,nofile")
    parser.add_argument("--write", type=Path, help="also write the results as JSON here")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # clean up on the way out
    sizes = [int(s) for s in args.sizes.split(",")]
    kinds = args.kinds.split(",")
    biggest = max(sizes)
    result: dict[str, object] = {"load_average_1m_before": os.getloadavg()[0], "rows": []}
    rows: list[dict[str, object]] = result["rows"]  # type: ignore[assignment]
    victims = [subprocess.Popen(["sleep", "3600"]) for _ in range(biggest)]
    original = soft_nofile(victims[0].pid)
    try:
        for kind in kinds:
            if kind == "rate":
                started = time.monotonic()
                with many_netns.made(biggest) as names:
                    result["netns_made_s"] = round(time.monotonic() - started, 2)
                    for size in sizes:
                        rows.append(one_size(
                            "rate", names, size,
                            lambda ns: {"netns": ns, "iface": "hcv0", "rate": "10mbit"},
                            lambda ns: root_qdisc_kind(str(ns)) == "noqueue"))
                        print(json.dumps(rows[-1]), flush=True)
            elif kind == "nofile":
                pids = [p.pid for p in victims]
                for size in sizes:
                    rows.append(one_size(
                        "nofile", pids, size, lambda pid: {"pid": pid, "soft": 64},
                        lambda pid: soft_nofile(int(str(pid))) == original))
                    print(json.dumps(rows[-1]), flush=True)
            else:
                raise SystemExit(f"unknown kind {kind}: rate or nofile")
        result.update(sweep_10000([p.pid for p in victims[:100]]))
    finally:
        for proc in victims:
            proc.kill()
        for proc in victims:
            proc.wait()
    result.update({"host": platform.node(), "kernel": platform.release(),
                   "python": sys.version.split()[0], "cpus": os.cpu_count(),
                   "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    print(json.dumps(result, indent=2))
    if args.write:
        args.write.parent.mkdir(parents=True, exist_ok=True)
        args.write.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
