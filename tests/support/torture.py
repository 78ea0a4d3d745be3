"""Torture (issue 15): kill -9 the CLI, the warden or the agent at random points, then check
that the sandbox is exactly as it was and that no record, process or mount is left.

One *lane* is a state directory with a sandbox of its own holding a target for every
kind it tortures: a network-namespace pair joined by veth (network kinds), sleeping
victims (cpu, memory, pids, freeze by ``--pid``; nofile; stop), a child cgroup in each
v1 hierarchy with a victim in it (the same kinds ``--cgroup``, in place), a small tmpfs
(disk-fill), a respawning process of a unique name (kill ``--interval``) and a
clock-ready printer started through ``hostchaos exec --clock-ready`` (clock). Lanes are
independent, so several run at once (threads) without touching each other's objects.

One *iteration* is planned from its own seed alone (:meth:`Plan.from_seed`): a kind, a
process to kill (the CLI running ``hostchaos inject ... --for D``; the CLI and the warden;
the warden alone; the agent serving the inject), a kill point (a random delay, or
"between undo note N and the change it protects", through the crash hook
``HOSTCHAOS_TEST_PAUSE_AFTER_NOTE``/``HOSTCHAOS_TEST_PAUSE_FILE`` of
:mod:`hostchaos.journal`), and what happens next (nothing, ``sweep``, ``list``,
``status``, ``rollback --all``, another inject). Then the deadline passes, ``sweep`` runs
until no record is open (at most :data:`SETTLE_SECONDS`), and the sandbox's snapshot must
equal the one taken before. A failure names the iteration's seed; ``HOSTCHAOS_TORTURE_REPLAY
=SEED`` replays that one iteration (the choices, not the machine's timing).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hostchaos.sandbox import NetnsPair, tc_configuration
from hostchaos.warden import holder
from tests.support.cli import open_records
from tests.support.clocks import PRINTER

REPO = Path(__file__).resolve().parents[2]

HOST_KINDS: tuple[str, ...] = ("rate", "cpu", "memory", "pids", "nofile", "disk-fill", "kill",
                               "stop", "freeze", "clock")
NETEM_KINDS: tuple[str, ...] = ("latency", "loss", "corrupt", "duplicate", "reorder",
                                "partition", "rate")
TARGETS: tuple[str, ...] = ("cli", "cli+warden", "warden", "agent")
#: an agent takes seconds to start on a loaded machine: fewer of those
TARGET_WEIGHTS = (35, 25, 25, 15)
AFTER: tuple[str, ...] = ("nothing", "sweep", "list", "status", "rollback-all", "inject")
#: most undo notes an inject of the kind writes (its crash hook is tried at 1..N)
#: (measured: netns, [ifb,] root, class, filters; cgroup or limit; fill, file; rlimit; ...)
NOTES = {"rate": 4, "latency": 4, "loss": 4, "corrupt": 4, "duplicate": 4, "reorder": 4,
         "partition": 4, "cpu": 1, "memory": 1, "pids": 1, "freeze": 1, "nofile": 1,
         "disk-fill": 2, "kill": 1, "stop": 1, "clock": 1}
#: after the deadline, how long sweeps may take to close every record before it is a leftover
SETTLE_SECONDS = 30.0
CGROUP_FILES = {"cpu": ("cpu.cfs_quota_us", "cpu.cfs_period_us"),
                "memory": ("memory.limit_in_bytes", "memory.soft_limit_in_bytes"),
                "pids": ("pids.max",), "freezer": ("freezer.state",)}
V1 = Path("/sys/fs/cgroup")

#: runs its argv[1] again and again; each child dies with it (PR_SET_PDEATHSIG)
RESPAWNER = """
import ctypes, signal, subprocess, sys
libc = ctypes.CDLL(None)
while True:
    subprocess.run([sys.argv[1], "3600"], preexec_fn=lambda: libc.prctl(1, signal.SIGKILL))
