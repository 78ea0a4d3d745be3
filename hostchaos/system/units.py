"""systemd unit NAME -> its control group path, through `systemctl show`."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from hostchaos.errors import ApplyError, TargetNotFoundError

_UNIT = re.compile(r"[A-Za-z0-9:_.@\\-]{1,255}")


def valid_name(name: str) -> bool:
    return bool(_UNIT.fullmatch(name))


def systemd_running() -> bool:
    """sd_booted(3): systemd is the init system when /run/systemd/system exists."""
    return Path("/run/systemd/system").is_dir()


def unit_cgroup(name: str) -> str:
    """The ControlGroup of a running unit, e.g. ``/system.slice/nginx.service``."""
    if not systemd_running() or shutil.which("systemctl") is None:
        raise TargetNotFoundError(
            f"unit {name} not found: systemd is not running on this host "
            "(/run/systemd/system is missing); target a --pid, --container or --cgroup instead")
    try:
        result = subprocess.run(["systemctl", "show", "--property", "ControlGroup", "--value",
                                 "--", name], capture_output=True, text=True, timeout=20,
                                check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise TargetNotFoundError(f"unit {name}: systemctl failed ({exc})") from exc
    path = result.stdout.strip()
    if result.returncode != 0 or not path.startswith("/"):
        raise TargetNotFoundError(
            f"unit {name} not found or not running (systemctl show reports no ControlGroup)")
    return path


def freezer_state(name: str) -> str:
    """systemd's FreezerState of a unit: running, freezing, frozen or thawing."""
    result = subprocess.run(["systemctl", "show", "--property", "FreezerState", "--value",
                             "--", name], capture_output=True, text=True, timeout=20,
                            check=False)
    return result.stdout.strip()


def set_frozen(name: str, frozen: bool) -> None:
    """`systemctl freeze|thaw UNIT`: systemd freezes the unit's cgroup and knows it did."""
    verb = "freeze" if frozen else "thaw"
    try:
        result = subprocess.run(["systemctl", verb, "--", name], capture_output=True, text=True,
                                timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ApplyError(f"systemctl {verb} {name}: {exc}") from exc
    if result.returncode != 0:
        message = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else \
            f"exit {result.returncode}"
        raise ApplyError(f"systemctl {verb} {name}: {message}")


def show(name: str, *properties: str) -> dict[str, str]:
    """``systemctl show -p P1 -p P2 ... NAME`` as a dict (TargetNotFoundError without systemd)."""
    if not systemd_running() or shutil.which("systemctl") is None:
        raise TargetNotFoundError(
            f"unit {name} not found: systemd is not running on this host "
            "(/run/systemd/system is missing)")
    argv = ["systemctl", "show", "--no-pager"]
    for prop in properties:
        argv += ["--property", prop]
    try:
        result = subprocess.run([*argv, "--", name], capture_output=True, text=True, timeout=20,
                                check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise TargetNotFoundError(f"unit {name}: systemctl failed ({exc})") from exc
    out = {}
    for line in result.stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key] = value
    return out


def _systemctl(*args: str, timeout: float = 90) -> None:
    try:
        result = subprocess.run(["systemctl", *args], capture_output=True, text=True,
                                timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ApplyError(f"systemctl {' '.join(args)}: {exc}") from exc
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines()
        raise ApplyError(f"systemctl {' '.join(args)}: "
                         f"{lines[-1] if lines else f'exit {result.returncode}'}")


def daemon_reload() -> None:
    _systemctl("daemon-reload")


def restart(name: str) -> None:
    _systemctl("restart", "--", name)


#: runtime drop-ins live under /run, so a reboot removes them with the fault
RUNTIME_UNITS = Path("/run/systemd/system")


def dropin_path(unit: str, name: str) -> Path:
    """``/run/systemd/system/UNIT.d/NAME.conf``: a runtime drop-in (a reboot removes it)."""
    if not valid_name(unit) or not re.fullmatch(r"[A-Za-z0-9_.-]{1,200}", name):
        raise ApplyError(f"drop-in {name!r} for unit {unit!r} is not a valid name")
    return RUNTIME_UNITS / f"{unit}.d" / f"{name}.conf"


def write_dropin(path: Path, text: str) -> None:
    """Write a drop-in whole (temp file + rename); its directory is made if missing."""
    import os

    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)
        os.rename(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ApplyError(f"cannot write systemd drop-in {path}: {exc.strerror}") from exc


def remove_dropin(path: Path, marker: str) -> bool:
    """Remove the drop-in at ``path`` if it still carries ``marker`` (ours); True if removed."""
    try:
        if marker not in path.read_text():
            return False
        path.unlink()
    except FileNotFoundError:
        return False
    try:
        path.parent.rmdir()  # only if we left it empty
    except OSError:
        pass
    return True
