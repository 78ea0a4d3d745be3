"""Generated fault options that can only ever reach the fuzz test's own sandboxes.

Every generated value of an option that names a host object goes through
:func:`safe_value` (an options mapping through :func:`safe_options`, an
argument list through :func:`safe_argv`), which keeps it or replaces it so
that it can only name something the test made:

- ``iface``: the sandbox pair's veth names (which exist only inside its
  namespaces) or a name starting ``hcfzx`` (exists nowhere);
- ``netns``: the pair's namespaces or ``hcfzx...``;
- ``pid``: any value that would parse to a live PID range (1..2**22) becomes
  the test's victim process; others stay (0, negatives, huge, text);
- ``path``: the test's tmpfs or a name below it (no ``/`` or ``..`` in it);
- ``cgroup``, ``unit``, ``container``: ``hcfzx-...`` (nothing has that name);
- ``name``, ``cmdline``: the victim's unique name or ``hcfzx...`` (letters,
  digits and dashes only, so it cannot be a wider pattern).

So a network fault can at worst land in the pair's namespaces, a process
fault on the victim, a fill on the tmpfs: never the machine's own objects.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from hostchaos.faults import KINDS, fault_class
from hostchaos.faults.options import spec_options
from tests.support.fuzz import durations, garbage_text, huge_numbers

PID_MAX = 2**22
#: options whose values name host objects
DANGEROUS = ("iface", "netns", "pid", "path", "cgroup", "unit", "container", "name", "cmdline")


@dataclass
class Sandbox:
    netns: tuple[str, str]
    ifaces: tuple[str, str]
    victim_pid: int
    victim_name: str
    fill_dir: Path


def _word(value: Any) -> str:
    return re.sub(r"[^A-Za-z0-9-]", "", str(value))[:30]


def _as_pid(value: Any) -> int | None:
    """The PID a value would be read as, if any (int(), float() and unicode digits)."""
    if isinstance(value, bool):
        return None
    for parse in (int, float):
        try:
            number = parse(value if isinstance(value, int | float) else str(value).strip())
        except (ValueError, OverflowError, TypeError):
            continue
        try:
            return int(number)
        except (ValueError, OverflowError):
            return None
    return None


#: stands for the running sandbox in generated values (strategies are made before it exists)
PLACEHOLDER = Sandbox(netns=("@netns-a@", "@netns-b@"), ifaces=("hcva", "hcvb"),
                      victim_pid=-424242, victim_name="@victim@", fill_dir=Path("/@fill@"))


def _resolve(value: Any, sandbox: Sandbox) -> Any:
    ph = PLACEHOLDER
    table = {ph.netns[0]: sandbox.netns[0], ph.netns[1]: sandbox.netns[1],
             ph.victim_name: sandbox.victim_name, str(ph.fill_dir): str(sandbox.fill_dir),
             str(ph.victim_pid): str(sandbox.victim_pid)}
    if isinstance(value, int) and not isinstance(value, bool) and value == ph.victim_pid:
        return sandbox.victim_pid
    return table.get(value, value) if isinstance(value, str) else value


def safe_value(name: str, value: Any, sandbox: Sandbox) -> Any:
    """``value`` for option ``name``, or a replacement that names only the sandbox."""
    if isinstance(value, list | tuple):
        return [safe_value(name, v, sandbox) for v in value]
    value = _resolve(value, sandbox)
    if name not in DANGEROUS or value is None or isinstance(value, bool | dict):
        return value
    if name == "iface":
        return value if value in sandbox.ifaces else "hcfzx" + _word(value)[:8]
    if name == "netns":
        return value if value in sandbox.netns else "hcfzx" + _word(value)
    if name == "pid":
        pid = _as_pid(value)
        if pid is not None and 1 <= pid <= PID_MAX and pid != sandbox.victim_pid:
            return sandbox.victim_pid if isinstance(value, int) else str(sandbox.victim_pid)
        if pid is None and isinstance(value, float):
            return value  # nan, inf: refused as a number
        return value
    if name == "path":
        if str(value) == str(sandbox.fill_dir):
            return value
        return str(sandbox.fill_dir / ("hcfzx" + _word(value)))
    if name in ("name", "cmdline"):
        return value if value == sandbox.victim_name else "hcfzx" + _word(value)
    return "hcfzx-" + _word(value)  # cgroup, unit, container


def safe_options(options: Any, sandbox: Sandbox) -> Any:
    if not isinstance(options, dict):
        return options
    return {k: safe_value(k, v, sandbox) if isinstance(k, str) else v
            for k, v in options.items()}


def safe_argv(argv: list[str], sandbox: Sandbox) -> list[str]:
    """An argument list in which every value of a dangerous option is safe (as click reads
    it: ``--opt VALUE`` and ``--opt=VALUE``, none after ``--``)."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        if token == "--":
            out.extend(argv[i:])
            break
        flag, eq, attached = token.partition("=")
        name = flag[2:] if flag.startswith("--") else ""
        if name in DANGEROUS and eq:
            out.append(f"{flag}={safe_value(name, attached, sandbox)}")
        elif name in DANGEROUS and not eq and i + 1 < len(argv):
            out.extend([token, str(safe_value(name, argv[i + 1], sandbox))])
            i += 1
        else:
            out.append(token)
        i += 1
    return out


