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
