"""The one exception type users see. Messages say what was wrong and what to do."""


class TlganError(ValueError):
    """Bad input or state that the user can fix; the CLI prints the message without a traceback."""
