"""What every benchmark of `make bench` shares: the machine it ran on, summaries, result files.

Each result file under ``bench/results/`` is one JSON object with at least
``bench`` (its name), ``machine`` (see :func:`machine`), ``command`` (the exact
command line that produced it) and the bench's own numbers; ``bench/tables.py``
renders them into docs/benchmarks.md.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"


def tier() -> str:
    """"vm" inside the virtme-ng VM of scripts/vm-run, "host" otherwise."""
    try:
        cmdline = Path("/proc/cmdline").read_text()
    except OSError:
        return "host"
    return "vm" if "virtme" in cmdline else "host"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    """Where a result was measured, without the host name."""
    return {"tier": tier(), "cpu": cpu_model(), "cores": os.cpu_count(),
            "kernel": platform.release(), "python": platform.python_version(),
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            # other work on the machine moves every number here: say how busy it was
            "load_1m": round(os.getloadavg()[0], 2)}


def filesystem_of(path: Path) -> str:
    """The type of the filesystem ``path`` is on (ext4, tmpfs ...), from /proc/self/mountinfo."""
    best, kind = "", "?"
    target = str(path.resolve())
    with open("/proc/self/mountinfo") as handle:
        for line in handle:
            fields = line.split()
            point = fields[4]
            fstype = fields[fields.index("-") + 1]
            if (target == point or target.startswith(point.rstrip("/") + "/")) \
                    and len(point) >= len(best):
                best, kind = point, fstype
    return kind


def command() -> str:
    """This process's command line, with the interpreter path made relative to the repo."""
    exe = sys.executable
    try:
        exe = os.path.relpath(exe, REPO) if Path(exe).is_relative_to(REPO) else exe
    except ValueError:
        pass
    script = sys.argv[0]
    try:
        script = os.path.relpath(script, REPO)
    except ValueError:
        pass
    args = [os.path.relpath(a, REPO) if a.startswith(f"{REPO}/") else a for a in sys.argv[1:]]
    if tier() == "vm":  # how to run it again from the host: one VM boot
        return shlex.join(["scripts/vm-run", "--venv", ".venv", "--", "python", script, *args])
    return shlex.join([exe, script, *args])


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def summary(values: Sequence[float]) -> dict[str, float | int]:
    """median, p95, min and the count of a list of milliseconds."""
    return {"median_ms": round(statistics.median(values), 3),
            "p95_ms": round(percentile(values, 95), 3),
            "min_ms": round(min(values), 3), "rounds": len(values)}


def timed(rounds: int, one: Callable[[], object], *, warmup: int = 1) -> list[float]:
    """Milliseconds of ``rounds`` calls of ``one`` after ``warmup`` uncounted ones."""
    for _ in range(warmup):
        one()
    out = []
    for _ in range(rounds):
        started = time.perf_counter()
        one()
        out.append((time.perf_counter() - started) * 1000)
    return out


def report(bench: str, body: dict[str, Any]) -> dict[str, Any]:
    return {"bench": bench, "machine": machine(), "command": command(), **body}


def write(path: Path | None, result: dict[str, Any]) -> None:
    text = json.dumps(result, indent=2) + "\n"
    if path is None:
        sys.stdout.write(text)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    print(f"wrote {path}", file=sys.stderr)
