"""libfaketime as hostchaos uses it: clock-ready processes and the control files they follow.

A *clock-ready* process was started with ``libfaketime.so.1`` preloaded (the
one the ``libfaketime`` PyPI package ships, x86-64) and with
``FAKETIME_TIMESTAMP_FILE`` naming a control file of its own under
``$HOSTCHAOS_RUN_DIR/clock/<token>/control`` (default ``/run/hostchaos``:
gone at reboot, like every fault it carries). With ``FAKETIME_NO_CACHE=1`` the
library re-reads that file on every clock call, so a rewrite changes the
process's clock at its next ``time()``; nothing is restarted.

The control file holds one line ``+OFFSET xRATE`` (seconds, factor). The
library computes ``fake(t) = S + OFFSET + RATE * (t - S)`` where ``S`` is the
real time at which it started in that process tree, so a rate fault that must
keep the clock continuous writes an offset computed from ``S``
(:func:`continuous_offset`). ``+0 x1`` is the real clock. The file must never
vanish while a process follows it: the library would fall back to
``~/.faketimerc`` or ``/etc/faketimerc``.

Facts about the library the libfaketime 3.0.1 PyPI package vendors, seen on
this machine kind, that shaped this: the ``FAKETIME`` environment variable would win over
the file, so it is never set; a rate stays in force until a later line names
another (so every line names one); it has no ``FAKETIME_DISABLE_SHM`` and
keeps ``/dev/shm/faketime_shm_<pid>`` for each process tree (the variable is
set anyway for libraries that honour it, and :func:`remove_shared_memory`
takes away those of clock-ready processes that are gone); faking the
monotonic clock makes it read as the faked wall clock, which is only ever done
for a process started so (``exec --clock-ready --monotonic``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import re
import subprocess
import time
from pathlib import Path
from typing import Any

from hostchaos.errors import ApplyError, JournalError, PreconditionError, SpecError

LIBRARY_NAME = "libfaketime.so.1"
NEUTRAL = "+0.000000 x1.000000000"
_TOKEN = re.compile(r"(?:pid-\d+-\d+|unit-[A-Za-z0-9:_.@\\-]{1,255})")
_CONTROL_LINE = re.compile(r"\s*([+-]\d+(?:\.\d+)?)\s+x(\d+(?:\.\d+)?)\s*")


def run_dir() -> Path:
    """hostchaos's runtime directory (``$HOSTCHAOS_RUN_DIR``, default ``/run/hostchaos``)."""
    return Path(os.environ.get("HOSTCHAOS_RUN_DIR", "/run/hostchaos"))


def clock_dir() -> Path:
    return run_dir() / "clock"


def library() -> Path:
    """The libfaketime library to preload; PreconditionError where there is none that works."""
    from hostchaos.system.capabilities import libfaketime_path

    if platform.machine() != "x86_64":
        raise PreconditionError(f"clock faults need an x86-64 host (the libfaketime the package "
                                f"ships is x86-64 only); this host is {platform.machine()}")
    path = libfaketime_path()
    if path is None:
        raise PreconditionError("libfaketime.so.1 not found: pip install libfaketime==3.0.1 "
                                "into hostchaos's environment")
    return path


# -- the control file ---------------------------------------------------------------------


def control_text(offset: float, rate: float) -> str:
    """The control line for a clock ``offset`` seconds off, running at ``rate``."""
    if not (math.isfinite(offset) and math.isfinite(rate) and rate > 0):
        raise SpecError(f"clock offset {offset} / rate {rate} cannot be written")
    return f"{offset:+.6f} x{rate:.9f}"


def parse_control(text: str) -> tuple[float, float] | None:
    """(offset, rate) of a control line hostchaos wrote, or None for anything else."""
    match = _CONTROL_LINE.fullmatch(text)
    return (float(match[1]), float(match[2])) if match else None


def continuous_offset(offset_now: float, rate: float, started_at: float, now: float) -> float:
    """The OFFSET to write so the clock reads ``now + offset_now`` at ``now`` and then runs at
    ``rate``: ``S + X + rate*(now - S) = now + offset_now`` for the library's start ``S``."""
    return offset_now + (1.0 - rate) * (now - started_at)


