"""User-facing errors: one clear line naming the file and the problem."""


class UserError(Exception):
    """Bad input or configuration. The CLI prints the message on one line and exits 2."""
