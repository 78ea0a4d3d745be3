"""Regenerate the tables of docs/benchmarks.md from the JSON results in bench/results/.

Each generated table sits between two markers in docs/benchmarks.md::

    <!-- bench:NAME begin -->
    ...generated, do not edit...
    <!-- bench:NAME end -->

and is rebuilt from the result files of its section (see ``SECTIONS``), each
with a line naming the machine (CPU model, cores, kernel, Python), the date and
the exact command. Text outside the markers is left alone. A section whose
files are all missing says so instead of a table; a result whose shape the
renderer does not know is shown as a generic table of its scalar fields, so a
bench can change its JSON without breaking `make bench`.

    .venv/bin/python bench/tables.py            # rewrite docs/benchmarks.md
    .venv/bin/python bench/tables.py --check    # exit 1 (and a diff) if it is stale
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
DOC = REPO / "docs" / "benchmarks.md"

Result = dict[str, Any]


def num(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "" if value is None else str(value)
    if isinstance(value, int):
        return str(value)
    size = abs(value)
    if size >= 100:
        return f"{value:.0f}"
    if size >= 10:
        return f"{value:.1f}"
    if size >= 0.1 or size == 0:
        return f"{value:.2f}"
    return f"{value:.3g}"


def table(header: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(num(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return out


def provenance(result: Result, name: str) -> list[str]:
    m = result.get("machine", {})
    where = (f"{m.get('tier', '?')}: {m.get('cpu', '?')}, {m.get('cores', '?')} cores, "
             f"kernel {m.get('kernel', '?')}, Python {m.get('python', '?')}, "
             f"{m.get('date', '?')}"
             + (f", load {m['load_1m']}" if m.get("load_1m") is not None else ""))
    lines = [f"`bench/results/{name}` ({where}):", ""]
    if result.get("command"):
        lines += [f"    {result['command']}", ""]
    return lines


# -- one renderer per bench ------------------------------------------------------------

PATH_ORDER = ["engine", "agent", "cli", "tc-identical-tree", "tc-same-tree", "tc-root"]


def render_network_paths(result: Result) -> list[str]:
    rows = []
    for kind, data in result.get("kinds", {}).items():
        paths = data.get("paths", {})
        root = paths.get("tc-root", {}).get("median_ms")
        for path in sorted(paths, key=lambda p: [*PATH_ORDER, p].index(p)):
            stats = paths[path]
            median = stats.get("median_ms")
            rows.append([kind, path, median, stats.get("p95_ms"), stats.get("rounds"),
                         stats.get("ratio_to_tc_identical_tree"),
                         stats.get("ratio_to_tc_same_tree"),
                         round(median / root, 2) if root and median is not None else None])
    out = table(["kind", "path", "median ms", "p95 ms", "rounds", "÷ tc-identical-tree",
                 "÷ tc-same-tree", "÷ tc-root"], rows)
    for kind, data in result.get("kinds", {}).items():
        for path, why in data.get("failed", {}).items():
            out += ["", f"**{kind} through {path} failed**: {why}"]
    if result.get("partial"):
        out += ["", "**Partial**: the run ended before every kind was measured."]
    if result.get("state_filesystem"):
        out += ["", f"State directory (the journal) on {result['state_filesystem']}."]
    leaves = {k: d.get("tc_leaf") for k, d in result.get("kinds", {}).items()}
    if leaves:
        out += ["", "tc leaves: " + "; ".join(f"{k} `{v}`" for k, v in leaves.items())]
    return out


def render_fidelity(result: Result) -> list[str]:
    rows = [[r.get("check"), f"`{r.get('requested')}`", r.get("requested_value"),
             r.get("measured_value"), r.get("unit"),
             None if r.get("error_percent") is None else f"{r['error_percent']:+.1f}%",
             r.get("how")] for r in result.get("rows", [])]
    out = table(["check", "requested", "want", "measured", "unit", "error", "how measured"],
                rows)
    for name, why in result.get("failed", {}).items():
        out += ["", f"**{name} failed**: {why}"]
    return out


def render_coldstart(result: Result) -> list[str]:
    rows = [[f"`{name}`", s.get("median_ms"), s.get("p95_ms"), s.get("min_ms"),
             s.get("cpu_median_ms"), s.get("rounds")]
            for name, s in result.get("results", {}).items()]
    out = table(["command", "median ms", "p95 ms", "min ms", "CPU median ms", "runs"], rows)
    target = result.get("target_help_ms")
    if target is not None:
        met = "met" if result.get("help_meets_target") else "**not met**"
        out += ["", f"Target: `hostchaos --help` under {num(target)} ms (median): {met}."]
    return out


def _scalars(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, inner in value.items():
            out.update(_scalars(inner, f"{prefix}{key}."))
        return out
    if isinstance(value, list):
        return {}
    return {prefix.rstrip("."): value}


#: never in a table: shown in the provenance line, or a host name
NOT_SHOWN = {"bench", "machine", "command", "host", "hostname", "node"}


def render_generic(result: Result) -> list[str]:
    """The first list of objects (or object of objects) as rows of their scalar fields."""
    body = {k: v for k, v in result.items() if k not in NOT_SHOWN}
    for key, value in body.items():
        items: list[tuple[str, Any]] = []
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            items = [("", v) for v in value]
        elif isinstance(value, dict) and value and all(isinstance(v, dict)
                                                        for v in value.values()):
            items = list(value.items())
        if items:
            flat = [(label, _scalars(v)) for label, v in items]
            columns: list[str] = []
            for _, fields in flat:
                columns += [c for c in fields if c not in columns]
            header = ([key] if any(label for label, _ in flat) else []) + columns
            rows = [([label] if header[:1] == [key] else []) + [f.get(c) for c in columns]
                    for label, f in flat]
            rest = {k: v for k, v in _scalars(body).items() if not k.startswith(f"{key}.")}
            out = table(header, rows)
            if rest:
                out += ["", "; ".join(f"{k}: {num(v)}" for k, v in rest.items())]
            return out
    fields = _scalars(body)
    return table(["field", "value"], [[k, v] for k, v in fields.items()])


#: the columns of scale's rows worth a table, in order (others stay in the JSON)
#: per size: applying all (engine round, CLI round), `rollback --all` (engine, CLI: the
#: acceptance figure), how many of a sample were restored exactly, the warden's RSS
SCALE_COLUMNS = ["kind", "faults", "apply_all_engine_round_s", "rollback_all_engine_s",
                 "apply_all_cli_round_s", "rollback_all_cli_s", "rollback_all_cli_cpu_s",
                 "restored_cli_round", "rss_mib.warden", "rss_mib.agent"]


def render_scale(result: Result) -> list[str]:
    """bench/scale.py's rows by size; anything else it reports as a line under the table."""
    rows = result.get("rows")
    if not isinstance(rows, list) or not rows:
        return render_generic(result)
    flat = [_scalars(r) for r in rows if isinstance(r, dict)]
    columns = [c for c in SCALE_COLUMNS if any(c in f for f in flat)]
    if len(columns) < 2:
        return render_generic(result)
    out = table(columns, [[f.get(c) for c in columns] for f in flat])
    rest = {k: v for k, v in _scalars({k: v for k, v in result.items()
                                       if k not in NOT_SHOWN and k != "rows"}).items()}
    if rest:
        out += ["", "; ".join(f"{k}: {num(v)}" for k, v in rest.items())]
    return out


