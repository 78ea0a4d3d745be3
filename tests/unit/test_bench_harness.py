"""`make bench`'s harness: the generated tables match the committed results; cold start stays lean.

The numbers themselves are benchmarks (bench/, docs/benchmarks.md), never timed here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run_tables(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "bench/tables.py", *args], cwd=REPO,
                          capture_output=True, text=True, check=False)


def test_the_doc_tables_match_the_committed_results() -> None:
    result = run_tables("--check")
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_generated_section_has_its_markers() -> None:
    text = (REPO / "docs" / "benchmarks.md").read_text()
    sys.path.insert(0, str(REPO))
    try:
        from bench.tables import SECTIONS
    finally:
        sys.path.remove(str(REPO))
    for name in SECTIONS:
        assert text.count(f"<!-- bench:{name} begin -->") == 1, name
        assert text.count(f"<!-- bench:{name} end -->") == 1, name


def test_a_stale_table_is_reported_and_an_unknown_shape_still_renders(tmp_path: Path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# B\n\nprose kept\n\n<!-- bench:scale begin -->\nold\n"
                   "<!-- bench:scale end -->\n\nmore prose\n")
    (results / "scale-host.json").write_text(json.dumps({
        "bench": "scale", "machine": {"tier": "host", "cpu": "X", "cores": 2, "kernel": "k",
                                      "python": "3", "date": "d"},
        "command": "python bench/scale.py", "host": "buildbox-7",
        "sizes": [{"faults": 1, "apply_s": 0.01},
                                                       {"faults": 10, "apply_s": 0.1}]}))
    args = ["--doc", str(doc), "--results", str(results)]
    assert run_tables("--check", *args).returncode == 1
    assert run_tables(*args).returncode == 0
    text = doc.read_text()
    assert "prose kept" in text and "more prose" in text and "old" not in text
    assert "| faults | apply_s |" in text and "| 10 | 0.10 |" in text
    assert "python bench/scale.py" in text and "kernel k" in text
    assert "buildbox-7" not in text  # no host names in the docs
    assert run_tables("--check", *args).returncode == 0


def test_help_imports_no_heavy_module() -> None:
    """A real `python -m hostchaos --help` process: what it imported, from its own sys.modules."""
    probe = (
        "import runpy, sys\n"
        "sys.argv = ['hostchaos', '--help']\n"
        "try:\n"
        "    runpy.run_module('hostchaos', run_name='__main__')\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('LOADED', sorted({m.split('.')[0] for m in sys.modules}), file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            check=True, cwd=REPO)
    assert "Usage: hostchaos" in result.stdout
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("LOADED ")]
    loaded = set(json.loads(line.removeprefix("LOADED ").replace("'", '"')))
    heavy = {"pyroute2", "starlette", "uvicorn", "psutil", "yaml", "prometheus_client",
             "cgroupspy", "anyio", "h11", "asyncio", "traceback"}
    assert loaded & heavy == set()
