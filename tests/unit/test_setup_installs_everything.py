"""Nothing the code or the tests run may be missing from scripts/setup's package table.

Once, podman had been installed by hand on the developer's machine: CI there was
green, and `make test` failed on a new machine. This test finds every program
the repository runs (the first word of every literal argument list in
hostchaos/, tests/ and bench/, commands at the start of a line in scripts/, and
the few programs something else runs for us) and checks that a package listed
in scripts/debian-packages provides it, or that a package every Debian machine
has (Essential, or of priority required) does. It also checks that the
table tells the truth: each listed program belongs to the listed package.
"""

from __future__ import annotations

import ast
import glob
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TABLE = REPO / "scripts" / "debian-packages"
PROGRAM = re.compile(r"[a-z][a-z0-9_+.-]*")
SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin",
                               "/sbin"])

#: what something other than a literal argv runs for us: program or file -> who needs it
INDIRECT = {
    "runc": "podman --runtime runc (tests/support/podman.py)",
    "busybox": "the test container image is /bin/busybox (tests/support/podman.py)",
    "qemu-system-x86_64": "virtme-ng's vng, started by scripts/vm-run",
    "modprobe": "the kernel's module autoloader, when a qdisc kind is first used",
    "/boot/vmlinuz-*-amd64": "scripts/vm-run boots it",
}
#: programs hostchaos asks only when the host has them (a runtime the user's containers run
#: on, systemd where it is init): never needed by a test, so never installed by setup
OPTIONAL = {"docker", "nerdctl", "crictl", "systemctl"}
#: the interpreter that runs setup and makes the venv: the one thing a new machine must bring
INTERPRETER = {"python", "python3"}
#: words that open a shell line without being programs
SHELL_WORDS = {"if", "then", "else", "elif", "fi", "for", "while", "do", "done", "case",
               "esac", "function", "return", "local", "export", "set", "exit", "echo",
               "printf", "read", "cd", "trap", "exec", "shift", "mapfile", "wait", "main",
               "usage", "step", "true", "false", "test", "eval", "source"}


def package_table() -> dict[str, str]:
    """program (or file pattern) -> the Debian package that provides it, from the table."""
    table = {}
    for line in TABLE.read_text().splitlines():
        words = line.partition("#")[0].split()
        if words:
            for provided in words[1:]:
                table[provided] = words[0]
    return table


def setup_packages() -> set[str]:
    """The packages scripts/setup installs: the table's first column, as setup reads it."""
    # setup: sed -e 's/#.*//' scripts/debian-packages | awk 'NF {print $1}'
    lines = (REPO / "scripts/debian-packages").read_text().splitlines()
    return {line.split("#", 1)[0].split()[0] for line in lines
            if line.split("#", 1)[0].split()}


def python_argv_words() -> dict[str, set[str]]:
    """Words of argument lists in the Python code: program -> files.

    An argument list is a list or tuple literal whose first element is a string
    that names a program on this machine; every string in it that names a
    program counts too (``ip netns exec NS ping ...`` runs ping).
    """
    words: dict[str, set[str]] = {}
    for top in ("hostchaos", "tests", "bench"):
        for path in sorted((REPO / top).rglob("*.py")):
            if path.resolve() == Path(__file__).resolve():
                continue  # this file names programs without running them
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if not isinstance(node, ast.List | ast.Tuple) or not node.elts:
                    continue
                strings = [e.value for e in node.elts
                           if isinstance(e, ast.Constant) and isinstance(e.value, str)]
                first = node.elts[0]
                if not (isinstance(first, ast.Constant) and isinstance(first.value, str)
                        and is_program(first.value)):
                    continue
                for word in strings:
                    if is_program(word):
                        words.setdefault(word, set()).add(str(path.relative_to(REPO)))
    return words


def is_program(word: str) -> bool:
    return bool(PROGRAM.fullmatch(word)) and (
        word in INDIRECT or word in OPTIONAL or word in package_table()
        or shutil.which(word, path=SEARCH_PATH) is not None)


