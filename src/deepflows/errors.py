"""User-facing errors: one clear line naming the file and the problem."""


class UserError(Exception):
    """Bad input or configuration. The CLI prints the message on one line and exits 2."""


def abbreviated(names) -> str:
    """The first five names, comma-separated, then ', ...' if there are more: enough for one error line."""
    names = list(names)
    return ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
