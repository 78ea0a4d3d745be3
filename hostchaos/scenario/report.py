"""What a scenario run showed: detection and recovery per fault and probe, over every run.

- *time to detect*: from the moment the fault was in place (its inject
  returned) to the start of the first failing sample of a probe; a sample
  that started while the fault was being applied and failed counts as 0;
- *recovery time*: from the fault's end to the first of ``consecutive``
  passing samples in a row;
- over ``--repeat`` runs: MTTR (the mean recovery time of every detected
  fault/probe pair that recovered) and the recovery rate (recovered pairs /
  detected pairs; 1.0 when nothing was detected).

The report is a dict (``--json``), a few lines of text, or one self-contained
HTML page with an SVG timeline (no script, no network).
"""

from __future__ import annotations

import html
import statistics
import time
from typing import Any

from hostchaos.scenario.model import Scenario
from hostchaos.scenario.runner import RunResult


def findings(result: RunResult, consecutive: int) -> list[dict[str, Any]]:
    out = []
    for fault in result.faults:
        if fault.applied_at is None or fault.started_at is None:
            continue
        begin = fault.started_at
        end = fault.ended_at if fault.ended_at is not None else result.duration
        for sampler in result.samplers:
            samples = sampler.snapshot()
            failed = next((s for s in samples
                           if begin <= s.t <= end and not s.ok), None)
            entry: dict[str, Any] = {"fault": fault.id, "kind": fault.step.kind,
                                     "probe": sampler.probe.name, "detected": failed is not None,
                                     "time_to_detect": None, "recovery_time": None,
                                     "recovered": None}
            if failed is not None:
                entry["time_to_detect"] = round(max(failed.t - fault.applied_at, 0.0), 3)
                after = [s for s in samples if s.t >= end]
                for i in range(len(after) - consecutive + 1):
                    if all(s.ok for s in after[i:i + consecutive]):
                        entry["recovery_time"] = round(max(after[i].t - end, 0.0), 3)
                        break
                entry["recovered"] = entry["recovery_time"] is not None
            out.append(entry)
    return out


def build(scenario: Scenario, results: list[RunResult]) -> dict[str, Any]:
    """The whole report, as plain data."""
    runs = []
    detected: list[dict[str, Any]] = []
    for result in results:
        found = findings(result, scenario.consecutive)
        detected += [f for f in found if f["detected"]]
        runs.append({
            "run": result.index, "seed": result.seed, "outcome": result.outcome,
            "reason": result.reason,
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z",
                                        time.localtime(result.started_wall)),
            "duration": round(result.duration, 3),
            "faults": [f.to_dict() for f in result.faults],
            "probes": [{"name": s.probe.name, "kind": s.probe.kind, "every": s.probe.every,
                        "problem": s.problem,
                        "samples": [x.to_list() for x in s.snapshot()]}
                       for s in result.samplers],
            "findings": found,
        })
    recovered = [f["recovery_time"] for f in detected if f["recovered"]]
    outcomes: dict[str, int] = {}
    for result in results:
        outcomes[result.outcome] = outcomes.get(result.outcome, 0) + 1
    return {
        "scenario": scenario.name, "file": scenario.path, "description": scenario.description,
        "consecutive": scenario.consecutive,
        "summary": {
            "runs": len(results), "outcomes": outcomes,
            "detected": len(detected), "recovered": len(recovered),
            "mttr_s": round(statistics.fmean(recovered), 3) if recovered else None,
            "recovery_rate": round(len(recovered) / len(detected), 3) if detected else 1.0,
        },
        "runs": runs,
    }


def _outcomes(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items()))


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}s"


def text(report: dict[str, Any]) -> str:
    lines = [f"scenario: {report['scenario']} ({report['file']})"]
    for run in report["runs"]:
        lines.append(f"run {run['run']} (seed {run['seed']}): {run['outcome']}: {run['reason']}")
        for fault in run["faults"]:
            lines.append(f"  fault {fault['id'] or '-'} {fault['kind']}: {fault['summary']} "
                         f"[{_seconds(fault['applied_at'])} .. {_seconds(fault['ended_at'])}]"
                         + (f" error: {fault['error']}" if fault["error"] else ""))
        for found in run["findings"]:
            if found["detected"]:
                lines.append(f"  {found['probe']}: detected {found['kind']} after "
                             f"{_seconds(found['time_to_detect'])}, recovered "
                             + (f"{_seconds(found['recovery_time'])} after it ended"
                                if found["recovered"] else "NOT within the recovery timeout"))
            else:
                lines.append(f"  {found['probe']}: did not see {found['kind']}")
    summary = report["summary"]
    lines.append(f"summary: {summary['runs']} run(s), {_outcomes(summary['outcomes'])}; "
                 f"MTTR {_seconds(summary['mttr_s'])}, recovery rate "
                 f"{summary['recovery_rate']:.2f} ({summary['recovered']}/"
                 f"{summary['detected']} detected fault/probe pairs recovered)")
    return "\n".join(lines)


