"""The demo tour: every kind this host can run, shown biting a sandbox, then taken back out.

Each stop builds what it needs itself (two network namespaces joined by a
veth pair, a child process, a 32 MiB tmpfs, a child cgroup), measures it,
injects one fault through the normal engine (journal, deadline, warden),
measures again, rolls back, measures once more and checks the sandbox is as it
was, then removes the sandbox. A kind the host cannot run is named with the
reason and the fix. Nothing outside the sandboxes is touched.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hostchaos.engine import Engine
from hostchaos.faults.base import Spec
from hostchaos.sandbox import NetnsPair


@dataclass
class Stop:
    """One line of the tour: the kind, and what was measured before, during and after."""

    kind: str
    what: str
    before: str = ""
    during: str = ""
    after: str = ""
    restored: bool | None = None
    skipped: str = ""


class Tour:
    """Runs the stops against one engine; ``pair`` is made on first use."""

    def __init__(self, engine: Engine, echo: Callable[[str], None]) -> None:
        self.engine = engine
        self.echo = echo
        self._stack = contextlib.ExitStack()
        self._pair: NetnsPair | None = None

    def __enter__(self) -> Tour:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    @property
    def pair(self) -> NetnsPair:
        if self._pair is None:
            self._pair = self._stack.enter_context(NetnsPair(prefix="hc-tour"))
            self._pair.ping(count=3, interval=0.05)
        return self._pair

    def hold(self, spec: Spec, measure: Callable[[], str]) -> str:
        """Inject ``spec`` for at most 2 minutes, measure, roll back: what was measured."""
        record = self.engine.inject(spec, 120.0)
        try:
            return measure()
        finally:
            self.engine.rollback(record.id, "demo tour")


# -- processes the stops start --------------------------------------------------------------

_CHILD = r"""
import os, sys, time
sys.stdout.write("ready\n"); sys.stdout.flush()
held, kids, files = [], [], []
for line in sys.stdin:
    cmd, *args = line.split()
    try:
        if cmd == "spin":
            end = time.monotonic() + float(args[0])
            while time.monotonic() < end:
                pass
            out = "ok"
        elif cmd == "alloc":
            block = bytearray(int(args[0]) << 20)
            block[::4096] = b"x" * (len(block) // 4096)
            held.append(block)
            out = "ok"
        elif cmd == "fork":
            n = 0
            for _ in range(int(args[0])):
                try:
                    pid = os.fork()
                except OSError:
                    break
                if pid == 0:
                    time.sleep(30); os._exit(0)
                kids.append(pid); n += 1
            for pid in kids:
                os.kill(pid, 9); os.waitpid(pid, 0)
            kids.clear(); out = str(n)
        elif cmd == "open":
            n = 0
            try:
                for _ in range(int(args[0])):
                    files.append(open("/dev/null")); n += 1
            except OSError:
                pass
            for f in files:
                f.close()
            files.clear(); out = str(n)
        else:
            out = "?"
    except MemoryError:
        out = "MemoryError"
    sys.stdout.write(out + "\n"); sys.stdout.flush()
"""


class Child:
    """A Python child of the tour's that obeys one-line commands (spin, alloc, fork, open)."""

    def __init__(self, argv_prefix: list[str] | None = None) -> None:
        self.process = subprocess.Popen([*(argv_prefix or []), sys.executable, "-c", _CHILD],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        text=True)
        self.ask_raw()

    @property
    def pid(self) -> int:
        return self.process.pid

    def ask_raw(self, command: str | None = None) -> str:
        assert self.process.stdin and self.process.stdout
        if command is not None:
            self.process.stdin.write(command + "\n")
            self.process.stdin.flush()
        return self.process.stdout.readline().strip() or f"exited ({self.process.poll()})"

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


def cpu_share(child: Child, seconds: float = 1.0) -> float:
    from hostchaos.system import procs

    before, started = procs.cpu_ticks(child.pid) or 0, time.monotonic()
    child.ask_raw(f"spin {seconds}")
    used = ((procs.cpu_ticks(child.pid) or 0) - before) / os.sysconf("SC_CLK_TCK")
    return 100.0 * used / (time.monotonic() - started)


# -- the stops ------------------------------------------------------------------------------


def network_stop(kind: str, what: str, options: dict[str, Any],
                 show: Callable[[Any], str], **ping: Any) -> Callable[[Tour], Stop]:
    def run(tour: Tour) -> Stop:
        from hostchaos.faults.from_options import spec_from_options

        pair = tour.pair
        stop = Stop(kind, what)
        config = pair.tc_config()
        stop.before = show(pair.ping(**ping))
        spec = spec_from_options(kind, {"netns": pair.a, "iface": pair.iface_a, **options})
        stop.during = tour.hold(spec, lambda: show(pair.ping(**ping)))
        stop.after = show(pair.ping(**ping))
        stop.restored = pair.tc_config() == config
        return stop
    return run


def _rtt(result: Any) -> str:
    return f"rtt {result.rtt_avg_ms:.1f} ms" if result.rtt_avg_ms is not None else "no reply"


def _loss(result: Any) -> str:
    return f"{result.loss_percent:.0f}% lost"


def _spread(result: Any) -> str:
    if result.rtt_min_ms is None:
        return "no reply"
    return f"rtt {result.rtt_min_ms:.1f}..{result.rtt_max_ms:.1f} ms"


def _dups(result: Any) -> str:
    return f"{getattr(result, 'duplicates', 0)} duplicate replies of {result.sent}"


def cpu_stop(tour: Tour) -> Stop:
    from hostchaos.faults.from_options import spec_from_options

    stop = Stop("cpu", "a busy child process limited to 20% of a CPU")
    child = Child()
    try:
        cgroup = Path(f"/proc/{child.pid}/cgroup").read_text()
        stop.before = f"{cpu_share(child):.0f}% CPU"
        spec = spec_from_options("cpu", {"pid": child.pid, "limit": "20%"})
        stop.during = tour.hold(spec, lambda: f"{cpu_share(child, 2.0):.0f}% CPU")
        stop.after = f"{cpu_share(child):.0f}% CPU"
        stop.restored = Path(f"/proc/{child.pid}/cgroup").read_text() == cgroup
    finally:
        child.close()
    return stop


def memory_stop(tour: Tour) -> Stop:
    from hostchaos.faults.from_options import spec_from_options

    stop = Stop("memory", "a child holding 16 MiB asks for 128 MiB more, under a 64 MiB limit")
    child = Child()
    try:
        child.ask_raw("alloc 16")
        cgroup = Path(f"/proc/{child.pid}/cgroup").read_text()
        spec = spec_from_options("memory", {"pid": child.pid, "max": "64M"})
        stop.during = tour.hold(spec, lambda: "OOM-killed" if child.ask_raw("alloc 128")
                                .startswith("exited") else "allocated")
        stop.before = "allocated"
        stop.restored = child.process.poll() is not None or \
            Path(f"/proc/{child.pid}/cgroup").read_text() == cgroup
    finally:
        child.close()
    second = Child()
    try:
        stop.after = ("allocated" if second.ask_raw("alloc 128") == "ok" else "failed") + \
            " (a new child)"
    finally:
        second.close()
    return stop


def counted_stop(kind: str, what: str, options: dict[str, Any], command: str,
                 unit: str) -> Callable[[Tour], Stop]:
    def run(tour: Tour) -> Stop:
        from hostchaos.faults.from_options import spec_from_options
        from hostchaos.system import rlimits

        stop = Stop(kind, what)
        child = Child()
        try:
            limits = rlimits.get_nofile(child.pid)
            cgroup = Path(f"/proc/{child.pid}/cgroup").read_text()
            stop.before = f"{child.ask_raw(command)} {unit}"
            spec = spec_from_options(kind, {"pid": child.pid, **options})
            stop.during = tour.hold(spec, lambda: f"{child.ask_raw(command)} {unit}")
            stop.after = f"{child.ask_raw(command)} {unit}"
            stop.restored = (rlimits.get_nofile(child.pid) == limits and
                             Path(f"/proc/{child.pid}/cgroup").read_text() == cgroup)
        finally:
            child.close()
        return stop
    return run


@contextlib.contextmanager
def small_tmpfs() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="hostchaos-tour-") as scratch:
        point = Path(scratch)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m", "hostchaos-tour", scratch],
                       check=True, capture_output=True)
        try:
            yield point
        finally:
            subprocess.run(["umount", "--lazy", scratch], check=False, capture_output=True)


