"""Container NAME|ID -> the PID of its init process, asking whichever runtime knows it.

Runtimes are asked in turn (podman, docker, nerdctl, crictl) with argument
lists only (never a shell). The first that knows the container answers; a
runtime that is missing, has no daemon or does not know the name is skipped.

A runtime counts as present only when it *answers* (``podman info``, ``docker
info`` ...): a ``docker`` client with no daemon behind it is installed, not
usable, and :func:`runtime_status` says so.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

from hostchaos.errors import TargetNotFoundError

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,254}")

#: runtime -> argv prefix printing the container's init PID (the container name is appended)
RUNTIMES: tuple[tuple[str, list[str]], ...] = (
    ("podman", ["podman", "inspect", "--type", "container", "--format", "{{.State.Pid}}"]),
    ("docker", ["docker", "inspect", "--type", "container", "--format", "{{.State.Pid}}"]),
    ("nerdctl", ["nerdctl", "inspect", "--mode", "native", "--format", "{{.State.Pid}}"]),
    ("crictl", ["crictl", "inspect", "--output", "go-template", "--template", "{{.info.pid}}"]),
)
TIMEOUT = 20.0
#: runtime -> a command that succeeds only when the runtime can run containers
PROBES: dict[str, list[str]] = {
    "podman": ["podman", "info", "--format", "{{.Host.OCIRuntime.Name}}"],
    "docker": ["docker", "info", "--format", "{{.ServerVersion}}"],
    "nerdctl": ["nerdctl", "info", "--format", "{{.ServerVersion}}"],
    "crictl": ["crictl", "info"],
}
PROBE_TIMEOUT = 15.0


@dataclass(frozen=True)
class RuntimeStatus:
    """Whether one container runtime is installed, and whether it answers."""

    name: str
    installed: bool
    answers: bool
    detail: str


@cache
def runtime_status() -> tuple[RuntimeStatus, ...]:
    """Every known runtime, asked once per process whether it can run containers."""
    import shutil  # here, with subprocess: ~7 ms of every command's start otherwise
    import subprocess

    out = []
    for name, argv in PROBES.items():
        if shutil.which(name) is None:
            out.append(RuntimeStatus(name, False, False, "not installed"))
            continue
        try:
            result = subprocess.run(argv, capture_output=True, text=True,
                                    timeout=PROBE_TIMEOUT, check=False)
        except subprocess.TimeoutExpired:
            out.append(RuntimeStatus(name, True, False,
                                     f"`{name} info` did not answer in {PROBE_TIMEOUT:g} s"))
            continue
        except OSError as exc:
            out.append(RuntimeStatus(name, True, False, f"cannot run {name}: {exc.strerror}"))
            continue
        if result.returncode == 0:
            answer = result.stdout.strip().splitlines()
            out.append(RuntimeStatus(name, True, True, answer[0] if answer else "answers"))
        else:
            lines = [line.strip() for line in result.stderr.splitlines() if line.strip()]
            reason = lines[-1] if lines else f"exit {result.returncode}"
            out.append(RuntimeStatus(name, True, False, reason[:160]))
    return tuple(out)


def valid_name(name: str) -> bool:
    return bool(_NAME.fullmatch(name))


def container_pid(name: str) -> tuple[int, str]:
    """(init PID, runtime) of running container ``name``; TargetNotFoundError if none has it."""
    import shutil
    import subprocess

    asked = []
    stopped = None
    for runtime, argv in RUNTIMES:
        if shutil.which(runtime) is None:
            continue
        asked.append(runtime)
        try:
            result = subprocess.run([*argv, name], capture_output=True, text=True,
                                    timeout=TIMEOUT, check=False)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if result.returncode != 0:
            continue
        text = result.stdout.strip().splitlines()[0] if result.stdout.strip() else ""
        if not text.isdigit():
            continue
        pid = int(text)
        if pid > 0:
            return pid, runtime
        stopped = runtime
    if stopped:
        raise TargetNotFoundError(f"container {name} is not running ({stopped} reports no PID)")
    if not asked:
        raise TargetNotFoundError(
            f"container {name} not found: no container runtime (podman, docker, nerdctl, "
            "crictl) is installed")
    raise TargetNotFoundError(f"container {name} not found (asked: {', '.join(asked)})")