# -- HTML -----------------------------------------------------------------------------------

_CSS = """body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222}
h1{font-size:20px}h2{font-size:16px;margin-top:28px}table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}.ok{color:#1a7f37}
.bad{color:#c62828}svg text{font:12px system-ui,sans-serif}"""


def _timeline(run: dict[str, Any]) -> str:
    width, left, lane = 960, 170, 26
    total = max(run["duration"], 1.0)
    lanes = len(run["faults"]) + len(run["probes"])
    height = 40 + lane * lanes

    def x(t: float) -> float:
        return float(left + (width - left - 10) * min(max(t, 0.0), total) / total)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'role="img" aria-label="timeline of run {run["run"]}">']
    for i in range(0, int(total) + 1, max(1, int(total // 10) or 1)):
        parts.append(f'<line x1="{x(i):.1f}" y1="20" x2="{x(i):.1f}" y2="{height - 10}" '
                     f'stroke="#eee"/><text x="{x(i):.1f}" y="14" text-anchor="middle">'
                     f'{i}s</text>')
    row = 0
    for fault in run["faults"]:
        y = 26 + lane * row
        row += 1
        label = html.escape(f"{fault['kind']} {fault['id'] or ''}")
        parts.append(f'<text x="4" y="{y + 14}">{label}</text>')
        if fault["applied_at"] is not None:
            end = fault["ended_at"] if fault["ended_at"] is not None else total
            begin = fault["started_at"] if fault["started_at"] is not None else \
                fault["applied_at"]
            # light while hostchaos was applying it, solid once applied
            parts.append(f'<rect x="{x(begin):.1f}" y="{y + 2}" '
                         f'width="{max(x(fault["applied_at"]) - x(begin), 1):.1f}" height="16" '
                         f'fill="#f3d19e"/>')
            parts.append(f'<rect x="{x(fault["applied_at"]):.1f}" y="{y + 2}" '
                         f'width="{max(x(end) - x(fault["applied_at"]), 2):.1f}" height="16" '
                         f'fill="#e8a33d"><title>{html.escape(fault["summary"])}</title></rect>')
    for probe in run["probes"]:
        y = 26 + lane * row
        row += 1
        parts.append(f'<text x="4" y="{y + 14}">probe {html.escape(probe["name"])}</text>')
        for t, ok, latency, detail in probe["samples"]:
            color = "#1a7f37" if ok else "#c62828"
            tip = html.escape(f"{t:.2f}s {'pass' if ok else 'FAIL'} "
                              f"{'' if latency is None else f'{latency:.1f} ms '}{detail}")
            parts.append(f'<rect x="{x(t):.1f}" y="{y + 4}" width="3" height="12" '
                         f'fill="{color}"><title>{tip}</title></rect>')
    parts.append("</svg>")
    return "".join(parts)


def html_page(report: dict[str, Any]) -> str:
    summary = report["summary"]
    out = ["<!doctype html><html><head><meta charset='utf-8'>",
           f"<title>hostchaos: {html.escape(report['scenario'])}</title>",
           f"<style>{_CSS}</style></head><body>",
           f"<h1>{html.escape(report['scenario'])}</h1>",
           f"<p>{html.escape(report['description'])}</p>",
           f"<p>{summary['runs']} run(s): {html.escape(_outcomes(summary['outcomes']))}. MTTR "
           f"<b>{_seconds(summary['mttr_s'])}</b>, recovery rate "
           f"<b>{summary['recovery_rate']:.2f}</b> ({summary['recovered']}/"
           f"{summary['detected']} detected fault/probe pairs recovered).</p>"]
    for run in report["runs"]:
        cls = "ok" if run["outcome"] == "recovered" else "bad"
        out.append(f"<h2>Run {run['run']} (seed {run['seed']}): "
                   f"<span class='{cls}'>{html.escape(run['outcome'])}</span></h2>")
        out.append(f"<p>{html.escape(run['reason'])}</p>")
        out.append(_timeline(run))
        out.append("<table><tr><th>probe</th><th>fault</th><th>time to detect</th>"
                   "<th>recovery time</th></tr>")
        for found in run["findings"]:
            recovery = (_seconds(found["recovery_time"]) if found["recovered"]
                        else ("not recovered" if found["detected"] else "-"))
            detect = (_seconds(found["time_to_detect"]) if found["detected"]
                      else "not detected")
            out.append(f"<tr><td>{html.escape(found['probe'])}</td>"
                       f"<td>{html.escape(found['kind'])} {html.escape(found['fault'] or '')}"
                       f"</td><td>{detect}</td><td>{recovery}</td></tr>")
        out.append("</table>")
    out.append("</body></html>")
    return "\n".join(out)
