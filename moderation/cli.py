"""The ``moderation`` command: one entry point, subcommands wired from each stage's own ``cli`` module."""

from __future__ import annotations

import sys

import click

from moderation.errors import ModerationError
from moderation.settings import Settings, load_settings


@click.group()
@click.version_option(package_name="moderation")
def cli() -> None:
    """Real-time multimodal content moderation: Kafka posts in, verdicts out."""


@cli.command()
def up() -> None:
    """Start the embedded broker and cache on loopback (idempotent) and create the topics."""
    from moderation.embedded.stack import up as stack_up

    state, started = stack_up(load_settings())
    verb = "started" if started else "already running"
    click.echo(
        f"embedded stack {verb}: kafka {state.kafka_bootstrap} (pid {state.broker.pid}), "
        f"redis {state.redis_url} (pid {state.cache.pid}); topics: {', '.join(state.topics)}"
    )


@cli.command()
def down() -> None:
    """Stop exactly the processes that `moderation up` started."""
    from moderation.embedded.stack import down as stack_down

    stopped = stack_down(load_settings())
    click.echo(f"stopped: {', '.join(stopped)}" if stopped else "embedded stack not running")


@cli.command()
def status() -> None:
    """Report the embedded stack's processes; exits 1 when it is not (fully) running."""
    from moderation.embedded.stack import read_state

    settings = load_settings()
    state = read_state(settings)
    if state is None:
        click.echo(f"embedded stack not running (no state in {settings.state_dir})")
        sys.exit(1)
    healthy = True
    for service in state.services():
        alive = service.alive()
        healthy &= alive
        click.echo(
            f"{service.name:<7} pid {service.pid:<8} port {service.port:<6} "
            f"{'running' if alive else 'NOT RUNNING'}  log {service.log}"
        )
    sys.exit(0 if healthy else 1)


@cli.command(name="settings")
@click.option("--markdown", is_flag=True, help="Print the table of settings for the README.")
def show_settings(markdown: bool) -> None:
    """Print every setting with its environment variable, default and meaning."""
    click.echo(settings_table() if markdown else load_settings().model_dump_json(indent=2))


def settings_table() -> str:
    """The README's settings table, generated from the settings' own descriptions."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        text = str(default)
        shown = "(empty)" if default in (None, "", {}) else f"`{text}`"
        rows.append(f"| `MODERATION_{name.upper()}` | {shown} | {field.description} |")
    return "\n".join(rows)


# Each module exports ``COMMANDS``: the click commands of its stage.
STAGE_COMMAND_MODULES = (
    "moderation.ingest.cli",
    "moderation.encode.cli",
    "moderation.fuse.cli",
    "moderation.hashlists.cli",
    "moderation.demo.run",
    "moderation.bench.cli",
)


def _register_stage_commands() -> None:
    """Wire the commands that live beside the stages they drive."""
    import importlib

    for module in STAGE_COMMAND_MODULES:
        for command in importlib.import_module(module).COMMANDS:
            cli.add_command(command)


def main() -> None:
    """Console entry point: project errors print as one line and exit 2, never as a traceback."""
    _register_stage_commands()
    try:
        cli(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except ModerationError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
