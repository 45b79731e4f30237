"""One error type for everything a user can get wrong, and the one check that raises it.

Scripts catch ``UserError`` at the top (``utils.cli.run_main``) and print its
message as one line with exit code 2: bad arguments, missing files and
mismatched checkpoints are the user's to fix, and a traceback would hide that.
Library code raises it with messages about its own arguments ("steps must be
positive"); each script's config checks its flags first, in the flags' names.
"""


class UserError(Exception):
    """A problem with the user's input: printed as one line, exit code 2."""


def require(condition: bool, message: str) -> None:
    """Raise a ``UserError`` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise UserError(message)