def disk_fill_stop(tour: Tour) -> Stop:
    from hostchaos.faults.from_options import spec_from_options

    stop = Stop("disk-fill", "a 32 MiB tmpfs filled to 90%")
    with small_tmpfs() as point:
        def free() -> str:
            st = os.statvfs(point)
            return f"{st.f_bavail * st.f_frsize / 2**20:.1f} MiB free"
        stop.before = free()
        start = os.statvfs(point).f_bavail
        stop.during = tour.hold(spec_from_options("disk-fill", {"path": str(point),
                                                                "percent": 90}), free)
        stop.after = free()
        stop.restored = os.statvfs(point).f_bavail == start
    return stop


def signal_stop(kind: str, what: str) -> Callable[[Tour], Stop]:
    def run(tour: Tour) -> Stop:
        from hostchaos.faults.from_options import spec_from_options
        from hostchaos.system import procs

        stop = Stop(kind, what)
        sleeper = subprocess.Popen(["sleep", "300"])
        try:
            time.sleep(0.1)

            def state() -> str:
                time.sleep(0.2)
                letter = procs.state_letter(sleeper.pid)
                return {"S": "sleeping", "T": "stopped", "Z": "killed", None: "killed"}.get(
                    letter, letter or "gone")
            stop.before = state()
            stop.during = tour.hold(spec_from_options(kind, {"pid": [sleeper.pid]}), state)
            stop.after = state()
            stop.restored = stop.after == ("killed" if kind == "kill" else "sleeping")
        finally:
            sleeper.kill()
            sleeper.wait()
        return stop
    return run


