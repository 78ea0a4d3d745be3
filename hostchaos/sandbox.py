"""Throwaway network sandboxes: two namespaces joined by a veth pair.

Used by `hostchaos demo` and by the tests. Everything lives in namespaces this
module created, and :meth:`NetnsPair.remove` deletes them (and with them the
veth pair and every qdisc on it), so the host is left as it was.
"""

from __future__ import annotations

import re
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from types import TracebackType

from hostchaos.errors import PreconditionError

IFA_F_NODAD = 0x02


@dataclass(frozen=True)
class PingResult:
    """Summary of one `ping` run."""

    sent: int
    received: int
    rtt_min_ms: float | None
    rtt_avg_ms: float | None
    rtt_max_ms: float | None
    rtt_mdev_ms: float | None
    #: replies beyond one per request (ping's "+N duplicates")
    duplicates: int = 0

    @property
    def loss_percent(self) -> float:
        return 100.0 * (self.sent - self.received) / self.sent if self.sent else 0.0


class NetnsPair:
    """Namespaces ``a`` and ``b`` joined by veth ``iface_a`` <-> ``iface_b``.

    ``a`` holds 198.18.43.1/24 and fd48:43::1/64; ``b`` holds .2 and ::2
    (RFC 2544 benchmarking and ULA ranges, reachable only inside the pair).
    """

    addr_a, addr_b = "198.18.43.1", "198.18.43.2"
    addr6_a, addr6_b = "fd48:43::1", "fd48:43::2"

    def __init__(self, prefix: str = "hc-sbx") -> None:
        suffix = secrets.token_hex(3)
        self.a = f"{prefix}-a-{suffix}"
        self.b = f"{prefix}-b-{suffix}"
        self.iface_a = "hcva"
        self.iface_b = "hcvb"

    def create(self) -> NetnsPair:
        from pyroute2 import IPRoute, netns

        try:
            netns.create(self.a)
            netns.create(self.b)
            with IPRoute(netns=self.a, flags=0) as ipr:
                ipr.link("add", ifname=self.iface_a, kind="veth",
                         peer={"ifname": self.iface_b, "net_ns_fd": self.b})
                self._configure(ipr, self.iface_a, self.addr_a, self.addr6_a)
            with IPRoute(netns=self.b, flags=0) as ipr:
                self._configure(ipr, self.iface_b, self.addr_b, self.addr6_b)
        except BaseException:
            self.remove()
            raise
        return self

    @staticmethod
    def _configure(ipr: object, iface: str, addr: str, addr6: str) -> None:
        link = ipr.link_lookup  # type: ignore[attr-defined]
        index = link(ifname=iface)[0]
        lo = link(ifname="lo")[0]
        ipr.addr("add", index=index, address=addr, prefixlen=24)  # type: ignore[attr-defined]
        ipr.addr("add", index=index, address=addr6, prefixlen=64,  # type: ignore[attr-defined]
                 flags=IFA_F_NODAD)
        ipr.link("set", index=index, state="up")  # type: ignore[attr-defined]
        ipr.link("set", index=lo, state="up")  # type: ignore[attr-defined]

    def remove(self) -> None:
        from pyroute2 import netns

        for name in (self.a, self.b):
            try:
                netns.remove(name)
            except OSError:
                pass

    def __enter__(self) -> NetnsPair:
        return self.create()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.remove()

    def tc_config(self, which: str = "a") -> str:
        """The traffic-control configuration of one side (see :func:`tc_configuration`)."""
        ns, iface = (self.a, self.iface_a) if which == "a" else (self.b, self.iface_b)
        return tc_configuration(ns, iface)

    def ping(self, count: int = 10, interval: float = 0.05, *, v6: bool = False,
             timeout: float = 2.0, size: int | None = None) -> PingResult:
        """Ping ``b`` from ``a``: round trips cross ``iface_a`` out and ``iface_b`` back."""
        if shutil.which("ping") is None:
            raise PreconditionError("ping not found: apt-get install iputils-ping")
        target = self.addr6_b if v6 else self.addr_b
        out = _run(["ip", "netns", "exec", self.a, "ping", "-6" if v6 else "-4", "-q", "-n",
                    "-c", str(count), "-i", f"{interval:g}", "-W", f"{timeout:g}",
                    *(["-s", str(size)] if size else []), target],
                   check=False)
        return parse_ping(out)


#: numbers `tc` prints without -s that count traffic or references, not configuration:
#: htb's direct_packets_stat, a qdisc's reference count, a filter's offload count
_COUNTERS = re.compile(r" (?:direct_packets_stat|refcnt|in_hw_count) \d+")


def tc_configuration(netns: str | int, iface: str) -> str:
    """Every qdisc, class and filter of ``iface`` (egress and ingress), as `tc -d` prints them.

    ``netns`` is a named network namespace or the PID of a process in one.
    Counters are removed, so two calls compare equal exactly when the
    configuration is the same: "the host is as before" means this, not that no
    packet went through meanwhile.
    """
    enter = (["nsenter", f"--net=/proc/{netns}/ns/net", "tc"] if isinstance(netns, int)
             else ["tc", "-n", netns])
    parts = []
    for what in (["qdisc", "show", "dev", iface], ["class", "show", "dev", iface],
                 ["filter", "show", "dev", iface], ["filter", "show", "dev", iface, "ingress"]):
        parts.append(f"# {' '.join(what)}\n" + _run([*enter, "-d", *what]))
    return _COUNTERS.sub("", "".join(parts))


def parse_ping(text: str) -> PingResult:
    counts = re.search(r"(\d+) packets transmitted, (\d+) (?:packets )?received", text)
    if counts is None:
        raise RuntimeError(f"unexpected ping output: {text!r}")
    rtt = re.search(r"= ([\d.]+)/([\d.]+)/([\d.]+)/([\d.]+) ms", text)
    values: list[float | None] = [float(v) for v in rtt.groups()] if rtt else [None] * 4
    dups = re.search(r"\+(\d+) duplicates", text)
    low, avg, high, mdev = values
    return PingResult(int(counts.group(1)), int(counts.group(2)), low, avg, high, mdev,
                      duplicates=int(dups.group(1)) if dups else 0)


def _run(argv: list[str], *, check: bool = True) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed: {done.stderr.strip()}")
    return done.stdout
