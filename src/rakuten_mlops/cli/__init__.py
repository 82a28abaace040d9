"""The `rakuten-mlops` command line: one Typer app, one sub-command group per stage."""

from __future__ import annotations

import typer

from rakuten_mlops import __version__
from rakuten_mlops.cli._common import configure_logging
from rakuten_mlops.cli.continuous import register_continuous_commands
from rakuten_mlops.cli.data import data_app
from rakuten_mlops.cli.model import register_model_commands
from rakuten_mlops.cli.monitoring import monitor_app
from rakuten_mlops.cli.registry import registry_app
from rakuten_mlops.cli.score import register_score_command
from rakuten_mlops.cli.secrets import secrets_app
from rakuten_mlops.cli.service import register_service_commands
from rakuten_mlops.cli.users import register_users_commands

app = typer.Typer(
    name="rakuten-mlops",
    help="Classify Rakuten France products: data, training, evaluation, prediction, registry.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(data_app, name="data")
register_model_commands(app)
app.add_typer(registry_app, name="registry")
register_service_commands(app)
app.add_typer(monitor_app, name="monitor")
register_continuous_commands(app)
register_users_commands(app)
register_score_command(app)
app.add_typer(secrets_app, name="secrets")


def _version(value: bool) -> None:
    if value:
        typer.echo(__version__)
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    configure_logging()