"""


# -- the plan -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Plan:
    """What one iteration does, drawn from its seed alone."""

    seed: int
    kind: str
    target: str          # which process is killed
    point: str           # "delay", "note" or "rollback" (the warden's, parked at ``stage``)
    delay: float         # seconds after the start (point "delay")
    note: int            # undo note to park after (point "note")
    seconds: float       # the fault's --for
    wait: bool           # the CLI stays in the foreground (--wait)
    in_place: bool       # cgroup kinds: --cgroup (in place) rather than --pid (moved)
    after: str           # the command run after the kill
    variant: int         # kind-specific choices (direction, values)
    stage: str = ""      # point "rollback": "before" or "after" the host is put back

    @classmethod
    def from_seed(cls, seed: int, kinds: tuple[str, ...],
                  targets: tuple[str, ...] = TARGETS) -> Plan:
        rng = random.Random(seed)
        kind = rng.choice(kinds)
        target = rng.choices(targets, weights=[TARGET_WEIGHTS[TARGETS.index(t)]
                                               for t in targets])[0]
        point = rng.choice(("delay", "rollback") if target == "warden" else ("delay", "note"))
        seconds = round(rng.uniform(0.3, 1.2), 2)
        return cls(seed=seed, kind=kind, target=target, point=point,
                   stage=rng.choice(("before", "after")) if point == "rollback" else "",
                   delay=round(rng.uniform(0.0, seconds + 0.3), 3),
                   note=rng.randint(1, NOTES[kind]), seconds=seconds,
                   wait=target.startswith("cli") and rng.random() < 0.3,
                   in_place=rng.random() < 0.5, after=rng.choice(AFTER),
                   variant=rng.randrange(1 << 30))

    def describe(self) -> str:
        where = {"note": f"after note {self.note}",
                 "rollback": f"in its rollback ({self.stage} the host is put back)"
                 }.get(self.point, f"at {self.delay}s")
        return (f"seed {self.seed}: {self.kind} --for {self.seconds}s"
                f"{' --wait' if self.wait else ''}{' in place' if self.in_place else ''}, "
                f"kill {self.target} {where}, then {self.after}")


@dataclass
class Outcome:
    """What an iteration saw: whether the kill landed where planned, and any leftover."""

    plan: Plan
    #: "note N" (parked and killed there), "delay", "exited" (the target was gone already),
    #: "note not reached" (the inject wrote fewer notes)
    hit: str = ""
    killed: list[str] = field(default_factory=list)
    swept: int = 0
    leftovers: list[str] = field(default_factory=list)
    #: seconds spent in each phase (snapshot, inject+kill, after, settle, check)
    phases: dict[str, float] = field(default_factory=dict)

    def lap(self, phase: str, since: float) -> float:
        now = time.monotonic()
        self.phases[phase] = round(now - since, 2)
        return now


@dataclass
class Report:
    """The sum of many iterations (what the docs record)."""

    iterations: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    targets: Counter[str] = field(default_factory=Counter)
    hits: Counter[str] = field(default_factory=Counter)
    after: Counter[str] = field(default_factory=Counter)
    swept_by_final_sweep: int = 0
    failures: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, outcome: Outcome) -> None:
        with self.lock:
            self.iterations += 1
            self.kinds[outcome.plan.kind] += 1
            self.targets[outcome.plan.target] += 1
            self.hits[outcome.hit] += 1
            self.after[outcome.plan.after] += 1
            self.swept_by_final_sweep += outcome.swept
            if outcome.leftovers:
                self.failures.append(f"{outcome.plan.describe()}: {'; '.join(outcome.leftovers)}"
                                     f" (replay: HOSTCHAOS_TORTURE_REPLAY={outcome.plan.seed})")

    def to_dict(self) -> dict[str, Any]:
        return {"iterations": self.iterations, "leftovers": len(self.failures),
                "kinds": dict(sorted(self.kinds.items())),
                "targets": dict(sorted(self.targets.items())),
                "kill_points": dict(sorted(self.hits.items())),
                "after": dict(sorted(self.after.items())),
                "rolled_back_by_the_final_sweep": self.swept_by_final_sweep,
                "failures": self.failures}


def print_line(outcome: Outcome) -> None:
    """One line per iteration (progress for -s and for bench/torture.py)."""
    status = "LEFTOVER " + "; ".join(outcome.leftovers) if outcome.leftovers else "ok"
    print(f"{outcome.plan.describe()} -> {outcome.hit}; killed {outcome.killed or 'nothing'}; "
          f"{status}", flush=True)


def iteration_seed(seed: int, number: int) -> int:
    return seed * 1_000_000 + number


# -- small helpers ------------------------------------------------------------------------

def _state_letter(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def _run_state(pid: int) -> str | None:
    """The state that matters: "awake" for running or sleeping (a victim continued a
    moment ago may still be running on its way back to sleep), else the letter (T
    stopped, D a frozen cgroup's task on v1, Z ...)."""
    letter = _state_letter(pid)
    return "awake" if letter in ("R", "S") else letter


def _alive(pid: int) -> bool:
    return _state_letter(pid) not in (None, "Z", "X")


def _kill(pid: int) -> bool:
    """SIGKILL ``pid`` and wait until it is gone (or a zombie); whether it was alive."""
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.005)
    return True


