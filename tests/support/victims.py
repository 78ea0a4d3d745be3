"""Victim processes for resource-fault tests, and measurements of what the kernel does to them.

A victim is ``python -c CODE`` started by the test; it answers one-line
commands on stdin with one line on stdout, so a test can ask it to fork, open
files or allocate while a fault is in force. Children it forks hold the read
end of a pipe whose write end only the victim has, so they exit as soon as the
victim dies: nothing outlives a test.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")

_PRELUDE = r"""
import ctypes, errno, os, resource, sys, threading, time
def name(n):
    ctypes.CDLL(None).prctl(15, n.encode(), 0, 0, 0)   # PR_SET_NAME
def reply(text):
    sys.stdout.write(text + "\n"); sys.stdout.flush()
"""

#: spins on the CPU in its main thread; three idle threads make it a multi-threaded process
BUSY = _PRELUDE + r"""
for _ in range(3):
    threading.Thread(target=time.sleep, args=(3600,), daemon=True).start()
reply("ready")
while True:
    pass
"""

#: answers: "alloc STEP_MIB TOTAL_MIB" -> "at N" lines (MiB allocated, touched) then "done";
#: "rss" -> its RSS in bytes
MEMORY = _PRELUDE + r"""
held = []
reply("ready")
for line in sys.stdin:
    cmd = line.split()
    if cmd[0] == "alloc":
        step, total = int(cmd[1]), int(cmd[2])
        done = 0
        while done < total:
            block = bytearray(step << 20)
            block[::4096] = b"\x01" * len(range(0, len(block), 4096))
            held.append(block)
            done += step
            reply(f"at {done} {time.monotonic():.4f}")
        reply("done")
"""

#: answers: "fork" -> "ok PID" or "err ERRNO-NAME"; "release" -> ends its children, "released"
FORKER = _PRELUDE + r"""
children = []
r, w = os.pipe()
reply("ready")
for line in sys.stdin:
    cmd = line.strip()
    if cmd == "fork":
        try:
            pid = os.fork()
        except OSError as exc:
            reply("err " + errno.errorcode[exc.errno])
            continue
        if pid == 0:
            os.close(w)
            os.read(r, 1)      # returns b"" once the victim closes w or dies
            os._exit(0)
        children.append(pid)
        reply(f"ok {pid}")
    elif cmd == "release":
        os.close(w)
        for pid in children:
            os.waitpid(pid, 0)
        children.clear()
        os.close(r)
        r, w = os.pipe()
        reply("released")
"""

#: answers: "fill N" -> opens /dev/null until N are open or an error:
#: "full ERRNO-NAME FDS-IN-USE" or "opened N FDS-IN-USE", then closes them; "limits" -> "soft hard"
FILES = _PRELUDE + r"""
if len(sys.argv) > 1:
    name(sys.argv[1])
reply("ready")
for line in sys.stdin:
    cmd = line.split()
    if cmd[0] == "fill":
        held = len(os.listdir("/proc/self/fd")) - 1   # minus listdir's own descriptor
        opened, err = [], None
        while len(opened) < int(cmd[1]):
            try:
                opened.append(os.open("/dev/null", os.O_RDONLY))
            except OSError as exc:
                err = errno.errorcode[exc.errno]
                break
        in_use = held + len(opened)
        for fd in opened:
            os.close(fd)
        reply(f"full {err} {in_use}" if err else f"opened {len(opened)} {in_use}")
    elif cmd[0] == "limits":
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        reply(f"{soft} {hard}")
"""


class Victim:
    """A victim process started by the test and always killed by it."""

    def __init__(self, code: str, *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", code, *args], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, bufsize=0)
        self.pid = self.proc.pid
        self._buffer = b""
        assert self.read(timeout=120) == "ready"

    def read(self, timeout: float = 30) -> str:
        """The victim's next line; "" once it has exited."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([fd], [], [], max(left, 0))
            if not ready:
                raise AssertionError(f"victim {self.pid} did not answer within {timeout} s")
            chunk = os.read(fd, 65536)
            if not chunk:
                line, self._buffer = self._buffer, b""
                return line.decode().strip()
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode().strip()

    def ask(self, line: str, timeout: float = 30) -> str:
        self.send(line)
        return self.read(timeout)

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((line + "\n").encode())

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass


@contextmanager
def victim(code: str, *args: str) -> Iterator[Victim]:
    started = Victim(code, *args)
    try:
        yield started
    finally:
        started.kill()


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime (fields 14, 15)


def cpu_share(pid: int, seconds: float = 3.0) -> float:
    """Percent of one CPU ``pid`` used over ``seconds`` of wall time (utime + stime)."""
    before, started = cpu_ticks(pid), time.monotonic()
    time.sleep(seconds)
    after, ended = cpu_ticks(pid), time.monotonic()
    return 100.0 * (after - before) / CLK_TCK / (ended - started)


def free_share(pid: int, *, windows: int = 3, seconds: float = 2.0) -> float:
    """The best of up to ``windows`` measurements of an *unlimited* process's CPU share.

    An unlimited busy loop can be pushed below 100% by anything else that runs
    for a moment (the rollback command itself, the warden exiting); a limit cannot
    be outrun. So "back to full speed" is judged on the best window, stopping at
    the first above 90%.
    """
    best = 0.0
    for _ in range(windows):
        best = max(best, cpu_share(pid, seconds))
        if best > 90:
            break
    return best


def cgroups_of(pid: int, tid: int | None = None) -> str:
    """/proc/PID/cgroup (or a thread's), as text, for before/after comparisons."""
    path = f"/proc/{pid}/task/{tid}/cgroup" if tid else f"/proc/{pid}/cgroup"
    return Path(path).read_text()


def thread_cgroups(pid: int) -> dict[int, str]:
    return {int(t): cgroups_of(pid, int(t)) for t in os.listdir(f"/proc/{pid}/task")}


def leftover_cgroups() -> list[str]:
    """Every hostchaos-* cgroup on the host: there must be none after a test."""
    from hostchaos.system.cgroups import Cgroups, iter_hostchaos_cgroups

    return [str(ref.dir) for ref in iter_hostchaos_cgroups(Cgroups())]


def nofile_of(pid: int) -> tuple[int, int]:
    import resource

    soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    return int(soft), int(hard)


@contextmanager
def sleepers(count: int) -> Iterator[list[int]]:
    """``count`` idle processes (sleep 600) of the test's own: their PIDs; killed afterwards."""
    started = [subprocess.Popen(["sleep", "600"]) for _ in range(count)]
    try:
        yield [p.pid for p in started]
    finally:
        for proc in started:
            proc.kill()
            proc.wait()
