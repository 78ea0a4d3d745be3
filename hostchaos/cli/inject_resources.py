"""`hostchaos inject cpu|memory|pids|nofile`: resource limits through cgroups and prlimit.

Imported by ``hostchaos.cli._register`` for its side effect: the commands are
added to the ``inject`` group. Like the rest of the CLI it imports nothing
heavy at module level.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from hostchaos.cli.common import DURATION
from hostchaos.cli.inject import inject, run_inject, timing_options
from hostchaos.errors import SpecError

F = TypeVar("F", bound=Callable[..., Any])

CGROUP_TARGETS = """\b
Targets (exactly one):
  --pid PID         the process and all its threads move into a new cgroup
                    hostchaos-<fault id> carrying the limit, and move back to
                    their original cgroups on rollback
  --unit NAME       the systemd unit's own cgroup, limited in place
  --container NAME  the container's own cgroup (podman, docker, nerdctl or
                    crictl find it), limited in place
  --cgroup PATH     a cgroup by path (e.g. /machine.slice/x.scope, or a full
                    /sys/fs/cgroup/... path), limited in place
In-place targets get their original values written back (and read back) on
rollback. PID 1, kernel threads and hostchaos's own processes are refused
(exit 5)."""


class _Percent(click.ParamType):  # type: ignore[type-arg]
    name = "percent"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> float:
        if isinstance(value, float):
            return value
        from hostchaos.faults.resources import parse_percent

        try:
            return parse_percent(str(value))
        except SpecError as exc:
            self.fail(str(exc), param, ctx)


class _Size(click.ParamType):  # type: ignore[type-arg]
    name = "size"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        from hostchaos.faults.resources import parse_size

        try:
            return parse_size(str(value), what=param.opts[0] if param else "size")
        except SpecError as exc:
            self.fail(str(exc), param, ctx)


PERCENT = _Percent()
SIZE = _Size()


def cgroup_target_options(func: F) -> F:
    options = [
        click.option("--pid", type=int, default=None, metavar="PID",
                     help="A process: moved (all threads) into its own limited cgroup."),
        click.option("--unit", default=None, metavar="NAME",
                     help="A systemd unit (e.g. nginx.service): its cgroup, in place."),
        click.option("--container", default=None, metavar="NAME|ID",
                     help="A running container: its cgroup, in place."),
        click.option("--cgroup", "cgroup_path", default=None, metavar="PATH",
                     help="A cgroup path, in place."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@inject.command(epilog=CGROUP_TARGETS)
@cgroup_target_options
@click.option("--limit", type=PERCENT, required=True, metavar="PERCENT",
              help="CPU time as a share of one CPU: 25% is 25 ms per 100 ms period; "
                   "above 100% spans several CPUs.")
@click.option("--period", type=DURATION, default=None, metavar="DURATION",
              help="CFS period over which --limit is enforced, 1ms to 1s (default 100ms).")
@timing_options
def cpu(pid: int | None, unit: str | None, container: str | None, cgroup_path: str | None,
        limit: float, period: float | None, duration: float | None, lease: float | None,
        wait: bool, dry_run: bool, as_json: bool) -> None:
    """Cap CPU time with a cgroup CFS quota (quota over period).

    cgroup v1: cpu.cfs_quota_us / cpu.cfs_period_us; v2: cpu.max. A limited
    process is throttled for the rest of each period once it has used its
    quota; `hostchaos status ID` shows how often (nr_throttled).

    \b
    Examples:
      sudo hostchaos inject cpu --pid 4242 --limit 25% --for 5m
      sudo hostchaos inject cpu --container web --limit 150% --period 50ms --for 10m
    """
    from hostchaos.faults.resources import CpuSpec

    def spec() -> CpuSpec:
        period_us = 100_000 if period is None else round(period * 1_000_000)
        return CpuSpec(pid=pid, unit=unit, container=container, cgroup=cgroup_path,
                       limit=limit, period_us=period_us)

    run_inject(spec, duration, lease, wait, dry_run, as_json)


@inject.command(epilog=CGROUP_TARGETS)
@cgroup_target_options
@click.option("--max", "max_size", type=SIZE, default=None, metavar="SIZE",
              help="Hard cap (256M, 1G ...): beyond it the kernel reclaims, then OOM-kills.")
@click.option("--high", "high_size", type=SIZE, default=None, metavar="SIZE",
              help="cgroup v2 only: above this the kernel throttles allocation, without a kill.")
@timing_options
def memory(pid: int | None, unit: str | None, container: str | None, cgroup_path: str | None,
           max_size: int | None, high_size: int | None, duration: float | None,
           lease: float | None, wait: bool, dry_run: bool, as_json: bool) -> None:
    """Cap memory with the cgroup memory controller.

    cgroup v1: memory.limit_in_bytes; v2: memory.max and memory.high. Sizes
    use binary units (K, M, G = 1024, 1024^2, 1024^3 bytes). For a --pid
    target, memory the process already holds stays charged where it was: the
    limit governs what it allocates from now on. `hostchaos status ID` shows
    usage, peak and OOM kills.

    \b
    Examples:
      sudo hostchaos inject memory --pid 4242 --max 256M --for 5m
      sudo hostchaos inject memory --unit worker.service --max 1G --high 800M --for 10m
    """
    from hostchaos.faults.resources import MemorySpec

    run_inject(lambda: MemorySpec(pid=pid, unit=unit, container=container, cgroup=cgroup_path,
                                  max_bytes=max_size, high_bytes=high_size),
               duration, lease, wait, dry_run, as_json)


@inject.command(epilog=CGROUP_TARGETS)
@cgroup_target_options
@click.option("--max", "max_tasks", type=int, required=True, metavar="N",
              help="Most tasks (processes + threads, the target's own included) at once.")
@timing_options
def pids(pid: int | None, unit: str | None, container: str | None, cgroup_path: str | None,
         max_tasks: int, duration: float | None, lease: float | None, wait: bool,
         dry_run: bool, as_json: bool) -> None:
    """Cap the number of tasks with the cgroup pids.max.

    Once the cgroup holds N tasks, fork(2), clone(2) and thread creation fail
    with EAGAIN; tasks already running are not touched.

    \b
    Examples:
      sudo hostchaos inject pids --pid 4242 --max 5 --for 2m
      sudo hostchaos inject pids --container web --max 64 --for 10m
    """
    from hostchaos.faults.resources import PidsSpec

    run_inject(lambda: PidsSpec(pid=pid, unit=unit, container=container, cgroup=cgroup_path,
                                max=max_tasks),
               duration, lease, wait, dry_run, as_json)


@inject.command()
@click.option("--pid", "pid_list", type=int, multiple=True, metavar="PID",
              help="A process (repeatable).")
@click.option("--name", default=None, metavar="NAME",
              help="Every process with this name (comm or executable basename).")
@click.option("--unit", default=None, metavar="NAME",
              help="Every process of a systemd unit.")
@click.option("--container", default=None, metavar="NAME|ID",
              help="Every process of a running container.")
@click.option("--soft", type=int, required=True, metavar="N",
              help="Soft limit: the process can hold at most N open descriptors.")
@click.option("--hard", type=int, default=None, metavar="N",
              help="Hard limit (default: unchanged). Must be at least --soft.")
@timing_options
def nofile(pid_list: tuple[int, ...], name: str | None, unit: str | None, container: str | None,
           soft: int, hard: int | None, duration: float | None, lease: float | None,
           wait: bool, dry_run: bool, as_json: bool) -> None:
    """Set the open-files limit (RLIMIT_NOFILE) of processes.

    Uses prlimit(2) on each running target process.

    A process holding --soft descriptors gets EMFILE from its next open(2),
    socket(2), pipe(2) or accept(2); descriptors it already holds stay open.
    --name, --unit and --container take every matching process at inject time
    (never PID 1, kernel threads or hostchaos itself). Rollback writes each
    process's original soft and hard limits back and reads them back.

    \b
    Examples:
      sudo hostchaos inject nofile --pid 4242 --soft 64 --for 5m
      sudo hostchaos inject nofile --name nginx --soft 128 --hard 256 --for 2m
    """
    from hostchaos.faults.resources import NofileSpec

    run_inject(lambda: NofileSpec(pids=pid_list, name=name, unit=unit, container=container,
                                  soft=soft, hard=hard),
               duration, lease, wait, dry_run, as_json)
