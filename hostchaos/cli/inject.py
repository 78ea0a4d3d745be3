"""`hostchaos inject KIND ...`: apply one fault with a deadline."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from typing import Any, TypeVar

import click

from hostchaos.cli.common import DURATION, make_engine

F = TypeVar("F", bound=Callable[..., Any])

TIMING_HELP = """\b
Every fault ends: at --for (default 60s, capped by max_duration in
/etc/hostchaos/config.toml, default 1h), or earlier when a --lease is not
renewed with `hostchaos extend ID`. A detached guardian process enforces
this even if this command is killed."""


class InjectGroup(click.Group):
    """`hostchaos inject`: one command per registered kind, made when first asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        from hostchaos.faults import KINDS

        return [*KINDS, *(name for name in self.commands if name not in KINDS)]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        from hostchaos.faults import KINDS, fault_class

        command = super().get_command(ctx, cmd_name)
        if command is not None or cmd_name not in KINDS:
            return command
        from hostchaos.cli.kind_command import kind_command

        return kind_command(cmd_name, fault_class(cmd_name), run_kind, timing_params(),
                            epilog=TIMING_HELP)


@click.group(cls=InjectGroup, epilog=TIMING_HELP)
def inject() -> None:
    """Apply a fault. Prints the fault id; `hostchaos rollback ID` takes it out."""


def timing_params() -> list[click.Parameter]:
    """The options every kind shares: when the fault ends, and how the result is shown."""
    return [
        click.Option(["--for", "duration"], type=DURATION, default=None, metavar="DURATION",
                     help="How long the fault lasts (30s, 5m, 1h; default 60s)."),
        click.Option(["--lease"], type=DURATION, default=None, metavar="DURATION",
                     help="Roll back unless renewed (`hostchaos extend ID`) within this long."),
        click.Option(["--wait"], is_flag=True,
                     help="Stay in the foreground renewing the lease until the deadline or "
                          "Ctrl-C/SIGTERM, then roll back."),
        click.Option(["--dry-run"], is_flag=True,
                     help="Check everything and print the plan; change nothing."),
        click.Option(["--json", "as_json"], is_flag=True,
                     help="Print machine-readable JSON on stdout."),
    ]


def run_kind(kind: str, fault_class: type[Any], given: dict[str, Any]) -> None:
    """A generated `inject <kind>` command: options -> spec -> engine -> output."""
    from hostchaos.faults.options import spec_from_options

    timing = {k: given.pop(k) for k in ("duration", "lease", "wait", "dry_run", "as_json")}
    run_inject(lambda: spec_from_options(fault_class.spec_type, given), **timing)


def timing_options(func: F) -> F:
    params = func.__dict__.setdefault("__click_params__", [])
    params.extend(reversed(timing_params()))  # click reads decorator params bottom-up
    return func


