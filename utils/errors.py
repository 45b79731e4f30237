"""One error type for everything a user can get wrong.

Scripts catch ``UserError`` at the top (``utils.cli.run_main``) and print its
message as one line with exit code 2: bad arguments, missing files and
mismatched checkpoints are the user's to fix, and a traceback would hide that.
"""


class UserError(Exception):
    """A problem with the user's input: printed as one line, exit code 2."""