def offset_at(text: str, started_at: float, now: float) -> float | None:
    """How far the clock a control line describes is from the real one at ``now``."""
    parsed = parse_control(text)
    if parsed is None:
        return None
    offset, rate = parsed
    return offset + (rate - 1.0) * (now - started_at)


@dataclasses.dataclass(frozen=True)
class ClockControl:
    """One control file, ``<clock dir>/<token>/control``, and the registration beside it."""

    token: str

    def __post_init__(self) -> None:
        if not _TOKEN.fullmatch(self.token):
            raise SpecError(f"{self.token!r} is not a clock control name")

    @property
    def directory(self) -> Path:
        return clock_dir() / self.token

    @property
    def path(self) -> Path:
        return self.directory / "control"

    def exists(self) -> bool:
        return self.path.is_file()

    def read(self) -> str:
        return self.path.read_text()

    def write(self, text: str) -> None:
        """Replace the control file whole (a reader sees the old line or the new one)."""
        _write_whole(self.directory, "control", text + "\n")

    def create(self) -> bool:
        """Make the directory and a neutral control file; False if they were there already."""
        made = False
        for directory in (run_dir(), clock_dir(), self.directory):
            try:
                os.mkdir(directory, 0o755)
                made = directory == self.directory
            except FileExistsError:
                if directory.is_symlink() or not directory.is_dir():
                    raise JournalError(f"{directory} is not a directory hostchaos made; "
                                       "remove it") from None
            except OSError as exc:
                raise JournalError(f"cannot create {directory}: {exc.strerror}") from exc
        if not self.exists():
            self.write(NEUTRAL)
        return made

    def remove(self) -> None:
        for name in ("control", "process.json"):
            (self.directory / name).unlink(missing_ok=True)
        try:
            self.directory.rmdir()
        except FileNotFoundError:
            pass

    def register(self, process: dict[str, Any]) -> None:
        _write_whole(self.directory, "process.json", json.dumps(process, sort_keys=True))

    def registration(self) -> dict[str, Any] | None:
        """What ``exec --clock-ready`` (or a ``--unit`` fault) noted about the process."""
        try:
            data = json.loads((self.directory / "process.json").read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None


def _write_whole(directory: Path, name: str, text: str) -> None:
    tmp = f".{name}.{os.getpid()}.tmp"
    try:
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as exc:
        raise ApplyError(f"cannot open {directory}: {exc.strerror}") from exc
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644,
                     dir_fd=dir_fd)
        try:
            os.fchmod(fd, 0o644)
            data = text.encode()
            if os.write(fd, data) != len(data):
                raise OSError(28, "short write")
        finally:
            os.close(fd)
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except OSError as exc:
        try:
            os.unlink(tmp, dir_fd=dir_fd)
        except OSError:
            pass
        raise ApplyError(f"cannot write {directory / name}: {exc.strerror or exc}") from exc
    finally:
        os.close(dir_fd)


# -- processes ------------------------------------------------------------------------------


def preload_environment(control: ClockControl, *, monotonic: bool,
                        base: dict[str, str]) -> dict[str, str]:
    """``base`` plus what makes a program started with it follow ``control``."""
    env = {k: v for k, v in base.items() if k not in ("FAKETIME", "FAKETIME_SHARED")}
    lib = str(library())
    env["LD_PRELOAD"] = ":".join([lib, *[p for p in base.get("LD_PRELOAD", "").split(":")
                                          if p and p != lib]])
    env["FAKETIME_TIMESTAMP_FILE"] = str(control.path)
    env["FAKETIME_NO_CACHE"] = "1"
    env["FAKETIME_DISABLE_SHM"] = "1"
    keep = "0" if monotonic else "1"
    env["FAKETIME_DONT_FAKE_MONOTONIC"] = keep
    env["DONT_FAKE_MONOTONIC"] = keep  # the name older libfaketime releases read
    env["HOSTCHAOS_CLOCK"] = control.token
    return env