def freeze_stop(tour: Tour) -> Stop:
    from hostchaos.faults.from_options import spec_from_options
    from hostchaos.system import procs
    from hostchaos.system.cgroups import Cgroups

    stop = Stop("freeze", "a busy child in a cgroup of the tour's own, frozen")
    fs = Cgroups()
    hierarchy = fs.hierarchies[0] if fs.version == 2 else fs.require("freezer")
    ref = fs.ref(hierarchy, f"/hostchaos-tour-{os.getpid()}")
    fs.create(ref)
    child = Child()
    try:
        fs.move_process(child.pid, ref)
        child.process.stdin.write("spin 60\n")  # type: ignore[union-attr]
        child.process.stdin.flush()  # type: ignore[union-attr]

        def ticks() -> str:
            before = procs.cpu_ticks(child.pid) or 0
            time.sleep(0.5)
            return f"{((procs.cpu_ticks(child.pid) or 0) - before) * 2} CPU ticks/s"
        stop.before = ticks()
        stop.during = tour.hold(spec_from_options("freeze", {"cgroup": ref.path}), ticks)
        stop.after = ticks()
        stop.restored = stop.after != "0 CPU ticks/s"
    finally:
        child.close()
        with contextlib.suppress(Exception):
            fs.remove(ref)
    return stop


def clock_stop(tour: Tour) -> Stop:
    from hostchaos.faults.from_options import spec_from_options

    stop = Stop("clock", "a clock-ready child (hostchaos exec --clock-ready) moved 5 min ahead")
    printer = ("import select, sys, time\nfor _ in range(3000):\n"
               "    print(f'{time.time() - time.monotonic():.3f}', flush=True)\n"
               "    select.select([], [], [], 0.02)\n")
    with tempfile.NamedTemporaryFile("w+", prefix="hostchaos-tour-clock-") as out:
        child = subprocess.Popen([sys.executable, "-m", "hostchaos", "exec", "--clock-ready",
                                  "--", sys.executable, "-c", printer], stdout=out)
        try:
            def last() -> float:
                time.sleep(0.15)
                lines = Path(out.name).read_text().split()
                return float(lines[-1]) if lines else float("nan")
            deadline = time.monotonic() + 30
            while not Path(out.name).read_text().strip() and time.monotonic() < deadline:
                time.sleep(0.05)
            first = last()
            stop.before = f"{last() - first:+.1f} s"
            stop.during = tour.hold(spec_from_options("clock", {"pid": child.pid,
                                                                "offset": "+5m"}),
                                    lambda: f"{last() - first:+.1f} s")
            after = last() - first
            stop.after = f"{after:+.1f} s"
            stop.restored = abs(after) < 0.5
        finally:
            child.kill()
            child.wait()
    return stop


STOPS: dict[str, Callable[[Tour], Stop]] = {
    "latency": network_stop("latency", "ping across a veth, 100 ms added", {"ms": 100}, _rtt,
                            count=10, interval=0.05),
    "loss": network_stop("loss", "200 pings, 30% dropped", {"percent": 30}, _loss, count=200,
                         interval=0.005),
    "corrupt": network_stop("corrupt", "200 pings, 30% corrupted (dropped by checksum)",
                            {"percent": 30}, _loss, count=200, interval=0.005),
    "duplicate": network_stop("duplicate", "100 pings, 50% duplicated", {"percent": 50}, _dups,
                              count=100, interval=0.005),
    "reorder": network_stop("reorder", "40 pings, half overtake a 50 ms queue",
                            {"percent": 50, "ms": 50}, _spread, count=40, interval=0.01),
    "rate": network_stop("rate", "100 pings of 1400 bytes every 2 ms through 1 mbit/s",
                         {"rate": "1mbit"}, _rtt, count=100, interval=0.002, size=1400),
    "partition": network_stop("partition", "20 pings across a partition",
                              {"dst": NetnsPair.addr_b + "/32"}, _loss, count=20,
                              interval=0.01),
    "cpu": cpu_stop,
    "memory": memory_stop,
    "pids": counted_stop("pids", "a child forking 50 times, pids limit 10", {"max": 10},
                         "fork 50", "forks"),
    "nofile": counted_stop("nofile", "a child opening 200 files, RLIMIT_NOFILE 32",
                           {"soft": 32}, "open 200", "files"),
    "disk-fill": disk_fill_stop,
    "kill": signal_stop("kill", "a sleeping child, SIGKILL"),
    "stop": signal_stop("stop", "a sleeping child, SIGSTOP"),
    "freeze": freeze_stop,
    "clock": clock_stop,
}


def cannot_run(kind: str) -> str | None:
    """Why this host cannot run ``kind`` (its first missing need), or None."""
    from hostchaos import faults
    from hostchaos.system import capabilities

    for need in faults.fault_class(kind).needs:
        found = capabilities.check(need)
        if not found.ok:
            return f"{need}: {found.detail}" + (f" (fix: {found.fix})" if found.fix else "")
    return None
