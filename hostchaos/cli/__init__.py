"""The `hostchaos` command line. Commands are thin: parse, build a spec, call the engine, print.

Nothing here imports pyroute2 or psutil at module level, so `--help` and
argument errors answer in a few tens of milliseconds.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from hostchaos import __version__
from hostchaos.errors import HostchaosError, one_line

EPILOG = """\b
Exit codes: 0 ok, 2 bad input, 3 host lacks a precondition, 4 target not found,
5 conflict or protected target, 6 kernel refused (partial work rolled back),
7 rollback failed (record kept), 8 state directory unusable.
\b
Environment: HOSTCHAOS_STATE_DIR (default /var/lib/hostchaos),
HOSTCHAOS_CONFIG (default /etc/hostchaos/config.toml),
HOSTCHAOS_SOCKET (the agent's socket, default /run/hostchaos/hostchaos.sock).
"""


class HostchaosGroup(click.Group):
    """Turns every hostchaos error into one line on stderr and its exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except HostchaosError as exc:
            _fail(ctx, str(exc), exc.exit_code, exc.to_dict())
        except KeyboardInterrupt:
            _fail(ctx, "interrupted", 130, {"type": "interrupted", "message": "interrupted"})
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except Exception as exc:  # a bug: say so in one line unless --debug
            if ctx.find_root().params.get("debug"):
                _print_traceback()
            _fail(ctx, f"internal error: {type(exc).__name__}: {exc} (rerun with --debug)", 1,
                  {"type": "internal", "message": str(exc)})


def _fail(ctx: click.Context, message: str, code: int, data: dict[str, Any]) -> None:
    if ctx.find_root().params.get("debug"):
        _print_traceback()
    if _wants_json():
        from hostchaos.cli.output import emit_json

        emit_json({"error": data})
    click.echo(f"hostchaos: {one_line(message)}", err=True)
    ctx.exit(code)


def _print_traceback() -> None:
    import traceback  # only with --debug: not on the path of `--help`

    traceback.print_exc()


def _wants_json() -> bool:
    return "--json" in sys.argv[1:]


@click.group(cls=HostchaosGroup, epilog=EPILOG,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="hostchaos")
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
def cli(debug: bool) -> None:
    """Inject real faults into this host or its containers, and always take them back out.

    Every fault has a deadline (--for) enforced by the warden, one detached
    process per state directory (started when needed, gone when no fault is
    open), so it is rolled back even if hostchaos itself is killed; any command
    restarts a killed warden. Faults are recorded in a journal before the host
    is changed; `hostchaos sweep` rolls back anything whose deadline passed or
    whose warden is gone.

    \b
    Examples:
      sudo hostchaos inject latency --iface eth0 --ms 100 --for 5m
      sudo hostchaos inject loss --netns blue --iface veth0 --percent 30 --lease 10s --wait
      sudo hostchaos list
      sudo hostchaos rollback --all
    """


def _register() -> None:
    from hostchaos.cli import (
        agent_command,
        completion,
        demo,
        doctor,
        exec_command,
        inject,
        manage,
        run,
    )

    cli.add_command(inject.inject)
    cli.add_command(exec_command.exec_command)
    cli.add_command(run.run)
    cli.add_command(completion.completion)
    for command in manage.COMMANDS:
        cli.add_command(command)
    cli.add_command(doctor.doctor)
    cli.add_command(demo.demo)
    cli.add_command(agent_command.agent)


_register()


def main() -> None:
    """Entry point: click usage errors become one line and exit code 2, like SpecError."""
    try:
        code = cli.main(prog_name="hostchaos", standalone_mode=False)
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except click.exceptions.NoArgsIsHelpError as exc:  # `hostchaos inject`: the help, on stdout
        click.echo(exc.format_message())
        click.echo(f"hostchaos: give a command after '{exc.ctx.command_path}' (see the help "
                   "above)", err=True)
        code = exc.exit_code
    except click.ClickException as exc:
        if _wants_json():
            from hostchaos.cli.output import emit_json

            emit_json({"error": {"type": "spec", "message": exc.format_message(),
                                 "exit_code": exc.exit_code}})
        click.echo(f"hostchaos: {one_line(exc.format_message())}", err=True)
        code = exc.exit_code
    except click.exceptions.Abort:
        click.echo("hostchaos: interrupted", err=True)
        code = 130
    sys.exit(code if isinstance(code, int) else 0)
