"""The one base class of this package's errors: the command line prints their message, not a traceback."""


class PacsEmbedError(Exception):
    """Something the user can fix (a file, an argument, a dataset); the message says what."""
