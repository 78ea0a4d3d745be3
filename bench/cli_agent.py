"""The CLI end to end, through the agent and without it (issue 12, acceptance 5).

Times whole `hostchaos inject nofile --pid P --soft 64 --for 1m` and
`hostchaos rollback ID` processes (with ``--json-output``: both with ``--json``,
which loads the standard json module) (the venv's console script, as an operator runs
them), ``--rounds`` pairs each after one warm-up pair:

- **agent**: a real `hostchaos agent` on a temporary socket answers, so the CLI
  is the thin client (no pyroute2, no engine import);
- **in-process**: no agent answers; the CLI runs the engine itself with the
  on-demand warden (started once by the warm-up and shared).

The victim is a `sleep` this script starts. Targets: through the agent each
median under 60 ms, without it under 150 ms, on the build machine.

    .venv/bin/python bench/cli_agent.py --write bench/results/cli_agent-host.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import machine  # noqa: E402
from tests.support.agent import start_agent, stop_agent  # noqa: E402

HOSTCHAOS = str(REPO / ".venv/bin/hostchaos")
PYTHON = str(REPO / ".venv/bin/python")


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, str]:
    started = time.perf_counter()
    result = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    elapsed = (time.perf_counter() - started) * 1000
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(argv)}: exit {result.returncode}: {result.stderr}")
    return elapsed, result.stdout


def pairs(rounds: int, pid: int, env: dict[str, str], as_json: bool = False
          ) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"inject": [], "rollback": [], "python -c pass": []}
    flags = ["--json"] if as_json else []
    for i in range(rounds + 1):
        ms, text = timed([HOSTCHAOS, "inject", "nofile", "--pid", str(pid), "--soft", "64",
                          "--for", "1m", *flags], env)
        fault_id = json.loads(text)["id"] if as_json else text.split()[0]
        back, _ = timed([HOSTCHAOS, "rollback", fault_id, *flags], env)
        bare, _ = timed([PYTHON, "-c", "pass"], env)  # the machine's speed, in the same run
        if i:  # the first pair warms the page cache (and starts the warden)
            out["inject"].append(ms)
            out["rollback"].append(back)
            out["python -c pass"].append(bare)
    return out


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"median_ms": round(statistics.median(ordered), 1),
            "p95_ms": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 1),
            "min_ms": round(ordered[0], 1), "runs": len(ordered)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--write", type=Path)
    parser.add_argument("--json-output", action="store_true",
                        help="time `inject --json` and `rollback --json` instead")
    args = parser.parse_args()
    victim = subprocess.Popen(["sleep", "3600"])
    results: dict[str, dict[str, dict[str, float]]] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            base = Path(tmp)
            state, sock = base / "state", base / "agent.sock"
            state.mkdir(mode=0o700)
            env = {**os.environ, "HOSTCHAOS_STATE_DIR": str(state),
                   "HOSTCHAOS_SOCKET": str(sock), "HOSTCHAOS_CONFIG": "/nonexistent"}
            agent = start_agent(state, sock, env=env)
            try:
                timings = pairs(args.rounds, victim.pid, env, args.json_output)
            finally:
                stop_agent(agent)
            results["agent"] = {k: summary(v) for k, v in timings.items()}
            env["HOSTCHAOS_SOCKET"] = str(base / "no-agent.sock")
            timings = pairs(args.rounds, victim.pid, env, args.json_output)
            results["in-process"] = {k: summary(v) for k, v in timings.items()}
            subprocess.run([HOSTCHAOS, "rollback", "--all"], env=env, capture_output=True,
                           check=False)
    finally:
        victim.kill()
        victim.wait()
    for path, steps in results.items():
        for step, numbers in steps.items():
            print(f"{path:<11} {step:<9} median {numbers['median_ms']:7.1f} ms  "
                  f"p95 {numbers['p95_ms']:7.1f} ms")
    if args.write:
        payload = {"bench": "cli_agent", "machine": machine(),
                   "command": f".venv/bin/python bench/cli_agent.py --write {args.write}"
                              + (" --json-output" if args.json_output else ""),
                   "output": "--json" if args.json_output else "text",
                   "results": results}
        args.write.write_text(json.dumps(payload, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
