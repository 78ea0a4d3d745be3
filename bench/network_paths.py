"""apply+rollback of each network kind through every path, against `tc`, in one run.

For each kind, on the same veth of one sandbox (two namespaces, see
hostchaos.sandbox.NetnsPair), one apply+rollback pair is timed ``--rounds``
times (after one warm-up) through:

- **engine**: ``Engine.inject`` + ``Engine.rollback`` in this process (no warden);
- **agent**: ``POST /v1/faults`` + ``DELETE /v1/faults/{id}`` to a real
  `hostchaos agent` on a temporary socket (one connection per request, as the CLI);
- **cli**: ``hostchaos inject KIND ... --json`` then ``hostchaos rollback ID``, two
  cold processes of the venv's ``hostchaos`` script, no agent (the CLI runs the
  engine and the on-demand warden itself), ``--cli-rounds`` times;
- **tc-same-tree**: the tree hostchaos builds (HTB root, class, leaf, IPv4+IPv6
  filters), by six ``tc`` subprocesses, then one ``tc qdisc del`` (kept as it was
  for comparison across versions: it lacks the engine's IPv6 neighbour-discovery
  pass filters);
- **tc-identical-tree**: exactly the engine's tree, one ``tc`` call per qdisc, class
  and filter, then ``tc qdisc del``; checked first to dump (``tc -d``) the same as
  the engine's (bench/tc_equivalent.py);
- **tc-root**: ``tc qdisc add dev X root LEAF`` + ``tc qdisc del``: two processes,
  what most chaos tools run (it shapes everything, ARP and SSH included).

netem kinds need sch_netem, so they run in the VM tier; ``rate`` (tbf) runs on
the build machine's kernel too::

    .venv/bin/python bench/network_paths.py --kinds rate --write bench/results/paths-host.json
    scripts/vm-run --venv .venv -- python bench/network_paths.py --write bench/results/paths-vm.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import tc_equivalent
from bench.common import REPO, filesystem_of, report, summary, timed, write
from hostchaos.config import Config
from hostchaos.engine import Engine
from hostchaos.faults.from_options import spec_from_options
from hostchaos.sandbox import NetnsPair
from tests.support.agent import answers, raw_request, stop_agent

#: kind -> (its options, the `tc` leaf that does the same)
KINDS: dict[str, tuple[dict[str, Any], list[str]]] = {
    "latency": ({"ms": 100}, ["netem", "delay", "100ms"]),
    "loss": ({"percent": 10}, ["netem", "loss", "10%"]),
    "corrupt": ({"percent": 10}, ["netem", "corrupt", "10%"]),
    "duplicate": ({"percent": 10}, ["netem", "duplicate", "10%"]),
    "reorder": ({"percent": 10, "ms": 10}, ["netem", "delay", "10ms", "reorder", "10%"]),
    "partition": ({"dst": [NetnsPair.addr_b + "/32"]}, ["netem", "loss", "100%"]),
    # the engine's own tbf for 10mbit (RateFault.leaf_options: burst 5000 B, 250 ms of queue)
    "rate": ({"rate": "10mbit"}, ["tbf", "rate", "10mbit", "burst", "5000", "limit", "312500"]),
}
NETEM_KINDS = [k for k in KINDS if k != "rate"]


def cli_args(options: dict[str, Any]) -> list[str]:
    out = []
    for key, value in options.items():
        for one in value if isinstance(value, list) else [value]:
            out += [f"--{key}", str(one)]
    return out


def hostchaos_script() -> str:
    script = Path(sys.executable).parent / "hostchaos"
    return str(script) if script.exists() else "hostchaos"


def tc(ns: str, *args: str) -> None:
    subprocess.run(["tc", "-n", ns, *args], check=True, capture_output=True)


def tc_tree(ns: str, dev: str, leaf: list[str], dst: str | None) -> None:
    tc(ns, "qdisc", "add", "dev", dev, "root", "handle", "4843:", "htb", "default", "0")
    tc(ns, "class", "add", "dev", dev, "parent", "4843:", "classid", "4843:1", "htb",
       "rate", "100gbit", "quantum", "60000")
    tc(ns, "qdisc", "add", "dev", dev, "parent", "4843:1", "handle", "4901:", *leaf)
    match4 = ["ip", "dst", dst] if dst else ["u32", "0", "0"]
    tc(ns, "filter", "add", "dev", dev, "parent", "4843:", "protocol", "ip", "prio", "1010",
       "u32", "match", *match4, "flowid", "4843:1")
    tc(ns, "filter", "add", "dev", dev, "parent", "4843:", "protocol", "ipv6", "prio", "1011",
       "u32", "match", "u32", "0", "0", "flowid", "4843:1")
    tc(ns, "qdisc", "del", "dev", dev, "root")


def tc_root(ns: str, dev: str, leaf: list[str]) -> None:
    tc(ns, "qdisc", "add", "dev", dev, "root", *leaf)
    tc(ns, "qdisc", "del", "dev", dev, "root")


def start_agent_patiently(state: Path, sock: Path, env: dict[str, str]
                          ) -> subprocess.Popen[bytes]:
    """tests/support/agent.py's start, with minutes instead of 30 s to answer (TCG, loaded)."""
    process = subprocess.Popen([sys.executable, "-m", "hostchaos", "agent"], cwd=REPO, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the agent exited with {process.returncode}")
        if sock.exists() and answers(sock):
            return process
        time.sleep(0.1)
    stop_agent(process)
    raise RuntimeError("the agent did not answer within 600 s")


@contextmanager
def sandbox(tries: int = 3) -> Iterator[NetnsPair]:
    """A NetnsPair; its creation retried (pyroute2's netns helper timed out in a loaded VM)."""
    for attempt in range(tries):
        pair = NetnsPair(prefix="hc-bench")
        try:
            pair.create()
            break
        except TimeoutError:
            if attempt == tries - 1:
                raise
            print("bench: creating the sandbox timed out; again", file=sys.stderr, flush=True)
    try:
        yield pair
    finally:
        pair.remove()


def remove_when_quiet(base: Path, timeout: float = 120) -> None:
    """Remove the temporary state directories once no on-demand warden writes there any more
    (the CLI path's warden ends a moment after the last fault: it may still write)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        shutil.rmtree(base, ignore_errors=True)
        time.sleep(1.0)
        if not base.exists():
            return
    print(f"bench: could not remove {base}: something still writes there", file=sys.stderr)


def one_kind(kind: str, pair: NetnsPair, base: Path, rounds: int, cli_rounds: int,
             paths: list[str]) -> dict[str, Any]:
    options, leaf = KINDS[kind]
    ns, dev = pair.a, pair.iface_a
    target = {"netns": ns, "iface": dev}
    state = base / f"state-{kind}"
    sock = base / f"agent-{kind}.sock"
    env = {**os.environ, "HOSTCHAOS_STATE_DIR": str(state), "HOSTCHAOS_SOCKET": str(sock),
           "HOSTCHAOS_CONFIG": str(base / "none.toml")}
    before = pair.tc_config()

    def engine_path() -> list[float]:
        engine = Engine(Config(state_dir=state))
        spec = spec_from_options(kind, {**target, **options})
        try:
            return timed(rounds, lambda: engine.rollback(engine.inject(spec, 60).id))
        except BaseException:
            engine.rollback_all("bench failed")
            raise

    def agent_path() -> list[float]:
        agent = start_agent_patiently(state, sock, env)
        body = json.dumps({"kind": kind, "for": "60s",
                           "options": {**target, **options}}).encode()
        headers = {"Content-Type": "application/json"}

        def through_agent() -> None:
            # a generous timeout: under TCG the agent's first inject imports the whole
            # network stack, which took over 30 s on a loaded machine
            status, _, data = raw_request(sock, "POST", "/v1/faults", body, headers,
                                          timeout=600)
            assert status == 201, (status, data)
            fault_id = json.loads(data)["id"]
            status, _, data = raw_request(sock, "DELETE", f"/v1/faults/{fault_id}",
                                          timeout=600)
            assert status == 200, (status, data)
        try:
            return timed(rounds, through_agent)
        finally:
            stop_agent(agent, timeout=600)  # SIGTERM rolls back what it holds

    def cli_path() -> list[float]:
        script = hostchaos_script()
        cli_env = {**env, "HOSTCHAOS_SOCKET": str(base / "no-agent.sock")}
        argv = [script, "inject", kind, "--netns", ns, "--iface", dev, *cli_args(options),
                "--for", "60s", "--json"]

        def through_cli() -> None:
            done = subprocess.run(argv, capture_output=True, text=True, env=cli_env, check=False)
            assert done.returncode == 0, done.stderr
            fault_id = json.loads(done.stdout)["id"]
            back = subprocess.run([script, "rollback", fault_id], capture_output=True,
                                  text=True, env=cli_env, check=False)
            assert back.returncode == 0, back.stderr
        try:
            return timed(cli_rounds, through_cli)
        except BaseException:
            subprocess.run([script, "rollback", "--all"], capture_output=True, env=cli_env,
                           check=False)
            raise

    def identical_path() -> list[float]:
        spec = spec_from_options(kind, {**target, **options})
        calls = tc_equivalent.commands(spec, dev, leaf)
        tc_equivalent.check_identical(ns, dev, calls, Engine(Config(state_dir=state)), spec)
        return timed(rounds, lambda: tc_equivalent.build_and_remove(ns, calls))

    dst = NetnsPair.addr_b + "/32" if kind == "partition" else None
    runs: dict[str, Callable[[], list[float]]] = {}
    if "engine" in paths:
        runs["engine"] = engine_path
    if "agent" in paths:
        runs["agent"] = agent_path
    if "cli" in paths and cli_rounds:
        runs["cli"] = cli_path
    if "tc" in paths:
        runs["tc-same-tree"] = lambda: timed(rounds, lambda: tc_tree(ns, dev, leaf, dst))
        runs["tc-identical-tree"] = identical_path
        runs["tc-root"] = lambda: timed(rounds, lambda: tc_root(ns, dev, leaf))

    out: dict[str, list[float]] = {}
    failed: dict[str, str] = {}
    for name, run in runs.items():
        try:
            out[name] = run()
        except Exception as exc:  # one path failing must not lose the others
            failed[name] = f"{type(exc).__name__}: {str(exc)[:300]}"
            print(f"   {name}: FAILED: {failed[name]}", file=sys.stderr, flush=True)
            subprocess.run(["tc", "-n", ns, "qdisc", "del", "dev", dev, "root"],
                           capture_output=True, check=False)

    left = pair.tc_config() != before
    rows = {name: summary(values) for name, values in out.items()}
    if "tc-same-tree" in rows:
        tree = rows["tc-same-tree"]["median_ms"]
        for row in rows.values():
            row["ratio_to_tc_same_tree"] = round(row["median_ms"] / tree, 2)
    if "tc-identical-tree" in rows:
        tree = rows["tc-identical-tree"]["median_ms"]
        for row in rows.values():
            row["ratio_to_tc_identical_tree"] = round(row["median_ms"] / tree, 2)
    result: dict[str, Any] = {"tc_leaf": " ".join(leaf), "options": options, "paths": rows}
    if failed:
        result["failed"] = failed
    if left:
        result["left_a_qdisc_behind"] = True
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", default=",".join(KINDS),
                        help="comma-separated network kinds (default: all; `rate` alone "
                        "without sch_netem)")
    parser.add_argument("--paths", default="engine,agent,cli,tc")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--cli-rounds", type=int, default=5)
    parser.add_argument("--cli-kinds", help="time the cli path only for these kinds (default: "
                        "all; a cold process costs seconds under TCG)")
    parser.add_argument("--write", type=Path, help="write the JSON result here")
    parser.add_argument("--state-base", type=Path,
                        help="make the state directories below this directory (default: the "
                        "system's temporary directory); the journal's writes cost what its "
                        "filesystem makes them cost")
    args = parser.parse_args()
    kinds = [k for k in args.kinds.split(",") if k]
    paths = [p for p in args.paths.split(",") if p]
    cli_kinds = None if args.cli_kinds is None else set(args.cli_kinds.split(","))
    unknown = set(kinds) - set(KINDS)
    if unknown:
        parser.error(f"unknown kinds: {', '.join(sorted(unknown))}")

    results: dict[str, Any] = {}
    base = Path(tempfile.mkdtemp(prefix="hc-bench-paths-", dir=args.state_base))
    state_fs = filesystem_of(base)
    with sandbox() as pair:
        try:
            for kind in kinds:
                print(f"-- {kind}", file=sys.stderr, flush=True)
                cli_rounds = args.cli_rounds if cli_kinds is None or kind in cli_kinds else 0
                results[kind] = one_kind(kind, pair, base, args.rounds, cli_rounds, paths)
                for name, row in results[kind]["paths"].items():
                    print(f"   {name:14} median {row['median_ms']:8.2f} ms  p95 "
                          f"{row['p95_ms']:8.2f} ms", file=sys.stderr, flush=True)
                if args.write:  # after every kind: a run cut short keeps what it measured
                    write(args.write, report("network_paths", {
                        "rounds": args.rounds, "cli_rounds": args.cli_rounds,
                        "state_filesystem": state_fs, "kinds": results, "partial": True}))
        finally:
            for kind in kinds:  # namespace handles' shared mounts under each state directory
                subprocess.run(["umount", "--lazy", str(base / f"state-{kind}" / "netns")],
                               capture_output=True, check=False)
    remove_when_quiet(base)
    write(args.write, report("network_paths", {"rounds": args.rounds,
                                               "cli_rounds": args.cli_rounds,
                                               "state_filesystem": state_fs,
                                               "kinds": results}))
    return 1 if any("failed" in r for r in results.values()) else 0


if __name__ == "__main__":
    os.chdir(REPO)
    sys.exit(main())
