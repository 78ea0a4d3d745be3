"""`hostchaos demo`: a real, measured fault in a sandbox that is removed afterwards."""

from __future__ import annotations

import click

from hostchaos.cli.common import make_engine


@click.command()
@click.option("--ms", type=float, default=100.0, show_default=True, help="Latency to inject.")
@click.option("--percent", type=float, default=30.0, show_default=True, help="Loss to inject.")
def demo(ms: float, percent: float) -> None:
    """Show a fault biting, in two throwaway network namespaces.

    Builds namespaces joined by a veth pair, measures round-trip time and loss
    with ping, injects latency and then loss through the normal engine (journal,
    warden, deadline), measures again, rolls back, measures again, and
    deletes the sandbox. Needs root and sch_netem. Nothing outside the sandbox
    changes.
    """
    from hostchaos.faults.latency import LatencySpec
    from hostchaos.faults.loss import LossSpec
    from hostchaos.sandbox import NetnsPair

    engine = make_engine()
    with NetnsPair(prefix="hc-demo") as pair:
        click.echo(f"sandbox: {pair.a} [{pair.iface_a} {pair.addr_a}] <-> "
                   f"{pair.b} [{pair.iface_b} {pair.addr_b}]")
        before_config = pair.tc_config()
        base = pair.ping(count=10, interval=0.05)
        click.echo(f"baseline:        rtt {base.rtt_avg_ms:.2f} ms, loss {base.loss_percent:.0f}%")

        record = engine.inject(LatencySpec(iface=pair.iface_a, netns=pair.a, ms=ms), 120.0)
        hit = pair.ping(count=10, interval=0.05)
        click.echo(f"latency {ms:g} ms:  rtt {hit.rtt_avg_ms:.2f} ms   ({record.id})")
        engine.rollback(record.id)

        record = engine.inject(LossSpec(iface=pair.iface_a, netns=pair.a, percent=percent), 120.0)
        hit = pair.ping(count=300, interval=0.002, timeout=1)
        click.echo(f"loss {percent:g}%:        loss {hit.loss_percent:.1f}% of {hit.sent} "
                   f"pings   ({record.id})")
        engine.rollback(record.id)

        after = pair.ping(count=10, interval=0.05)
        same = pair.tc_config() == before_config
        click.echo(f"after rollback:  rtt {after.rtt_avg_ms:.2f} ms, loss "
                   f"{after.loss_percent:.0f}%, qdiscs as before: {'yes' if same else 'NO'}")
    click.echo("sandbox removed")
