"""One exception type for mistakes a user can fix; the CLI prints it as a single line."""


class UserError(Exception):
    """Bad input: the message names the bad value and what is allowed."""


def user_errors(fn):
    """Decorator for CLI commands: a UserError becomes one line on stderr and exit code 2, no traceback; a
    Ctrl-C that reaches the command (a second press, or one outside training) is one line and exit code 130."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            import typer

            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            import typer

            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None

    return wrapper


def choose(kind: str, value: str, choices) -> str:
    """Return ``value`` if it is one of ``choices``, else raise a UserError that lists them."""
    choices = sorted(choices)
    if value not in choices:
        raise UserError(f"unknown {kind} '{value}'; choose one of: {', '.join(choices)}")
    return value