def option_values(sandbox: Sandbox) -> dict[str, st.SearchStrategy[Any]]:
    """Raw values for each option name: sandbox targets, plausible values, garbage."""
    junk = garbage_text | huge_numbers
    good: dict[str, list[Any]] = {
        "iface": list(sandbox.ifaces), "netns": list(sandbox.netns),
        "pid": [sandbox.victim_pid, str(sandbox.victim_pid), 0, -1, PID_MAX + 5, "abc"],
        "path": [str(sandbox.fill_dir)], "name": [sandbox.victim_name],
        "cmdline": [sandbox.victim_name], "ms": [1, 50, 0.001, 60000, 60001, 0, -5],
        "jitter": [0, 5, -1], "correlation": [0, 50, 100, 101],
        "percent": [0.1, 1, 50, 100, 0, 101, -3], "rate": ["1mbit", "100kbit", "8bit", "x",
                                                          "0", 1000],
        "burst": ["32k", "1", "0"], "limit": ["64k", 0.5, 1, "2", 0, -1],
        "ge": ["1,10", "1", "x", "1,2,3,4"], "gap": [0, 5, -1], "period": [100000, 1000, 0],
        "max": [1 << 24, "64M", 10, 0, -1], "high": [1 << 24, "32M"], "soft": [64, 1024, 0],
        "hard": [128, 2048, 1], "size": ["1M", "64k", "100G", 1 << 20, 0],
        "leave-free": ["1M", 0], "offset": ["+5m", "-30s", 60, "1e9"], "signal": [
            "KILL", "TERM", "STOP", "CONT", "HUP", "9", "SIGKILL", "BOGUS", 0, 64],
        "count": [1, 2, 0, -1], "interval": [0.5, 0, -1], "seed": [0, 7, -1],
        "direction": ["egress", "ingress", "both", "up"], "protocol": ["tcp", "udp", "icmp",
                                                                       "icmpv6", "sctp"],
        "dst": ["198.18.43.2", "198.18.43.0/24", "fd48:43::2", "::/0", "300.1.1.1", "x/99"],
        "src": ["198.18.43.1", "10.0.0.0/8"], "host": ["198.18.43.2", "localhost", "::1"],
        "protect": ["198.18.43.2:22", "22", "x:y"], "dport": [80, 0, 65535, 65536],
        "sport": [1, 99999],
    }
    out: dict[str, st.SearchStrategy[Any]] = {}
    for kind in KINDS:
        for each in spec_options(fault_class(kind).spec_type):
            if each.is_flag:
                values: st.SearchStrategy[Any] = st.booleans() | junk
            else:
                values = st.sampled_from(good.get(each.name, [1, "1", "x"])) | junk
            if each.option.multiple:
                values = values | st.lists(values, max_size=3)
            out[each.name] = values
    out["for"] = durations
    out["lease"] = durations
    return out


def _base_options(sandbox: Sandbox) -> dict[str, dict[str, Any]]:
    net = {"iface": sandbox.ifaces[0], "netns": sandbox.netns[0]}
    pid = sandbox.victim_pid
    return {
        "latency": {**net, "ms": 20}, "loss": {**net, "percent": 10},
        "corrupt": {**net, "percent": 5}, "duplicate": {**net, "percent": 5},
        "reorder": {**net, "percent": 20, "ms": 10}, "rate": {**net, "rate": "1mbit"},
        "partition": {**net, "dst": "198.18.43.2"}, "cpu": {"pid": pid, "limit": 0.5},
        "memory": {"pid": pid, "max": "256M"}, "pids": {"pid": pid, "max": 50},
        "nofile": {"pid": [pid], "soft": 64}, "disk-fill": {"path": str(sandbox.fill_dir),
                                                          "size": "1M"},
        "kill": {"pid": [pid], "signal": "TERM"}, "stop": {"pid": [pid]},
        "freeze": {"pid": pid}, "clock": {"pid": pid, "offset": "+5m"},
    }


@st.composite
def plausible_options(draw: st.DrawFn, kind: str, values: dict[str, st.SearchStrategy[Any]]
                      ) -> dict[str, Any]:
    """A kind's options that could succeed on the sandbox, with a few mutations."""
    options = dict(_base_options(PLACEHOLDER)[kind])
    names = [o.name for o in spec_options(fault_class(kind).spec_type)]
    for _ in range(draw(st.integers(0, 2))):
        name = draw(st.sampled_from(names))
        action = draw(st.integers(0, 3))
        if action == 0:
            options.pop(name, None)
        else:
            options[name] = draw(values[name])
    return options
