"""`make bench`: every benchmark, host part on the host and VM part in one VM boot, then the tables.

Parts (``--only`` takes a comma-separated list of parts or of groups):

    host group: paths-host   bench/network_paths.py --kinds rate (tbf, this kernel)
                paths-host-tmpfs the same, state directories on tmpfs (/dev/shm)
                fidelity-host bench/fidelity.py (rate, cpu, memory, disk-fill, clock)
                coldstart-host bench/coldstart.py
                scale-host   bench/scale.py, when it exists
    vm group:   paths-vm     bench/network_paths.py, every netem kind (and rate); the cold CLI
                             path for latency only (about a minute a pair under TCG)
                fidelity-vm  bench/fidelity.py (latency, jitter, loss, duplicate)
                coldstart-vm bench/coldstart.py (only when named: not in `all` or `vm`)
    groups:     host, vm, paths, fidelity, coldstart, scale, all (default)

Each part writes ``bench/results/<part>.json``; at the end ``bench/tables.py``
regenerates the tables of docs/benchmarks.md from every result file there (a
part that failed keeps its previous file). The VM part boots once:
``scripts/vm-run --venv .venv --out .vm-out -- python bench/run.py --in-vm ...``.
``--quick`` cuts the rounds (for trying the harness, not for committed numbers);
``--tables-only`` only re-renders.

    .venv/bin/python bench/run.py                    # what `make bench` runs
    .venv/bin/python bench/run.py --only host --quick
    .venv/bin/python bench/run.py --only fidelity,coldstart-host
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import REPO, RESULTS, machine

PY = "python"  # inside the VM the venv is first on PATH; on the host sys.executable

#: part -> (tier, argv after the interpreter, argv extra for --quick)
PARTS: dict[str, tuple[str, list[str], list[str]]] = {
    "paths-host": ("host", ["bench/network_paths.py", "--kinds", "rate", "--rounds", "50",
                            "--cli-rounds", "10"], ["--rounds", "5", "--cli-rounds", "2"]),
    # the same with the journal on tmpfs (where /run is on most hosts): what the disk costs
    "paths-host-tmpfs": ("host", ["bench/network_paths.py", "--kinds", "rate", "--rounds", "50",
                                  "--cli-rounds", "10", "--state-base", "/dev/shm"],
                         ["--rounds", "5", "--cli-rounds", "2"]),
    "fidelity-host": ("host", ["bench/fidelity.py", "--checks",
                               "rate,cpu,memory,disk-fill,clock-offset,clock-rate"], []),
    "coldstart-host": ("host", ["bench/coldstart.py", "--rounds", "10"], ["--rounds", "3"]),
    "scale-host": ("host", ["bench/scale.py"], []),
    # sized for TCG on a shared 2-core machine: an engine pair ~1 s there, a cold CLI pair ~1 min
    "paths-vm": ("vm", ["bench/network_paths.py", "--rounds", "10", "--cli-rounds", "3",
                        "--cli-kinds", "latency"],
                 ["--kinds", "latency,rate", "--rounds", "3", "--cli-rounds", "1"]),
    "fidelity-vm": ("vm", ["bench/fidelity.py", "--checks", "latency,jitter,loss,duplicate"],
                    ["--checks", "latency"]),
    "coldstart-vm": ("vm", ["bench/coldstart.py", "--rounds", "10"], ["--rounds", "3"]),
}
ON_REQUEST = {"coldstart-vm"}  # cold starts under TCG: only when named
GROUPS = {"all": [p for p in PARTS if p not in ON_REQUEST],
          "host": [p for p in PARTS if PARTS[p][0] == "host"],
          "vm": [p for p in PARTS if PARTS[p][0] == "vm" and p not in ON_REQUEST],
          "paths": ["paths-host", "paths-host-tmpfs", "paths-vm"],
          "fidelity": ["fidelity-host", "fidelity-vm"],
          "coldstart": ["coldstart-host"], "scale": ["scale-host"]}


def selected(only: str) -> list[str]:
    out: list[str] = []
    for word in only.split(","):
        names = GROUPS.get(word, [word] if word in PARTS else None)
        if names is None:
            raise SystemExit(f"bench/run.py: unknown part {word!r}; parts: {', '.join(PARTS)}; "
                             f"groups: {', '.join(GROUPS)}")
        out += [n for n in names if n not in out]
    return out


def run_part(name: str, quick: bool, python: str) -> bool:
    _, argv, quick_args = PARTS[name]
    script = REPO / argv[0]
    if not script.exists():
        print(f"== {name}: skipped ({argv[0]} does not exist)", flush=True)
        return True
    out = RESULTS / f"{name}.json"
    full = [python, *argv, *(quick_args if quick else []), "--write", str(out)]
    print(f"== {name}: {' '.join(full)}", flush=True)
    started = time.monotonic()
    done = subprocess.run(full, cwd=REPO, check=False)
    if done.returncode == 0 and out.exists():
        stamp(out, name, [python if python == PY else ".venv/bin/python", *full[1:]])
    print(f"== {name}: {'ok' if done.returncode == 0 else f'FAILED (exit {done.returncode})'}"
          f" ({time.monotonic() - started:.0f} s)", flush=True)
    return done.returncode == 0


def stamp(path: Path, name: str, argv: list[str]) -> None:
    """Add what the table needs to a result that lacks it (a bench that does not use
    bench/common.py): its name, the machine, the command that made it."""
    try:
        result = json.loads(path.read_text())
    except ValueError:
        return
    if not isinstance(result, dict) or "machine" in result:
        return
    argv = [os.path.relpath(a, REPO) if a.startswith(f"{REPO}/") else a for a in argv]
    result = {"bench": result.get("bench", name.rsplit("-", 1)[0]), "machine": machine(),
              "command": shlex.join(argv), **result}
    path.write_text(json.dumps(result, indent=2) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="all", help="parts or groups, comma-separated")
    parser.add_argument("--quick", action="store_true", help="few rounds: try the harness")
    parser.add_argument("--tables-only", action="store_true")
    parser.add_argument("--in-vm", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--vm-timeout", type=int, default=1800)
    args = parser.parse_args()
    parts = selected(args.only)
    failed: list[str] = []
    if args.in_vm:  # inside the one VM boot: the vm parts, no tables
        for name in parts:
            if PARTS[name][0] == "vm" and not run_part(name, args.quick, PY):
                failed.append(name)
        return 1 if failed else 0

    if not args.tables_only:
        for name in parts:
            if PARTS[name][0] == "host" and not run_part(name, args.quick, sys.executable):
                failed.append(name)
        vm_parts = [p for p in parts if PARTS[p][0] == "vm"]
        if vm_parts:
            argv = ["timeout", "-k", "10", str(args.vm_timeout), "scripts/vm-run", "--venv",
                    ".venv", "--out", ".vm-out", "--", "python", "bench/run.py", "--in-vm",
                    "--only", ",".join(vm_parts), *(["--quick"] if args.quick else [])]
            print(f"== vm: {' '.join(argv)}", flush=True)
            if subprocess.run(argv, cwd=REPO, check=False).returncode != 0:
                failed.append("vm")
    tables = subprocess.run([sys.executable, "bench/tables.py"], cwd=REPO, check=False)
    if tables.returncode != 0:
        failed.append("tables")
    if failed:
        print(f"bench/run.py: failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    os.chdir(REPO)
    sys.exit(main())
