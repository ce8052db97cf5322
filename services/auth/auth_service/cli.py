"""``flask --app auth_service create-user NAME``: make an account from the command line."""
import click
from flask import Blueprint

from . import users

cli = Blueprint("cli", __name__, cli_group=None)


@cli.cli.command("create-user")
@click.argument("username")
@click.password_option()
def create_user_command(username, password):
    """Create USERNAME (the password is asked for twice, or taken from --password)."""
    error = users.username_error(username) or users.password_error(password)
    if error:
        raise click.UsageError(error)
    try:
        users.create_user(username, password)
    except users.UsernameTaken:
        raise click.ClickException(f"{username} is taken") from None
    click.echo(f"created {username}")
