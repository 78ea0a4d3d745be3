"""`hostchaos completion bash|zsh|fish`: the shell's completion script for hostchaos."""

from __future__ import annotations

import click

HELP = """Print the completion script for SHELL (commands, fault kinds, options).

\b
Load it for this shell, or install it:
  source <(hostchaos completion bash)
  hostchaos completion bash > /etc/bash_completion.d/hostchaos
  hostchaos completion zsh > "${fpath[1]}/_hostchaos"
  hostchaos completion fish > ~/.config/fish/completions/hostchaos.fish
"""


@click.command(help=HELP)
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    from click.shell_completion import get_completion_class

    from hostchaos.cli import cli

    cls = get_completion_class(shell)
    assert cls is not None
    click.echo(cls(cli, {}, "hostchaos", "_HOSTCHAOS_COMPLETE").source())
