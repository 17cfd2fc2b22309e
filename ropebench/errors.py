"""One exception type for mistakes a user can fix; the CLI prints it as a single line."""


class UserError(Exception):
    """Bad input: the message names the bad value and what is allowed."""


def choose(kind: str, value: str, choices) -> str:
    """Return ``value`` if it is one of ``choices``, else raise a UserError that lists them."""
    choices = sorted(choices)
    if value not in choices:
        raise UserError(f"unknown {kind} '{value}'; choose one of: {', '.join(choices)}")
    return value
