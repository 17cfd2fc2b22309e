"""The `ropebench` program around the Typer app: click's own refusals as one `error:` line, like every other."""

from __future__ import annotations

import sys

import typer


def run(app: typer.Typer, args: list[str] | None = None) -> None:
    """The `ropebench` program (``args``: the command line, default sys.argv). Click's own refusals (an unknown
    command or option, a missing argument, a value of the wrong type) are one `error:` line and exit code 2, like
    every other refusal, instead of click's boxed usage message; everything else is as click runs it."""
    # Click's exception classes as this Typer raises them: click's own, or the copy newer Typers vendor.
    exceptions = sys.modules[typer.BadParameter.__module__]
    try:
        code = app(args=args, prog_name="ropebench", standalone_mode=False)
    except exceptions.UsageError as exc:
        code = exc.exit_code
        # `ropebench` alone prints the help (no_args_is_help): it is shown already, and needs no error line.
        if type(exc).__name__ != "NoArgsIsHelpError":
            typer.echo(f"error: {_usage_line(exc)}", err=True)
    except exceptions.ClickException as exc:
        code = exc.exit_code
        typer.echo(f"error: {' '.join(exc.format_message().split())}", err=True)
    except typer.Abort:
        code = 1
        typer.echo("aborted", err=True)
    # standalone_mode=False returns a command's exit code (typer.Exit) or its return value (None: success).
    sys.exit(code if isinstance(code, int) else 0)


def _usage_line(exc) -> str:
    """Click's message on one line, then which --help describes the usage."""
    from typer.core import TyperGroup

    message = " ".join(exc.format_message().split())
    ctx = getattr(exc, "ctx", None)
    if ctx is None:  # some parser errors (an option missing its value) come without one
        return f"{message} (ropebench COMMAND --help lists a command's arguments and options)"
    what = "the commands" if isinstance(ctx.command, TyperGroup) else "its arguments and options"
    return f"{message} ({ctx.command_path} --help lists {what})"