def network_target_options(func: F) -> F:
    """Target and selector options shared by every network kind."""
    options = [
        click.option("--iface", required=True, metavar="NAME",
                     help="Interface whose traffic is affected."),
        click.option("--netns", default=None, metavar="NAME",
                     help="Named network namespace (see `ip netns list`) holding --iface."),
        click.option("--pid", type=int, default=None, metavar="PID",
                     help="Use the network namespace of this process."),
        click.option("--container", default=None, metavar="NAME|ID",
                     help="Use the network namespace of this container "
                          "(docker, podman, nerdctl or crictl)."),
        click.option("--direction", type=click.Choice(["egress", "ingress", "both"]),
                     default="egress", show_default=True,
                     help="Outgoing traffic, incoming traffic (through an IFB device), or both."),
        click.option("--dst", multiple=True, metavar="CIDR",
                     help="Only traffic to this IPv4/IPv6 address or network (repeatable)."),
        click.option("--src", multiple=True, metavar="CIDR",
                     help="Only traffic from this local address or network (repeatable)."),
        click.option("--host", "hosts", multiple=True, metavar="NAME",
                     help="Only traffic to this host: all its A and AAAA records, resolved now "
                          "and recorded (repeatable)."),
        click.option("--dport", type=int, default=None, help="Only this destination port."),
        click.option("--sport", type=int, default=None, help="Only this source port."),
        click.option("--protocol", type=click.Choice(["tcp", "udp", "icmp", "icmpv6"]),
                     default=None, help="Only this protocol."),
        click.option("--protect", multiple=True, metavar="CIDR[:PORT]",
                     help="Never touch traffic with this peer (and port); repeatable."),
        click.option("--no-protect-ssh", "no_protect_ssh", is_flag=True,
                     help="Do not exempt the operator's SSH sessions (on by default)."),
        click.option("--force", is_flag=True,
                     help="Replace a root qdisc set up by someone else: its whole tree is "
                          "snapshotted and put back exactly on rollback."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


NETWORK_OPTION_NAMES = ("iface", "netns", "pid", "container", "direction", "dst", "src", "hosts",
                        "dport", "sport", "protocol", "protect", "no_protect_ssh", "force")


def network_target(options: dict[str, Any]) -> dict[str, Any]:
    """Spec arguments from the shared network options: resolves --host, --container, --pid."""
    from hostchaos.errors import SpecError, TargetNotFoundError
    from hostchaos.system.procs import start_ticks

    out: dict[str, Any] = {
        "iface": options["iface"], "netns": options["netns"], "direction": options["direction"],
        "dst": list(options["dst"]), "src": list(options["src"]),
        "hosts": list(options["hosts"]), "dport": options["dport"], "sport": options["sport"],
        "protocol": options["protocol"], "protect": list(options["protect"]),
        "protect_ssh": not options["no_protect_ssh"], "force": options["force"],
    }
    given = [n for n in ("netns", "pid", "container") if options[n] is not None]
    if len(given) > 1:
        raise SpecError("give at most one of --netns, --pid and --container")
    pid = options["pid"]
    if options["container"] is not None:
        from hostchaos.system.containers import container_pid, valid_name

        if not valid_name(options["container"]):
            raise SpecError(f"--container {options['container']!r} is not a valid name or id")
        pid, _runtime = container_pid(options["container"])
        out["container"] = options["container"]
    if pid is not None:
        if pid <= 0:
            raise SpecError(f"--pid must be a positive number, got {pid}")
        ticks = start_ticks(pid)
        if ticks is None:
            raise TargetNotFoundError(f"process {pid} not found")
        out["pid"], out["pid_start_ticks"] = pid, ticks
    for name in options["hosts"]:
        out["dst"].extend(resolve_host(name))
    return out


def resolve_host(name: str) -> list[str]:
    """Every A and AAAA address of ``name``, as host CIDRs."""
    import socket

    from hostchaos.errors import TargetNotFoundError

    try:
        infos = socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as exc:
        raise TargetNotFoundError(f"host {name} does not resolve ({exc})") from exc
    addresses = sorted({str(info[4][0]).split("%")[0] for info in infos})
    return [f"{a}/128" if ":" in a else f"{a}/32" for a in addresses]


def split_options(kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(network options, the rest) from a command's keyword arguments."""
    network = {k: kwargs.pop(k) for k in NETWORK_OPTION_NAMES}
    return network, kwargs


class _Terminated(Exception):
    pass


def run_inject(spec_factory: Callable[[], Any], duration: float | None, lease: float | None,
               wait: bool, dry_run: bool, as_json: bool) -> None:
    from hostchaos.cli.output import clock_time, emit_json, record_summary
    from hostchaos.quantities import format_duration

    spec = spec_factory()
    engine = make_engine()
    if dry_run:
        plan = engine.plan(spec, duration, lease)
        if as_json:
            emit_json(plan)
        else:
            click.echo(f"would {plan['plan']} for {format_duration(plan['duration'])}"
                       + (f" (lease {format_duration(lease)})" if lease else "")
                       + "; nothing was changed")
        return
    record = engine.inject(spec, duration, lease)
    if as_json:
        emit_json(record_summary(record))
    else:
        click.echo(record.id)
        click.echo(f"{record.kind}: {record.summary}, "
                   f"until {clock_time(record.expires_at)}; "
                   f"roll back with: hostchaos rollback {record.id}", err=True)
    if wait:
        _wait_and_rollback(engine, record.id)


def _wait_and_rollback(engine: Any, fault_id: str) -> None:
    from hostchaos.errors import ConflictError, TargetNotFoundError

    def on_term(signum: int, frame: Any) -> None:
        raise _Terminated()

    previous = signal.signal(signal.SIGTERM, on_term)
    reason = "deadline reached (--wait)"
    code = 0
    try:
        while True:
            record = engine.journal.load(fault_id)
            if not record.is_open:
                return
            now = time.time()
            if now >= record.expires_at:
                break
            step = record.lease_seconds / 3 if record.lease_seconds else 1.0
            time.sleep(max(0.05, min(step, record.expires_at - now)))
            if record.lease_seconds:
                try:
                    engine.extend(fault_id)
                except (ConflictError, TargetNotFoundError):
                    return
    except (KeyboardInterrupt, _Terminated):
        reason, code = "interrupted while waiting (--wait)", 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    engine.rollback(fault_id, reason)
    click.echo(f"rolled back {fault_id}: {reason}", err=True)
    if code:
        raise click.exceptions.Exit(code)


def _network_command(spec_name: str, kind_args: Callable[[dict[str, Any]], dict[str, Any]]
                     ) -> Callable[..., None]:
    def run(**kwargs: Any) -> None:
        from hostchaos.faults import network as network_faults

        timing = {k: kwargs.pop(k) for k in ("duration", "lease", "wait", "dry_run", "as_json")}
        network, rest = split_options(kwargs)
        spec_type = getattr(network_faults, spec_name)
        run_inject(lambda: spec_type(**network_target(network), **kind_args(rest)), **timing)

    return run


@inject.command()
@network_target_options
@click.option("--ms", type=float, required=True, help="Delay in milliseconds.")
@click.option("--jitter", type=float, default=0.0, show_default=True,
              help="Random variation of the delay, in milliseconds.")
@click.option("--correlation", type=float, default=0.0, show_default=True,
              help="Percent correlation of successive delay variations (needs --jitter).")
@click.option("--distribution", type=click.Choice(["normal", "pareto", "paretonormal", "uniform"]),
              default=None, help="Shape of the jitter (needs --jitter; default uniform).")
@timing_options
def latency(**kwargs: Any) -> None:
    """Delay selected IP packets (netem).

    ARP, IPv6 neighbour discovery and the operator's SSH session are never
    delayed. The interface's original root qdisc is put back on rollback.

    \b
    Examples:
      sudo hostchaos inject latency --iface eth0 --ms 100 --jitter 10 --for 5m
      sudo hostchaos inject latency --iface eth0 --ms 300 --host db.internal --direction both
    """
    _network_command("LatencySpec", lambda o: {
        "ms": o["ms"], "jitter_ms": o["jitter"], "correlation": o["correlation"],
        "distribution": o["distribution"]})(**kwargs)


def _ge(text: str | None) -> list[float] | None:
    from hostchaos.errors import SpecError

    if text is None:
        return None
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise SpecError(f"--ge {text!r}: expected p,r[,1-h[,1-k]] as percentages") from None


@inject.command()
@network_target_options
@click.option("--percent", type=float, default=None, help="Share of packets to drop (0-100].")
@click.option("--correlation", type=float, default=0.0, show_default=True,
              help="Percent correlation with the previous packet's fate (bursty loss).")
@click.option("--ge", default=None, metavar="P,R[,1-H[,1-K]]",
              help="Gilbert-Elliott model instead of --percent: P good->bad, R bad->good, "
                   "1-H loss in bad state (default 100), 1-K loss in good state (default 0), "
                   "all percentages.")
@timing_options
def loss(**kwargs: Any) -> None:
    """Drop a share of selected IP packets (netem).

    \b
    Examples:
      sudo hostchaos inject loss --iface eth0 --percent 30 --for 2m
      sudo hostchaos inject loss --iface eth0 --ge 5,50 --dst 10.0.0.0/8
    """
    _network_command("LossSpec", lambda o: {
        "percent": o["percent"], "correlation": o["correlation"], "ge": _ge(o["ge"])})(**kwargs)


@inject.command()
@network_target_options
@click.option("--percent", type=float, required=True, help="Share of packets to corrupt.")
@click.option("--correlation", type=float, default=0.0, show_default=True,
              help="Percent correlation with the previous packet.")
@timing_options
def corrupt(**kwargs: Any) -> None:
    """Flip a random bit in a share of selected IP packets (netem).

    \b
    Example:
      sudo hostchaos inject corrupt --iface eth0 --percent 5 --protocol udp
    """
    _network_command("CorruptSpec", lambda o: {
        "percent": o["percent"], "correlation": o["correlation"]})(**kwargs)


@inject.command()
@network_target_options
@click.option("--percent", type=float, required=True, help="Share of packets sent twice.")
@click.option("--correlation", type=float, default=0.0, show_default=True,
              help="Percent correlation with the previous packet.")
@timing_options
def duplicate(**kwargs: Any) -> None:
    """Send a share of selected IP packets twice (netem).

    \b
    Example:
      sudo hostchaos inject duplicate --iface eth0 --percent 10
    """
    _network_command("DuplicateSpec", lambda o: {
        "percent": o["percent"], "correlation": o["correlation"]})(**kwargs)


@inject.command()
@network_target_options
@click.option("--percent", type=float, required=True,
              help="Share of packets sent at once; the rest wait --ms.")
@click.option("--ms", type=float, default=None, help="Delay of the other packets (required).")
@click.option("--gap", type=int, default=0, show_default=True,
              help="Reorder every Nth packet instead of at random.")
@click.option("--correlation", type=float, default=0.0, show_default=True,
              help="Percent correlation with the previous packet.")
@timing_options
def reorder(**kwargs: Any) -> None:
    """Reorder selected IP packets (netem delay + reorder).

    Reordering needs a delay: the packets not picked wait --ms, so picked
    ones overtake them.

    \b
    Example:
      sudo hostchaos inject reorder --iface eth0 --percent 25 --ms 10
    """
    _network_command("ReorderSpec", lambda o: {
        "percent": o["percent"], "ms": o["ms"], "gap": o["gap"],
        "correlation": o["correlation"]})(**kwargs)


@inject.command()
@network_target_options
@click.option("--rate", required=True, metavar="RATE",
              help="Bandwidth: 1mbit, 500kbit, 10mbps (bytes/s) ...")
@click.option("--burst", default=None, metavar="SIZE",
              help="Token bucket size (default rate/250, at least 3000 bytes).")
@click.option("--limit", default=None, metavar="SIZE",
              help="Queue length in bytes (default: 250 ms at the rate).")
@timing_options
def rate(**kwargs: Any) -> None:
    """Limit the bandwidth of selected traffic (tbf, no netem needed).

    \b
    Examples:
      sudo hostchaos inject rate --iface eth0 --rate 1mbit
      sudo hostchaos inject rate --container web --iface eth0 --rate 500kbit --for 10m
    """
    _network_command("RateSpec", lambda o: {
        "rate": o["rate"], "burst": o["burst"], "limit": o["limit"]})(**kwargs)


@inject.command()
@network_target_options
@timing_options
def partition(**kwargs: Any) -> None:
    """Cut selected traffic off (100% loss, netem), in the chosen direction(s).

    Unselected traffic, ARP, neighbour discovery, the operator's SSH session
    and --protect peers keep flowing.

    \b
    Examples:
      sudo hostchaos inject partition --iface eth0 --dst 10.0.3.0/24 --direction both
      sudo hostchaos inject partition --netns blue --iface veth0 --protect 192.0.2.10
    """
    _network_command("PartitionSpec", lambda o: {})(**kwargs)
