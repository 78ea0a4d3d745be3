"""Processes that keep a network namespace alive, and what a fault's record says about it."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.support.cli import records
from tests.support.waiting import wait_for


def _same_namespace(pid: int, path: str) -> bool:
    try:
        mine, theirs = os.stat(f"/proc/{pid}/ns/net"), os.stat(path)
    except OSError:
        return False
    return (mine.st_dev, mine.st_ino) == (theirs.st_dev, theirs.st_ino)


@contextmanager
def process_in(netns: str) -> Iterator[subprocess.Popen[bytes]]:
    """A `sleep` inside the named namespace (it keeps the namespace alive); always killed."""
    proc = subprocess.Popen(["ip", "netns", "exec", netns, "sleep", "600"])
    try:
        wait_for(lambda: _same_namespace(proc.pid, f"/run/netns/{netns}"), timeout=10)
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def handle_of(state_dir: Path, fault_id: str) -> str | None:
    """The namespace handle the fault's record notes (None if it notes none)."""
    found = notes(state_dir, fault_id, "netns")
    return str(found[0]["handle"]) if found and found[0]["handle"] else None


def notes(state_dir: Path, fault_id: str, step: str) -> list[dict[str, Any]]:
    (record,) = [r for r in records(state_dir) if r["id"] == fault_id]
    return [n for n in record["undo"] if n["step"] == step]


def mount_points() -> set[str]:
    with open("/proc/self/mountinfo") as handle:
        return {line.split()[4] for line in handle}


def ifindex(netns: str, iface: str) -> int:
    out = subprocess.run(["ip", "-n", netns, "-o", "link", "show", "dev", iface],
                         capture_output=True, text=True, check=True).stdout
    return int(out.split(":", 1)[0])


def links(netns: str | int) -> str:
    """`ip -o link` of a named namespace or of the namespace of a PID (names and kinds)."""
    enter = (["nsenter", f"--net=/proc/{netns}/ns/net", "ip"] if isinstance(netns, int)
             else ["ip", "-n", netns])
    out = subprocess.run([*enter, "-o", "link"], capture_output=True, text=True,
                         check=True).stdout
    return "\n".join(line.split(":", 2)[1].split("@")[0].strip() for line in out.splitlines())