RENDERERS: dict[str, Callable[[Result], list[str]]] = {
    "network_paths": render_network_paths, "fidelity": render_fidelity,
    "coldstart": render_coldstart, "scale": render_scale,
}

#: marker name -> the result files it is built from, in order
SECTIONS: dict[str, list[str]] = {
    "paths": ["paths-host.json", "paths-host-tmpfs.json", "paths-vm.json"],
    "fidelity": ["fidelity-host.json", "fidelity-vm.json"],
    "coldstart": ["coldstart-host.json", "coldstart-vm.json"],
    "scale": ["scale-host.json"],
}


def render_section(name: str, results: Path = RESULTS) -> list[str]:
    out: list[str] = ["<!-- generated by bench/tables.py from bench/results/: do not edit -->"]
    found = False
    for file in SECTIONS[name]:
        path = results / file
        if not path.exists():
            continue
        found = True
        try:
            result = json.loads(path.read_text())
            renderer = RENDERERS.get(str(result.get("bench")), render_generic)
            lines = renderer(result)
        except (ValueError, AttributeError, TypeError, KeyError) as exc:
            result, lines = {}, [f"(could not render: {type(exc).__name__}: {exc})"]
        out += ["", *provenance(result, file), *lines]
    if not found:
        out += ["", f"(no results yet: {', '.join(SECTIONS[name])} missing; run `make bench`)"]
    return out


MARKERS = re.compile(r"(<!-- bench:(?P<name>[\w-]+) begin -->\n)(.*?)"
                     r"(<!-- bench:(?P=name) end -->)", re.S)


def regenerate(text: str, results: Path = RESULTS) -> str:
    def one(match: re.Match[str]) -> str:
        name = match.group("name")
        if name not in SECTIONS:
            return match.group(0)
        return match.group(1) + "\n".join(render_section(name, results)) + "\n" + match.group(4)
    return MARKERS.sub(one, text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="change nothing; exit 1 if the doc's tables differ from the results")
    parser.add_argument("--doc", type=Path, default=DOC)
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    text = args.doc.read_text()
    new = regenerate(text, args.results)
    missing = [n for n in SECTIONS if f"<!-- bench:{n} begin -->" not in text]
    if missing:
        print(f"bench/tables.py: {args.doc} has no markers for: {', '.join(missing)}",
              file=sys.stderr)
    if args.check:
        if new != text:
            sys.stdout.writelines(difflib.unified_diff(
                text.splitlines(True), new.splitlines(True), str(args.doc), "regenerated"))
            print(f"bench/tables.py: {args.doc} is stale; run .venv/bin/python bench/tables.py",
                  file=sys.stderr)
            return 1
        return 0
    if new != text:
        args.doc.write_text(new)
        print(f"rewrote the generated tables of {args.doc}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
