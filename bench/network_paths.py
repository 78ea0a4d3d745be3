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
  filters), by six ``tc`` subprocesses, then one ``tc qdisc del``;
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
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import REPO, report, summary, timed, write
from hostchaos.config import Config
from hostchaos.engine import Engine
from hostchaos.faults.from_options import spec_from_options
from hostchaos.sandbox import NetnsPair
from tests.support.agent import call, start_agent, stop_agent

#: kind -> (its options, the `tc` leaf that does the same)
KINDS: dict[str, tuple[dict[str, Any], list[str]]] = {
    "latency": ({"ms": 100}, ["netem", "delay", "100ms"]),
    "loss": ({"percent": 10}, ["netem", "loss", "10%"]),
    "corrupt": ({"percent": 10}, ["netem", "corrupt", "10%"]),
    "duplicate": ({"percent": 10}, ["netem", "duplicate", "10%"]),
    "reorder": ({"percent": 10, "ms": 10}, ["netem", "delay", "10ms", "reorder", "10%"]),
    "partition": ({"dst": [NetnsPair.addr_b + "/32"]}, ["netem", "loss", "100%"]),
    "rate": ({"rate": "10mbit"}, ["tbf", "rate", "10mbit", "burst", "12500", "limit", "125000"]),
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


def one_kind(kind: str, pair: NetnsPair, base: Path, rounds: int, cli_rounds: int,
             paths: list[str]) -> dict[str, Any]:
    options, leaf = KINDS[kind]
    ns, dev = pair.a, pair.iface_a
    target = {"netns": ns, "iface": dev}
    out: dict[str, list[float]] = {}
    state = base / f"state-{kind}"
    sock = base / f"agent-{kind}.sock"
    env = {**os.environ, "HOSTCHAOS_STATE_DIR": str(state), "HOSTCHAOS_SOCKET": str(sock),
           "HOSTCHAOS_CONFIG": str(base / "none.toml")}
    before = pair.tc_config()

    if "engine" in paths:
        engine = Engine(Config(state_dir=state))
        spec = spec_from_options(kind, {**target, **options})
        out["engine"] = timed(rounds, lambda: engine.rollback(engine.inject(spec, 60).id))

    if "agent" in paths:
        agent = start_agent(state, sock, env=env)
        body = {"kind": kind, "for": "60s", "options": {**target, **options}}

        def through_agent() -> None:
            status, view = call(sock, "POST", "/v1/faults", body)
            assert status == 201, (status, view)
            status, gone = call(sock, "DELETE", f"/v1/faults/{view['id']}")
            assert status == 200, (status, gone)
        try:
            out["agent"] = timed(rounds, through_agent)
        finally:
            stop_agent(agent)

    if "cli" in paths and cli_rounds:
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
        out["cli"] = timed(cli_rounds, through_cli)

    if "tc" in paths:
        dst = NetnsPair.addr_b + "/32" if kind == "partition" else None
        out["tc-same-tree"] = timed(rounds, lambda: tc_tree(ns, dev, leaf, dst))
        out["tc-root"] = timed(rounds, lambda: tc_root(ns, dev, leaf))

    assert pair.tc_config() == before, f"{kind}: the benchmark left a qdisc behind"
    rows = {name: summary(values) for name, values in out.items()}
    if "tc-same-tree" in rows:
        tree = rows["tc-same-tree"]["median_ms"]
        for row in rows.values():
            row["ratio_to_tc_same_tree"] = round(row["median_ms"] / tree, 2)
    return {"tc_leaf": " ".join(leaf), "options": options, "paths": rows}


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
    args = parser.parse_args()
    kinds = [k for k in args.kinds.split(",") if k]
    paths = [p for p in args.paths.split(",") if p]
    cli_kinds = None if args.cli_kinds is None else set(args.cli_kinds.split(","))
    unknown = set(kinds) - set(KINDS)
    if unknown:
        parser.error(f"unknown kinds: {', '.join(sorted(unknown))}")

    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="hc-bench-paths-") as tmp, \
            NetnsPair(prefix="hc-bench") as pair:
        base = Path(tmp)
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
                        "kinds": results, "partial": True}))
        finally:
            for kind in kinds:  # namespace handles' shared mounts under each state directory
                subprocess.run(["umount", "--lazy", str(base / f"state-{kind}" / "netns")],
                               capture_output=True, check=False)
    write(args.write, report("network_paths", {"rounds": args.rounds,
                                               "cli_rounds": args.cli_rounds,
                                               "kinds": results}))
    return 0


if __name__ == "__main__":
    os.chdir(REPO)
    sys.exit(main())
