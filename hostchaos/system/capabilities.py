"""What this host can do: the probe behind `hostchaos doctor`, preflight checks and test skips.

Each check returns a :class:`Capability` with a one-line fix for when it is
missing. Probes read /proc, /sys and /lib/modules, and ask each installed
container runtime whether it answers (``podman info``); the only probe that
acts is the last-resort qdisc probe, which runs in a throwaway network
namespace of a child process and so cannot change the host.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache, partial
from pathlib import Path


@dataclass(frozen=True)
class Capability:
    """One thing hostchaos may need, whether it is there, and how to get it."""

    name: str
    ok: bool
    detail: str
    fix: str = ""

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail, "fix": self.fix}


def is_root() -> Capability:
    ok = os.geteuid() == 0
    return Capability("root", ok, "running as root" if ok else f"running as uid {os.geteuid()}",
                      "" if ok else "run hostchaos with sudo")


@cache
def _kernel_config() -> dict[str, str]:
    release = os.uname().release
    candidates = [Path("/proc/config.gz"), Path(f"/boot/config-{release}")]
    for path in candidates:
        try:
            if path.suffix == ".gz":
                import gzip  # only for /proc/config.gz

                raw = gzip.decompress(path.read_bytes())
            else:
                raw = path.read_bytes()
        except OSError:
            continue
        out = {}
        for line in raw.decode(errors="replace").splitlines():
            if line.startswith("CONFIG_") and "=" in line:
                key, _, value = line.partition("=")
                out[key] = value
        return out
    return {}


def _module_file_present(module: str) -> bool:
    base = Path("/lib/modules") / os.uname().release
    for listing in ("modules.builtin", "modules.dep"):
        try:
            text = (base / listing).read_text()
        except OSError:
            continue
        if f"/{module}.ko" in text:
            return True
    return False


def kernel_module(module: str, config_key: str) -> Capability:
    """Is ``module`` loaded, built in, or loadable on the running kernel?"""
    release = os.uname().release
    if Path("/sys/module", module).exists():
        return Capability(module, True, "loaded")
    setting = _kernel_config().get(config_key)
    if setting == "y":
        return Capability(module, True, "built into the kernel")
    if _module_file_present(module):
        return Capability(module, True, "loadable module")
    if setting == "m":
        detail = f"configured as a module but not installed for kernel {release}"
    elif _kernel_config():
        detail = f"not built for kernel {release} ({config_key} is not set)"
    else:
        return _probe_by_trying(module)
    return Capability(
        module, False, detail,
        f"boot a kernel with {module} (e.g. Debian's linux-image-amd64), then `modprobe {module}`",
    )


def _probe_by_trying(module: str) -> Capability:
    kind = module.removeprefix("sch_")
    ok = _try_qdisc_in_child_netns(kind)
    return Capability(module, ok, "accepted by the kernel" if ok else "refused by the kernel",
                      "" if ok else f"load or install kernel module {module}")


def _try_qdisc_in_child_netns(kind: str) -> bool:
    import ctypes

    pid = os.fork()
    if pid == 0:  # child: private netns, try the qdisc on its loopback, report by exit code
        code = 1
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.unshare(0x40000000) == 0:  # CLONE_NEWNET
                from pyroute2 import IPRoute

                with IPRoute() as ipr:
                    ipr.tc("add", kind, 1)
                code = 0
        except Exception:
            code = 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


def cgroups() -> Capability:
    root = Path("/sys/fs/cgroup")
    if (root / "cgroup.controllers").exists():
        controllers = (root / "cgroup.controllers").read_text().split()
        return Capability("cgroups", True, f"v2 (unified), controllers: {' '.join(controllers)}")
    v1 = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    if v1:
        return Capability("cgroups", True, f"v1 (hybrid), hierarchies: {' '.join(v1)}")
    return Capability("cgroups", False, "no cgroup filesystem mounted",
                      "mount cgroup2 on /sys/fs/cgroup")


#: controllers the resource faults use, and the v2-only features of each
RESOURCE_CONTROLLERS = ("cpu", "memory", "pids")


def cgroup_version(version: int) -> Capability:
    """Which controllers cgroup ``version`` (1 or 2) offers on this host.

    Informational for `doctor`: a version that is not mounted is not missing,
    since hostchaos drives whichever one the host uses.
    """
    from hostchaos.system.cgroups import Cgroups

    root = Path("/sys/fs/cgroup")
    fs = Cgroups(root)
    name = f"cgroup-v{version}"
    used = ", ".join(c for c in RESOURCE_CONTROLLERS if fs.hierarchy_for(c))
    if fs.version == version:
        listed = sorted({c for h in fs.hierarchies for c in h.controllers
                         if not c.startswith("name=")})
        where = f"{root}/<controller>" if version == 1 else str(root)
        return Capability(name, True, f"in use ({where}): {' '.join(listed) or 'no controllers'}"
                          f"; resource faults use: {used or 'none'}")
    if version == 2:
        unified = root / "unified"
        if (unified / "cgroup.controllers").exists():
            v2 = (unified / "cgroup.controllers").read_text().split()
            return Capability(name, True, f"hybrid mount at {unified}: "
                              f"{' '.join(v2) or 'no controllers'} (the rest are bound to v1)")
    return Capability(name, True, "not mounted")


def cgroup_unified() -> Capability:
    """Is the host on cgroup v2 (the unified hierarchy at /sys/fs/cgroup)?"""
    root = Path("/sys/fs/cgroup")
    ok = (root / "cgroup.controllers").exists()
    return Capability("cgroup-v2-unified", ok,
                      f"{root} is cgroup v2" if ok else f"{root} is cgroup v1 (or hybrid)",
                      "" if ok else "boot with systemd.unified_cgroup_hierarchy=1 "
                      "(the VM tier's Debian kernel does)")


def cgroup_controller(name: str) -> Capability:
    """Is cgroup controller ``name`` usable for resource faults, and through which version?"""
    from hostchaos.system.cgroups import Cgroups

    fs = Cgroups()
    hierarchy = fs.hierarchy_for(name)
    label = f"cgroup-{name}"
    if hierarchy is None:
        where = "v2 unified hierarchy" if fs.version == 2 else "any v1 hierarchy"
        return Capability(label, False, f"controller {name} is not available in the {where}",
                          f"enable the {name} controller (kernel cgroup_enable={name}, or mount "
                          "its v1 hierarchy)")
    if hierarchy.version == 1:
        via = "cgroupspy + files" if name in ("cpu", "memory") else "files"
        extra = "; --high needs v2" if name == "memory" else ""
        return Capability(label, True, f"v1 at {hierarchy.mount} ({via}){extra}")
    root_on = name in set((hierarchy.mount / "cgroup.subtree_control").read_text().split()) \
        if (hierarchy.mount / "cgroup.subtree_control").exists() else False
    state = "enabled" if root_on else "not enabled (hostchaos enables it for its own cgroups)"
    return Capability(label, True, f"v2 at {hierarchy.mount}, at the root {state}")


def libfaketime() -> Capability:
    import platform

    if platform.machine() != "x86_64":
        return Capability("libfaketime", False, f"this host is {platform.machine()}; the "
                          "libfaketime the package ships is x86-64 only",
                          "clock faults need an x86-64 host")
    path = libfaketime_path()
    if path:
        return Capability("libfaketime", True, str(path))
    return Capability("libfaketime", False, "libfaketime.so.1 not found",
                      "pip install libfaketime (or apt-get install libfaketime)")


def libfaketime_path() -> Path | None:
    try:
        import libfaketime as pkg

        candidate = Path(pkg.__file__).parent / "vendor/libfaketime/src/libfaketime.so.1"
        if candidate.exists():
            return candidate
    except ImportError:
        pass
    for path in Path("/usr/lib").glob("*/faketime/libfaketime.so.1"):
        return path
    return None


def container_runtimes() -> Capability:
    """Which container runtimes answer (a client whose daemon is down does not count)."""
    from hostchaos.system.containers import runtime_status

    statuses = runtime_status()
    answering = [s.name for s in statuses if s.answers]
    silent = [f"{s.name} ({s.detail})" for s in statuses if s.installed and not s.answers]
    parts = [f"answering: {', '.join(answering)}"] if answering else []
    if silent:
        parts.append(f"installed but not answering: {'; '.join(silent)}")
    detail = "; ".join(parts) or "no container runtime installed"
    fix = "" if answering else ("start the runtime's daemon, or install podman "
                                "(apt-get install podman runc) to target containers")
    return Capability("containers", bool(answering), detail, fix)


def container_runtime(name: str) -> Capability:
    """Does runtime ``name`` (e.g. podman) answer?"""
    from hostchaos.system.containers import runtime_status

    status = next((s for s in runtime_status() if s.name == name), None)
    if status is None:
        return Capability(name, False, "unknown container runtime")
    fix = "" if status.answers else f"apt-get install {name}" + (" runc" if name == "podman"
                                                                  else "")
    return Capability(name, status.answers, status.detail if status.installed or status.answers
                      else "not installed", fix)


#: kernel modules the network kinds use -> the kernel config option that builds them
KERNEL_MODULES = {
    "sch_netem": "CONFIG_NET_SCH_NETEM",
    "sch_tbf": "CONFIG_NET_SCH_TBF",
    "sch_htb": "CONFIG_NET_SCH_HTB",
    "cls_u32": "CONFIG_NET_CLS_U32",
    "ifb": "CONFIG_IFB",
    "sch_ingress": "CONFIG_NET_SCH_INGRESS",
    "act_mirred": "CONFIG_NET_ACT_MIRRED",
}

#: every check by the name a fault kind lists in its ``needs``
CHECKS: dict[str, Callable[[], Capability]] = {
    "root": is_root,
    **{module: partial(kernel_module, module, option)
       for module, option in KERNEL_MODULES.items()},
    "cgroups": cgroups,
    "cgroup-v1": lambda: cgroup_version(1),
    "cgroup-v2": lambda: cgroup_version(2),
    "cgroup-v2-unified": cgroup_unified,
    **{f"cgroup-{name}": partial(cgroup_controller, name) for name in RESOURCE_CONTROLLERS},
    "libfaketime": libfaketime,
    "containers": container_runtimes,
}


def check(name: str) -> Capability:
    """The check called ``name`` (a key of :data:`CHECKS`)."""
    return CHECKS[name]()


def netem() -> Capability:
    return check("sch_netem")


def ifb() -> Capability:
    return check("ifb")


def all_checks() -> list[Capability]:
    return [probe() for probe in CHECKS.values()]