def environ_of(pid: int) -> dict[str, str]:
    """The environment ``pid`` was started with (empty if it is gone or unreadable)."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    out = {}
    for entry in raw.split(b"\0"):
        key, sep, value = entry.partition(b"=")
        if sep:
            out[key.decode(errors="replace")] = value.decode(errors="replace")
    return out


@dataclasses.dataclass(frozen=True)
class ClockReady:
    """How a running process was made clock-ready (read from its environment)."""

    control: ClockControl
    monotonic: bool


def clock_ready(pid: int) -> ClockReady | None:
    """The control file ``pid`` follows, if it was started clock-ready by hostchaos."""
    env = environ_of(pid)
    token = env.get("HOSTCHAOS_CLOCK", "")
    if not _TOKEN.fullmatch(token):
        return None
    control = ClockControl(token)
    if env.get("FAKETIME_TIMESTAMP_FILE") != str(control.path) or not control.exists():
        return None
    return ClockReady(control, monotonic=env.get("FAKETIME_DONT_FAKE_MONOTONIC") == "0")


def library_loaded(pid: int) -> bool:
    """Is libfaketime mapped into ``pid``? (The loader may have refused to preload it.)"""
    try:
        with open(f"/proc/{pid}/maps") as handle:
            return any(line.rstrip().endswith("/" + LIBRARY_NAME) for line in handle)
    except OSError:
        return False


def users_of(control: ClockControl) -> list[int]:
    """Live processes whose environment names ``control`` (to keep it while one reads it)."""
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit() and environ_of(int(name)).get("HOSTCHAOS_CLOCK") == control.token:
            out.append(int(name))
    return out


def started_at(pid: int) -> float | None:
    """The wall-clock time ``pid`` started (10 ms resolution), or None if it is gone."""
    from hostchaos.system.procs import start_ticks

    ticks = start_ticks(pid)
    if ticks is None:
        return None
    with open("/proc/stat") as handle:
        btime = next(int(line.split()[1]) for line in handle if line.startswith("btime "))
    return btime + ticks / os.sysconf("SC_CLK_TCK")


def canary_offset(control: ClockControl, *, monotonic: bool) -> float:
    """The offset a fresh program started the way clock-ready processes are reads now.

    It proves the library loads and reads this control file on this host: a
    short-lived ``date`` with the same preload prints its faked time, compared
    with the real time around it.
    """
    env = preload_environment(control, monotonic=monotonic,
                              base={"PATH": "/usr/bin:/bin", "LC_ALL": "C"})
    before = time.time()
    try:
        result = subprocess.run(["date", "+%s.%N"], env=env, capture_output=True, text=True,
                                timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ApplyError(f"the clock canary (date with libfaketime) did not run: {exc}") from exc
    after = time.time()
    try:
        seen = float(result.stdout.strip())
    except ValueError:
        raise ApplyError(f"the clock canary printed {result.stdout.strip()!r} "
                         f"({result.stderr.strip()[:200]})") from None
    return seen - (before + after) / 2


def remove_shared_memory(pid: int) -> list[str]:
    """Remove the /dev/shm objects libfaketime made for process ``pid`` (which is gone)."""
    removed = []
    for name in (f"faketime_shm_{pid}", f"sem.faketime_sem_{pid}"):
        path = Path("/dev/shm") / name
        try:
            path.unlink()
            removed.append(str(path))
        except FileNotFoundError:
            pass
        except OSError:
            pass
    return removed


#: a control directory younger than this is never swept (``exec`` may be about to start)
SWEEP_GRACE_SECONDS = 60.0


def sweep_controls(now: float | None = None) -> list[str]:
    """Remove control directories no live process follows, and libfaketime's shared memory
    of registered processes that are gone; list what was removed."""
    from hostchaos.system.procs import exists

    now = time.time() if now is None else now
    try:
        names = os.listdir(clock_dir())
    except OSError:
        return []
    in_use: dict[str, list[int]] = {}
    for pid_name in os.listdir("/proc"):
        if pid_name.isdigit():
            token = environ_of(int(pid_name)).get("HOSTCHAOS_CLOCK")
            if token:
                in_use.setdefault(token, []).append(int(pid_name))
    removed = []
    for name in names:
        if not _TOKEN.fullmatch(name) or name in in_use:
            continue
        control = ClockControl(name)
        try:
            age = now - control.directory.lstat().st_mtime
        except OSError:
            continue
        if age < SWEEP_GRACE_SECONDS:
            continue
        pid = (control.registration() or {}).get("pid")
        if isinstance(pid, int) and not exists(pid):
            removed.extend(remove_shared_memory(pid))
        control.remove()
        removed.append(str(control.directory))
    return removed
