"""The docs: generated pages are current, no link is broken, and every `console` example
runs and prints what the page says (no shell: each `$` line is split into an argument list)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from hostchaos import cli_reference

REPO = Path(__file__).resolve().parents[2]
PAGES = sorted([REPO / "README.md", REPO / "vagrant/README.md", *REPO.glob("docs/**/*.md")])
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")
BIN = Path(sys.executable).parent


def test_the_cli_reference_is_current() -> None:
    page = (REPO / "docs/cli.md").read_text()
    assert page == cli_reference.page(), (
        "docs/cli.md is stale: run `python -m hostchaos.cli_reference docs/cli.md`")


def _anchors(page: Path) -> set[str]:
    text = page.read_text()
    out = set(re.findall(r'<a id="([^"]+)"', text))
    for heading in re.findall(r"^#+ (.+)$", text, re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        out.add(slug)
    return out


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_no_link_is_broken(page: Path) -> None:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)  # code is not links
    for match in LINK.finditer(text):
        target = match.group(1) or match.group(2)
        if re.match(r"[a-z]+:", target):
            continue  # an outside address: not checked here (no network)
        path, _, anchor = target.partition("#")
        where = (page.parent / path).resolve() if path else page
        assert where.exists(), f"{page.relative_to(REPO)}: link to missing {target}"
        if anchor and where.suffix == ".md":
            assert anchor in _anchors(where), f"{page.relative_to(REPO)}: no #{anchor} in {path}"


def _examples() -> list[tuple[str, str, list[str], int]]:
    out = []
    for page in PAGES:
        for block in re.findall(r"```console\n(.*?)```", page.read_text(), re.S):
            command: str | None = None
            expected: list[str] = []
            code = 0
            for line in [*block.splitlines(), "$ "]:
                if line.startswith("$ "):
                    if command:
                        out.append((str(page.relative_to(REPO)), command, expected, code))
                    command, expected, code = line[2:].strip(), [], 0
                elif line.startswith("[exit ") and line.endswith("]"):
                    code = int(line[6:-1])
                else:
                    expected.append(line)
    return out


EXAMPLES = _examples()


def test_the_docs_have_examples() -> None:
    assert len(EXAMPLES) >= 5


@pytest.mark.parametrize(("page", "command", "expected", "code"), EXAMPLES,
                         ids=[f"{e[0]}: {e[1][:50]}" for e in EXAMPLES])
def test_console_examples_print_what_the_docs_say(page: str, command: str,
                                                  expected: list[str], code: int) -> None:
    argv = shlex.split(command)
    assert argv[0] == "hostchaos", "console examples run hostchaos only"
    result = subprocess.run([str(BIN / "hostchaos"), *argv[1:]], cwd=REPO, capture_output=True,
                            text=True, timeout=60, check=False,
                            env={**os.environ, "COLUMNS": "100"})
    assert result.returncode == code, (command, result.stdout, result.stderr)
    seen = (result.stdout + result.stderr).splitlines()
    position = 0
    for want in expected:
        if want.strip() == "...":
            continue
        while position < len(seen) and seen[position].rstrip() != want.rstrip():
            position += 1
        assert position < len(seen), f"{page}: `{command}` did not print {want!r}:\n" + \
            "\n".join(seen)
        position += 1
