"""Time apply+rollback of a latency fault: hostchaos's engine vs `tc` subprocesses.

Runs in a sandbox (two network namespaces joined by veth); needs root and
sch_netem, so on the build machine it runs in the VM tier::

    scripts/vm-run --venv .venv -- python bench/apply_rollback.py --rounds 50

``--kind rate`` runs the same comparison with a tbf leaf instead of netem, which
the build machine's own kernel has: the numbers without emulation overhead::

    .venv/bin/python bench/apply_rollback.py --kind rate --rounds 50

Variants, each timed as one apply+rollback pair, --rounds times, same interface,
same run:

- engine: ``Engine.inject`` + ``Engine.rollback`` (journal record written before
  each change, lock, preflight, HTB tree + class + netem + IPv4/IPv6 filters),
  without a warden;
- engine+warden: the same with the on-demand warden the CLI uses (started once,
  then held open by the faults; earlier versions spawned a guardian per fault), in a
  state directory of its own (until 12-08 both engines shared one, and the warden
  woke on each of the plain engine's writes too);
- tc-root-netem: ``tc qdisc add ... root netem delay 100ms`` then ``tc qdisc del``
  (what most chaos tools do: two subprocesses);
- tc-same-tree: the HTB root, class and leaf hostchaos builds and one match-all
  filter per family, built by six ``tc`` calls (kept as it was so figures stay
  comparable across versions: it lacks the engine's two IPv6 neighbour-discovery
  pass filters);
- tc-identical-tree: exactly the engine's tree, pass filters included, one ``tc``
  call per qdisc, class and filter (eight here) and one ``tc qdisc del``; checked
  before timing to dump (``tc -d``) the same as the engine's (bench/tc_equivalent.py);
- netlink-tree: the engine's network path alone (no journal, lock, preflight or
  namespace handle): open the namespace, read the tree, build the same tree as
  ``engine`` in one batch, and take it down (the floor under ``engine``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import tc_equivalent
from hostchaos.config import Config
from hostchaos.engine import Engine
from hostchaos.faults import fault_class
from hostchaos.faults.latency import LatencySpec
from hostchaos.faults.rate import RateSpec
from hostchaos.faults.traffic import NetworkFault
from hostchaos.sandbox import NetnsPair
from hostchaos.system.netlink import ETH_P_IP, ETH_P_IPV6, FilterSet
from hostchaos.system.tc_namespace import open_tree
from hostchaos.warden import OnDemand

everything = FilterSet((), [(ETH_P_IP, ["0x0/0x0+0"]), (ETH_P_IPV6, ["0x0/0x0+0"])])


def timed(rounds: int, one: Callable[[], None]) -> list[float]:
    one()  # warm-up, not counted
    out = []
    for _ in range(rounds):
        started = time.perf_counter()
        one()
        out.append((time.perf_counter() - started) * 1000)
    return out


def interleaved(rounds: int, variants: dict[str, Callable[[], None]]
                ) -> dict[str, list[float]]:
    """Like :func:`timed` for each variant, but round by round: every variant's n-th pair
    runs next to the others' n-th, so a machine whose load changes by the second loads
    them alike.

    The order rotates by one each round, so every variant follows every other
    equally often: a pair that comes right after a run of ``tc`` processes finds
    the machine's caches colder than one that follows a pair of its own kind
    (``bench/pair_after_gap.py``), and a fixed order would hand that penalty to
    the same variant every round.
    """
    for one in variants.values():
        one()  # warm-up, not counted
    names = list(variants)
    out: dict[str, list[float]] = {name: [] for name in names}
    for round_number in range(rounds):
        shift = round_number % len(names)
        for name in names[shift:] + names[:shift]:
            started = time.perf_counter()
            variants[name]()
            out[name].append((time.perf_counter() - started) * 1000)
    return out


def tc(ns: str, *args: str) -> None:
    subprocess.run(["tc", "-n", ns, *args], check=True, capture_output=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--write", type=Path, help="also write the results as JSON here")
    parser.add_argument("--kind", choices=["latency", "rate"], default="latency",
                        help="latency: netem leaf (default); rate: tbf leaf (no netem needed)")
    parser.add_argument("--interleave", action="store_true",
                        help="time the variants round by round instead of one after another")
    args = parser.parse_args()
    import pyroute2.config

    # the sandbox's namespaces are made by a pyroute2 child that must answer within 2 s:
    # too short for a VM under TCG on a loaded machine
    pyroute2.config.default_communicate_timeout = 60

    results: dict[str, list[float]] = {}
    # each engine its own journal: a warden watching the plain engine's directory would
    # wake on each of its writes and slow it (interleaved, by 0.5-1 ms a pair)
    with tempfile.TemporaryDirectory() as state, tempfile.TemporaryDirectory() as warded, \
            NetnsPair(prefix="hc-bench") as pair:
        ns, dev = pair.a, pair.iface_a
        spec: LatencySpec | RateSpec = (LatencySpec(iface=dev, netns=ns, ms=100)
                                        if args.kind == "latency"
                                        else RateSpec(iface=dev, netns=ns, rate="1mbit"))
        leaf = (["netem", "delay", "100ms"] if args.kind == "latency"
                else tc_equivalent.RATE_1MBIT_LEAF)
        plain = Engine(Config(state_dir=Path(state)))
        with_warden = Engine(Config(state_dir=Path(warded)), warden=OnDemand(Path(warded)))
        os.environ["HOSTCHAOS_STATE_DIR"] = warded  # the warden's

        def engine_pair(engine: Engine) -> Callable[[], None]:
            return lambda: (engine.rollback(engine.inject(spec, 60).id), None)[1]

        def tc_root() -> None:
            tc(ns, "qdisc", "add", "dev", dev, "root", *leaf)
            tc(ns, "qdisc", "del", "dev", dev, "root")

        def tc_tree() -> None:
            tc(ns, "qdisc", "add", "dev", dev, "root", "handle", "4843:", "htb", "default", "0")
            tc(ns, "class", "add", "dev", dev, "parent", "4843:", "classid", "4843:1", "htb",
               "rate", "100gbit", "quantum", "60000")
            tc(ns, "qdisc", "add", "dev", dev, "parent", "4843:1", "handle", "4901:", *leaf)
            for proto, prio in (("ip", "1010"), ("ipv6", "1011")):
                tc(ns, "filter", "add", "dev", dev, "parent", "4843:", "protocol", proto,
                   "prio", prio, "u32", "match", "u32", "0", "0", "flowid", "4843:1")
            tc(ns, "qdisc", "del", "dev", dev, "root")

        fault = fault_class(spec.kind)(spec)
        assert isinstance(fault, NetworkFault)
        leaf_kind, leaf_options = fault.leaf_kind, fault.leaf_options()

        def netlink_tree() -> None:
            with open_tree(dev, ns) as tree:
                tree.foreign_root(tree.egress_qdiscs())
                tree.build_fault(1, leaf_kind, leaf_options, everything, create_root=True)
            with open_tree(dev, ns) as tree:
                tree.remove_fault(1, others=False)

        before = pair.tc_config()
        identical = tc_equivalent.commands(spec, dev, leaf)
        tc_equivalent.check_identical(ns, dev, identical, plain, spec)
        variants = {"engine": engine_pair(plain), "engine+warden": engine_pair(with_warden),
                    f"tc-root-{leaf[0]}": tc_root, "tc-same-tree": tc_tree,
                    "tc-identical-tree": lambda: tc_equivalent.build_and_remove(ns, identical),
                    "netlink-tree": netlink_tree}
        try:
            if args.interleave:
                results.update(interleaved(args.rounds, variants))
            else:
                for name, one in variants.items():
                    results[name] = timed(args.rounds, one)
            assert pair.tc_config() == before, "benchmark left a qdisc behind"
        finally:
            for engine in (plain, with_warden):  # a pair that failed half way
                engine.rollback_all("benchmark ended")
            # the namespace handles' shared mount points, which the temporary directories
            # hold: left mounted, they would keep the sandbox's namespace alive
            for directory in (state, warded):
                subprocess.run(["umount", "--lazy", f"{directory}/netns"],
                               capture_output=True, check=False)

    summary = {
        name: {"median_ms": round(statistics.median(v), 3),
               "p90_ms": round(sorted(v)[int(0.9 * (len(v) - 1))], 3),
               "min_ms": round(min(v), 3), "rounds": len(v)}
        for name, v in results.items()
    }
    report = {"kernel": platform.release(), "python": platform.python_version(),
              "kind": args.kind, "rounds": args.rounds, "interleaved": args.interleave,
              "results": summary}
    print(f"{'variant':18} {'median ms':>10} {'p90 ms':>10} {'min ms':>10}")
    for name, row in summary.items():
        print(f"{name:18} {row['median_ms']:10.2f} {row['p90_ms']:10.2f} {row['min_ms']:10.2f}")
    if args.write:
        args.write.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
