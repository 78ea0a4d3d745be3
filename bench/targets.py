"""What the scale benchmarks read back from their sandboxes to check a target is as before."""

from __future__ import annotations

import resource
import subprocess


def soft_nofile(pid: int) -> int:
    """The soft open-files limit of ``pid``."""
    return int(resource.prlimit(pid, resource.RLIMIT_NOFILE)[0])


def root_qdisc_kind(netns: str, iface: str = "hcv0") -> str:
    """The kind of the root qdisc of ``iface`` in ``netns`` (bench/many_netns.py's veth)."""
    out = subprocess.run(["tc", "-n", netns, "qdisc", "show", "dev", iface, "root"],
                         capture_output=True, text=True, check=True).stdout
    return out.split()[1] if out.split() else ""