def shell_commands() -> dict[str, set[str]]:
    """Words at command position in scripts/*: line starts and after | && || ; $( !."""
    found: dict[str, set[str]] = {}
    for path in sorted((REPO / "scripts").iterdir()):
        text = path.read_text(errors="replace")
        if not text.startswith("#!") or "sh" not in text.splitlines()[0]:
            continue
        for line in text.splitlines():
            code = line.partition(" #")[0].strip()
            if code.startswith("#"):
                continue
            for chunk in re.split(r"\|\||&&|[|;]|\$\(|^!|\bthen\b|\bdo\b|\belse\b", code):
                words = chunk.split()
                while words and (words[0] in ("exec", "!", "timeout", "-k") or
                                 re.fullmatch(r"\d+|[A-Z_]+=\S*", words[0])):
                    words.pop(0)
                if words and PROGRAM.fullmatch(words[0]) and words[0] not in SHELL_WORDS:
                    found.setdefault(words[0], set()).add(str(path.relative_to(REPO)))
    return found


def needed() -> dict[str, set[str]]:
    """Programs and files the repository needs, with where each is used."""
    out: dict[str, set[str]] = {}
    for source in (python_argv_words(), shell_commands()):
        for name, where in source.items():
            if name not in OPTIONAL | INTERPRETER and is_program(name):
                out.setdefault(name, set()).update(where)
    for name, why in INDIRECT.items():
        out.setdefault(name, set()).add(why)
    return out


def candidates(name: str) -> list[str]:
    """Paths that dpkg may know ``name`` by (a program on PATH, or a file pattern)."""
    if name.startswith("/"):
        return sorted(glob.glob(name))
    found = shutil.which(name, path=SEARCH_PATH)
    if found is None:
        return []
    paths = {found, os.path.realpath(found)}
    for path in list(paths):  # merged /usr: dpkg may list /bin/x for /usr/bin/x and back
        if path.startswith("/usr/"):
            paths.add(path[4:])
        else:
            paths.add("/usr" + path)
    return sorted(paths)


def owner(name: str) -> str | None:
    """The installed Debian package that owns ``name``, or None."""
    for path in candidates(name):
        result = subprocess.run(["dpkg-query", "-S", path], capture_output=True, text=True,
                                check=False)
        if result.returncode == 0:
            return result.stdout.split(":", 1)[0].split(",")[0].strip()
    return None


def on_every_debian(package: str) -> bool:
    """Essential, or of priority required: even a minimal debootstrap has it."""
    result = subprocess.run(["dpkg-query", "-W", "-f", "${Essential} ${Priority}", package],
                            capture_output=True, text=True, check=False)
    essential, _, priority = result.stdout.partition(" ")
    return essential == "yes" or priority == "required"


def from_pip(name: str) -> bool:
    """Installed into this venv (from pyproject.toml) rather than by the system."""
    found = shutil.which(name, path=SEARCH_PATH)
    return found is not None and Path(found).resolve().is_relative_to(Path(sys.prefix).resolve())


@pytest.fixture(scope="module")
def dpkg() -> None:
    if shutil.which("dpkg-query") is None:
        pytest.skip("not a Debian machine: dpkg-query is missing")


def test_setup_installs_every_package_in_the_table() -> None:
    assert setup_packages() == set(package_table().values())


def test_every_program_run_is_provided_by_a_package_setup_installs(dpkg: None) -> None:
    table = package_table()
    installs = setup_packages()
    problems = []
    for name, where in sorted(needed().items()):
        if name in table and table[name] in installs:
            continue
        package = owner(name)
        used = ", ".join(sorted(where))
        if package is None:
            if not from_pip(name):
                problems.append(f"{name} (used by {used}) is not provided by any package "
                                "scripts/debian-packages lists, and is not installed here")
        elif package not in installs and not on_every_debian(package):
            problems.append(f"{name} (used by {used}) comes from package {package}, which "
                            "scripts/debian-packages does not list: add it there")
    assert not problems, "\n".join(problems)


def depends(package: str) -> set[str]:
    """Packages ``package`` depends on directly (a metapackage's real package, say)."""
    result = subprocess.run(["dpkg-query", "-W", "-f", "${Depends}", package],
                            capture_output=True, text=True, check=False)
    return {alternative.split()[0] for clause in result.stdout.split(",")
            for alternative in clause.split("|") if alternative.strip()}


def test_the_table_names_the_package_that_really_provides_each_program(dpkg: None) -> None:
    wrong = []
    for name, package in sorted(package_table().items()):
        actual = owner(name)
        if actual is not None and actual != package and actual not in depends(package):
            wrong.append(f"{name}: the table says {package}, dpkg says {actual}")
    assert not wrong, "\n".join(wrong)


def test_the_scan_finds_what_it_must() -> None:
    """The scan itself works: it sees programs we know the code runs."""
    found = {**python_argv_words(), **shell_commands()}
    for program in ("ip", "tc", "podman", "nsenter", "ping"):
        assert program in found, program