def _wait_until(predicate: Any, timeout: float, step: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(step)
    return True


def _mounts_below(path: Path) -> list[str]:
    with open("/proc/self/mountinfo") as handle:
        points = [line.split()[4] for line in handle]
    return sorted(p for p in points if p == str(path) or p.startswith(f"{path}/"))


def _links(netns: str) -> str:
    out = subprocess.run(["ip", "-n", netns, "-o", "link"], capture_output=True, text=True,
                         check=True).stdout
    return "\n".join(line.split(":", 2)[1].split("@")[0].strip() for line in out.splitlines())


# -- one lane -----------------------------------------------------------------------------

class Lane:
    """A state directory and the sandbox it tortures; see the module docstring."""

    def __init__(self, root: Path, number: int, kinds: tuple[str, ...],
                 agent_socket_dir: Path | None = None) -> None:
        self.root = root
        self.number = number
        self.kinds = kinds
        self.state_dir = root / "state"
        self.run_dir = root / "run"
        self.socket = (agent_socket_dir or root) / f"agent{number}.sock"
        self.env = {**os.environ, "HOSTCHAOS_STATE_DIR": str(self.state_dir),
                    "HOSTCHAOS_RUN_DIR": str(self.run_dir),
                    "HOSTCHAOS_CONFIG": str(root / "no-config.toml"),
                    "HOSTCHAOS_SOCKET": str(root / "no-agent" / "hostchaos.sock")}
        self._stack = contextlib.ExitStack()
        self.pair: NetnsPair | None = None
        self.victims: dict[str, subprocess.Popen[bytes]] = {}
        self.cgroups: dict[str, Path] = {}
        self.fill_dir: Path | None = None
        self.respawner: subprocess.Popen[bytes] | None = None
        self.respawn_name = ""
        self.clock: subprocess.Popen[bytes] | None = None
        self.clock_out = root / "clock.out"
        self.clock_base = 0.0
        #: names of the ended records already checked
        self.fault_ids: set[str] = set()
        self.first: dict[str, Any] = {}

    # -- setting up and taking down ------------------------------------------------------
    def __enter__(self) -> Lane:
        try:
            self._create()
            self.first = self.snapshot()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._cli("rollback", "--all")
        self._stop_warden()
        self._stack.close()

    def _create(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.state_dir.mkdir(mode=0o700, exist_ok=True)
        kinds = set(self.kinds)
        if kinds & (set(NETEM_KINDS) | {"rate"}):
            self.pair = self._stack.enter_context(NetnsPair(prefix=f"hc-tt{self.number}"))
        for kind in ("cpu", "memory", "pids", "freeze", "nofile", "stop"):
            if kind in kinds:
                self.victims[kind] = self._process(["sleep", "3600"])
        if kinds & {"cpu", "memory", "pids", "freeze"}:
            self._make_cgroups()
        if "disk-fill" in kinds:
            self._make_fill_fs()
        if "kill" in kinds:
            self._make_respawner()
        if "clock" in kinds:
            self._make_clock_victim()

    def _process(self, argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(argv, **kwargs)

        def end() -> None:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGCONT)
                proc.kill()
            proc.wait()
        self._stack.callback(end)
        return proc

    def _make_cgroups(self) -> None:
        name = f"hc-torture-{os.getpid()}-{self.number}"
        inside = self._process(["sleep", "3600"])
        self.victims["in-cgroup"] = inside
        for controller in CGROUP_FILES:
            path = V1 / controller / name
            path.mkdir()
            self.cgroups[controller] = path
            self._stack.callback(self._remove_cgroup, path)
            (path / "cgroup.procs").write_text(str(inside.pid))

    @staticmethod
    def _remove_cgroup(path: Path) -> None:
        with contextlib.suppress(OSError):
            if path.name.startswith("hc-torture-") and (path / "freezer.state").exists():
                (path / "freezer.state").write_text("THAWED")
        for _ in range(100):
            try:
                for pid in (path / "cgroup.procs").read_text().split():
                    with contextlib.suppress(OSError):
                        (path.parent / "cgroup.procs").write_text(pid)
                path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.05)

    def _make_fill_fs(self) -> None:
        point = self.root / "fill"
        point.mkdir(exist_ok=True)
        source = f"hc-torture{os.getpid()}-{self.number}"  # unmounted by this name: pytest
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", source, str(point)],  # may
                       check=True)  # have moved a failed test's directory meanwhile
        self._stack.callback(subprocess.run, ["umount", "--lazy", source], check=False)
        (point / "data").write_bytes(b"x" * 4096)  # something of the sandbox's own
        self.fill_dir = point

    def _make_respawner(self) -> None:
        self.respawn_name = f"hctk{os.getpid() % 10000}x{self.number}"
        binary = self.root / self.respawn_name
        shutil.copy("/bin/sleep", binary)
        self.respawner = self._process([sys.executable, "-c", RESPAWNER, str(binary)])
        _wait_until(lambda: self._respawned() is not None, 10)

    def _respawned(self) -> int | None:
        """The respawner's current child (the kill fault's target), if any."""
        assert self.respawner is not None
        try:
            children = Path(f"/proc/{self.respawner.pid}/task/{self.respawner.pid}/children"
                            ).read_text().split()
        except OSError:
            return None
        return int(children[0]) if children else None

    def _make_clock_victim(self) -> None:
        argv = [sys.executable, "-m", "hostchaos", "exec", "--clock-ready", "--",
                "python3", "-c", PRINTER, "0.02", "1000000"]
        sink = open(self.clock_out, "wb")  # the printer holds it; closed at the end
        self._stack.callback(sink.close)
        # runs after the printer is killed and reaped (callbacks run last-in first-out)
        self._stack.callback(self._remove_clock_shared_memory)
        self.clock = self._process(argv, stdout=sink, stderr=subprocess.DEVNULL, env=self.env,
                                   cwd=REPO)
        if not _wait_until(lambda: self._clock_sample(0.0) is not None, 30, 0.05):
            raise AssertionError("the clock-ready victim printed nothing within 30 s")
        sample = self._clock_sample(0.0)
        assert sample is not None
        self.clock_base = sample

    def _remove_clock_shared_memory(self) -> None:
        """libfaketime's /dev/shm objects of the printer's process tree (sweep's job otherwise)."""
        from hostchaos.system.faketime import remove_shared_memory

        if self.clock is not None:
            remove_shared_memory(self.clock.pid)

    def _clock_sample(self, since: float) -> float | None:
        """wall - monotonic of the victim's last sample taken after monotonic ``since``."""
        try:
            with open(self.clock_out, "rb") as handle:
                handle.seek(0, os.SEEK_END)
                size = handle.tell()
                handle.seek(max(size - 512, 0))
                lines = handle.read().decode(errors="replace").splitlines()
        except OSError:
            return None
        for line in reversed(lines[1:] if len(lines) > 1 else lines):
            parts = line.split()
            if len(parts) == 2:
                with contextlib.suppress(ValueError):
                    wall, mono = float(parts[0]), float(parts[1])
                    return wall - mono if mono > since else None
        return None

    # -- what the sandbox looks like -----------------------------------------------------
    def snapshot(self, *, network: bool = True) -> dict[str, Any]:
        """Every observable the faults change, in a form that compares equal when unchanged.

        ``network=False`` leaves out the traffic-control dumps (a dozen `tc` runs): an
        iteration of a kind that is not a network one compares the rest, and the lane's
        last snapshot compares everything with its first.
        """
        snap: dict[str, Any] = {}
        if self.pair is not None and network:
            for side, ns, iface in (("a", self.pair.a, self.pair.iface_a),
                                    ("b", self.pair.b, self.pair.iface_b)):
                snap[f"tc {side}"] = tc_configuration(ns, iface)
                snap[f"links {side}"] = _links(ns)
        for name, proc in self.victims.items():
            pid = proc.pid
            try:
                snap[f"{name} victim"] = {
                    "state": _run_state(pid),
                    "cgroup": Path(f"/proc/{pid}/cgroup").read_text(),
                    "limits": Path(f"/proc/{pid}/limits").read_text()}
            except OSError as exc:
                snap[f"{name} victim"] = f"gone ({exc.strerror})"
        for controller, path in self.cgroups.items():
            for file in CGROUP_FILES[controller]:
                snap[f"cgroup {controller}/{file}"] = (path / file).read_text().strip()
            snap[f"cgroup {controller} members"] = sorted(
                (path / "cgroup.procs").read_text().split())
            snap[f"cgroup {controller} children"] = sorted(
                p.name for p in path.iterdir() if p.is_dir())
        if self.fill_dir is not None:
            fd = os.open(self.fill_dir, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            st = os.statvfs(self.fill_dir)
            snap["fill space"] = (st.f_bfree, st.f_bavail, st.f_ffree)
            snap["fill files"] = sorted(os.listdir(self.fill_dir))
        if self.respawner is not None:
            snap["respawner"] = _run_state(self.respawner.pid)
        if self.clock is not None:
            now = time.monotonic()
            _wait_until(lambda: self._clock_sample(now) is not None, 10)
            offset = self._clock_sample(now)
            snap["clock"] = ("as before" if offset is not None
                             and abs(offset - self.clock_base) < 0.2
                             else f"moved by {offset and offset - self.clock_base}")
        return snap

    def leftovers(self, *, everywhere: bool = False) -> list[str]:
        """What the journal and the host keep of this lane's faults (must be nothing).

        The cgroups checked are those the faults ended since the last call noted;
        ``everywhere`` walks every hierarchy for a hostchaos cgroup of this lane's faults.
        """
        from hostchaos.journal import Journal

        found = []
        journal = Journal(self.state_dir)
        if journal.has_open_records():
            still = open_records(self.state_dir)
            found.append("open records: " + ", ".join(f"{r['id']} {r['state']}" for r in still))
        if journal.stale_temp_files():
            found.append(f"temporary files: {journal.stale_temp_files()}")
        ended = set(journal.record_names(ended=True))
        for name in sorted(ended - self.fault_ids):
            with contextlib.suppress(OSError, ValueError):
                record = json.loads((journal.ended_dir / name).read_text())
                for note in record["undo"]:
                    if note["step"] == "cgroup" and isinstance(note.get("cgroup"), dict):
                        made = Path(note["cgroup"]["mount"]) / note["cgroup"]["path"].lstrip("/")
                        if made.exists():
                            found.append(f"cgroup {made} of {record['id']}")
        self.fault_ids |= ended
        if everywhere:
            from tests.support.victims import leftover_cgroups

            ids = {n.removesuffix(".json") for n in self.fault_ids}
            ours = [c for c in leftover_cgroups() if any(i in c for i in ids)]
            if ours:
                found.append(f"hostchaos cgroups: {ours}")
        mounts = _mounts_below(self.state_dir)
        if mounts:
            found.append(f"mounts: {mounts}")
        strays = self.hostchaos_processes(allow_warden=True)
        if strays:
            found.append(f"hostchaos processes: {strays}")
        return found

    def hostchaos_processes(self, *, allow_warden: bool) -> list[str]:
        """hostchaos processes serving this lane's state directory, but for its wardens if
        allowed: one that holds the lock, or one still starting that a killed command
        spawned (under load it can take longer than the iteration; it leaves by itself
        once it finds nothing open, which :meth:`finish` checks)."""
        warden = holder(self.state_dir) if allow_warden else None
        mine = str(self.state_dir)
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == os.getpid():
                continue
            try:
                argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
                if not any(b"hostchaos" in a for a in argv):
                    continue
                environ = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if not (f"HOSTCHAOS_STATE_DIR={mine}".encode() in environ
                    or mine.encode() in argv):
                continue
            if warden is not None and int(entry) == warden.pid:
                continue
            if allow_warden and b"hostchaos.warden" in argv:
                continue
            if not _alive(int(entry)):
                continue
            found.append(f"{entry} {b' '.join(argv).decode(errors='replace').strip()}")
        return found

    # -- the commands --------------------------------------------------------------------
    def _cli(self, *args: str, env: dict[str, str] | None = None,
             timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "hostchaos", *args], capture_output=True,
                              text=True, env={**self.env, **(env or {})}, cwd=REPO,
                              timeout=timeout, check=False)

    def inject_args(self, plan: Plan) -> list[str]:
        rng = random.Random(plan.variant)
        kind = plan.kind
        if kind in NETEM_KINDS:
            assert self.pair is not None
            where = ["--netns", self.pair.a, "--iface", self.pair.iface_a,
                     "--direction", rng.choice(("egress", "ingress", "both"))]
            if rng.random() < 0.5:
                where += ["--dst", rng.choice((f"{self.pair.addr_b}/32",
                                                f"{self.pair.addr6_b}/128"))]
            values = {"rate": ["--rate", rng.choice(("1mbit", "10mbit", "500kbit"))],
                      "latency": ["--ms", str(rng.choice((20, 100)))],
                      "loss": ["--percent", str(rng.choice((10, 50)))],
                      "corrupt": ["--percent", "5"], "duplicate": ["--percent", "5"],
                      "reorder": ["--percent", "25", "--ms", "10"], "partition": []}[kind]
            return [kind, *where, *values]
        if kind in ("cpu", "memory", "pids", "freeze"):
            target = (["--cgroup", "/" + self.cgroups["cpu"].name]
                      if plan.in_place or kind == "freeze"  # freeze takes whole cgroups
                      else ["--pid", str(self.victims[kind].pid)])
            values = {"cpu": ["--limit", rng.choice(("20%", "50%"))],
                      "memory": ["--max", rng.choice(("64M", "200M"))],
                      "pids": ["--max", rng.choice(("5", "50"))], "freeze": []}[kind]
            return [kind, *target, *values]
        if kind == "nofile":
            return ["nofile", "--pid", str(self.victims["nofile"].pid), "--soft",
                    rng.choice(("64", "128"))]
        if kind == "stop":
            return ["stop", "--pid", str(self.victims["stop"].pid)]
        if kind == "disk-fill":
            assert self.fill_dir is not None
            return ["disk-fill", "--path", str(self.fill_dir), "--size",
                    rng.choice(("2M", "8M"))]
        if kind == "kill":
            return [kind, "--name", self.respawn_name, "--interval", "0.2s"]
        if kind == "clock":
            assert self.clock is not None
            change = rng.choice((["--offset", "+5m"], ["--offset", "-90s"], ["--rate", "2"]))
            return ["clock", "--pid", str(self.clock.pid), *change]
        raise ValueError(f"no sandbox for kind {kind}")

    def _stop_warden(self) -> None:
        ref = holder(self.state_dir)
        if ref is not None:
            _kill(ref.pid)

    # -- one iteration -------------------------------------------------------------------
    def iterate(self, plan: Plan) -> Outcome:
        outcome = Outcome(plan)
        lap = time.monotonic()
        network = plan.kind in NETEM_KINDS
        before = self.snapshot(network=network)
        lap = outcome.lap("snapshot", lap)
        marker = self.root / f"paused-{plan.seed}"
        pause = ({"HOSTCHAOS_TEST_PAUSE_AFTER_NOTE": str(plan.note),
                  "HOSTCHAOS_TEST_PAUSE_FILE": str(marker)} if plan.point == "note" else
                 {"HOSTCHAOS_TEST_PAUSE_IN_ROLLBACK": plan.stage,
                  "HOSTCHAOS_TEST_PAUSE_FILE": str(marker)} if plan.point == "rollback" else {})
        if plan.point == "rollback":
            self._stop_warden()  # the inject starts a warden of its own, with the hook
        argv = ["inject", *self.inject_args(plan), "--for", f"{plan.seconds}s", "--json",
                *(["--wait"] if plan.wait else [])]
        agent = None
        env = dict(pause)
        if plan.target == "agent":
            from tests.support.agent import start_agent

            self.socket.unlink(missing_ok=True)
            agent = start_agent(self.state_dir, self.socket,
                                env={**self.env, "HOSTCHAOS_SOCKET": str(self.socket), **pause})
            env = {"HOSTCHAOS_SOCKET": str(self.socket)}
        started = time.monotonic()
        cli = subprocess.Popen([sys.executable, "-m", "hostchaos", *argv], cwd=REPO,
                               env={**self.env, **env}, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
        try:
            self._kill_at_point(plan, outcome, cli, agent, marker, started)
        finally:
            try:  # a client of a killed agent, or a CLI that outlived its kill point, ends now
                cli.wait(timeout=plan.seconds + 60)
            except subprocess.TimeoutExpired:
                outcome.leftovers.append("the inject command did not end")
                cli.kill()
                cli.wait()
            if agent is not None:
                if agent.poll() is None:
                    agent.kill()
                    outcome.killed.append("agent (at rest)")
                agent.wait()
        lap = outcome.lap("inject+kill", lap)
        self._after(plan)
        lap = outcome.lap("after", lap)
        self._settle(plan, outcome, started)
        lap = outcome.lap("settle", lap)
        if plan.point in ("note", "rollback"):
            self._stop_warden()  # it inherited the crash hook: not for the next iteration
        after = self.snapshot(network=network)
        changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
        for key in changed:
            outcome.leftovers.append(f"{key}: {before.get(key)!r} -> {after.get(key)!r}")
        if plan.kind == "kill":
            outcome.leftovers += self._kill_loop_left()
        outcome.leftovers += self.leftovers()
        outcome.lap("check", lap)
        with contextlib.suppress(FileNotFoundError):
            marker.unlink()
        return outcome

    def _kill_at_point(self, plan: Plan, outcome: Outcome, cli: subprocess.Popen[bytes],
                       agent: subprocess.Popen[bytes] | None, marker: Path,
                       started: float) -> None:
        if plan.point == "note":
            reached = _wait_until(lambda: marker.exists() or cli.poll() is not None, 60)
            if reached and not marker.exists():  # the CLI ended: wait for a paused warden too
                _wait_until(marker.exists, 0.3)
            if not marker.exists():
                outcome.hit = "note not reached"
                return
            pid = int(_wait_for_text(marker))
            who = ("agent" if agent is not None and pid == agent.pid else
                   "cli" if pid == cli.pid else "warden")
            outcome.hit = f"{who} parked after note {plan.note}"
            _kill(pid)
            outcome.killed.append(who)
            if plan.target == "cli+warden":
                self._kill_warden(outcome)
            return
        if plan.point == "rollback":  # the warden parks at the deadline
            if not _wait_until(marker.exists, plan.seconds + 30, 0.02):
                outcome.hit = "rollback not reached"
                self._stop_warden()  # a slow warden must not park later, holding the fault
                return
            pid = int(_wait_for_text(marker))
            outcome.hit = f"warden parked {plan.stage} putting the host back"
            if pid == cli.pid:
                outcome.hit = f"cli parked {plan.stage} putting the host back"
            _kill(pid)
            outcome.killed.append("warden" if pid != cli.pid else "cli")
            return
        if plan.target == "warden":  # its delay counts from the end of the inject
            with contextlib.suppress(subprocess.TimeoutExpired):
                cli.wait(timeout=120)
            started = time.monotonic()
        time.sleep(max(0.0, started + plan.delay - time.monotonic()))
        outcome.hit = "delay"
        if plan.target in ("cli", "cli+warden"):
            if cli.poll() is None and _kill(cli.pid):
                outcome.killed.append("cli")
            else:
                outcome.hit = "delay, cli already exited"
            if plan.target == "cli+warden":
                self._kill_warden(outcome)
        elif plan.target == "warden":
            if not self._kill_warden(outcome):
                outcome.hit = "delay, no warden"
        elif agent is not None:
            _kill(agent.pid)
            outcome.killed.append("agent")

    def _kill_warden(self, outcome: Outcome) -> bool:
        ref = holder(self.state_dir)
        if ref is None or not _kill(ref.pid):
            return False
        outcome.killed.append("warden")
        return True

    def _after(self, plan: Plan) -> None:
        some = next((r["id"] for r in open_records(self.state_dir)), "hc-nofile-00000000")
        if plan.after == "sweep":
            self._cli("sweep")
        elif plan.after == "list":
            self._cli("list")
        elif plan.after == "status":
            self._cli("status", some)
        elif plan.after == "rollback-all":
            self._cli("rollback", "--all")
        elif plan.after == "inject":  # the same kind again: a conflict, or a second fault
            self._cli("inject", *self.inject_args(plan), "--for", f"{plan.seconds}s")

    def _settle(self, plan: Plan, outcome: Outcome, started: float) -> None:
        """Let the deadlines pass, then sweep until no record is open (or time is up).

        A living warden ends what it guards on time, so `sweep` runs only for what is
        still open a moment after the deadline (a killed warden nobody revived) or for
        a temporary file a killed writer left.
        """
        from hostchaos.journal import Journal

        journal = Journal(self.state_dir)
        due = started + plan.seconds * (2 if plan.after == "inject" else 1) + 0.2
        time.sleep(max(0.0, due - time.monotonic()))
        _wait_until(lambda: not journal.has_open_records(), 2.0, 0.05)
        give_up = time.monotonic() + SETTLE_SECONDS
        while journal.has_open_records() or journal.stale_temp_files():
            result = self._cli("sweep", "--json")
            with contextlib.suppress(ValueError, KeyError):
                outcome.swept += len(json.loads(result.stdout)["rolled_back"])
            if time.monotonic() > give_up:
                return
            _wait_until(lambda: not journal.has_open_records(), 0.5, 0.05)

    def _kill_loop_left(self) -> list[str]:
        """No kill loop outlives its fault: the respawner's child lives on."""
        child = self._respawned()
        if child is None:
            _wait_until(lambda: self._respawned() is not None, 5)
            child = self._respawned()
        time.sleep(0.5)  # more than two of the fault's intervals
        if child is None or self._respawned() != child:
            return [f"processes named {self.respawn_name} are still being killed"]
        return []

    def finish(self) -> list[str]:
        """At the end: everything as at the start (network included), no hostchaos cgroup of
        the lane anywhere, and the on-demand warden gone by itself once nothing is open."""
        found = self.leftovers(everywhere=True)
        now = self.snapshot()
        found += [f"{key}: {self.first.get(key)!r} -> {now.get(key)!r}"
                  for key in sorted(set(now) | set(self.first))
                  if self.first.get(key) != now.get(key)]
        if not _wait_until(lambda: not self.hostchaos_processes(allow_warden=False), 30, 0.1):
            found.append(f"hostchaos processes: {self.hostchaos_processes(allow_warden=False)}")
        return found


def _wait_for_text(path: Path) -> str:
    _wait_until(lambda: path.exists() and path.read_text().strip() != "", 5)
    return path.read_text().strip()


# -- many iterations ----------------------------------------------------------------------

def run(root: Path, *, iterations: int, seed: int, kinds: tuple[str, ...], lanes: int = 4,
        targets: tuple[str, ...] = TARGETS, replay: int | None = None,
        progress: Any = None, stop_at: float | None = None) -> Report:
    """``iterations`` seeded iterations spread over ``lanes`` independent lanes.

    Iteration ``n`` uses seed :func:`iteration_seed` (seed, n) and always runs in lane
    ``n % lanes``; with ``replay`` only that one iteration runs, in one lane. With
    ``stop_at`` (a time.monotonic() value) no iteration starts after it: the report
    counts those that ran.
    """
    report = Report()
    numbers = [None] if replay is not None else list(range(iterations))
    lanes = 1 if replay is not None else max(1, min(lanes, iterations))

    def lane_job(lane_no: int) -> None:
        with Lane(root / f"lane{lane_no}", lane_no, kinds) as lane:
            for number in numbers[lane_no::lanes]:
                if stop_at is not None and time.monotonic() > stop_at:
                    break
                it_seed = replay if number is None else iteration_seed(seed, number)
                assert it_seed is not None
                outcome = lane.iterate(Plan.from_seed(it_seed, kinds, targets))
                report.add(outcome)
                if progress is not None:
                    progress(outcome)
            for problem in lane.finish():
                with report.lock:
                    report.failures.append(f"lane {lane_no}: {problem}")

    errors: list[BaseException] = []

    def guarded(lane_no: int) -> None:
        try:
            lane_job(lane_no)
        except BaseException as exc:  # reported by the caller's thread
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(n,)) for n in range(lanes)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return report
