"""The one base class of this package's errors: the command line prints their message, not a traceback."""


class PacsEmbedError(Exception):
    """Something the user can fix (a file, an argument, a dataset); the message says what."""


def add_note(e: BaseException, note: str) -> None:
    """``e.add_note(note)``: Python 3.11's exception notes; on 3.10 the same ``__notes__`` list (the CLI prints it,
    3.10's tracebacks do not)."""
    if hasattr(e, "add_note"):
        e.add_note(note)
    else:
        e.__notes__ = [*getattr(e, "__notes__", []), note]


class AlreadySaid(PacsEmbedError, RuntimeError):
    """An error whose message was printed where it happened (a torchrun rank): the command line only exits with 2."""


class CacheError(PacsEmbedError, RuntimeError):
    """An embedding cache that is missing, damaged, inconsistent, or of another model; the message names the file."""


class ArgumentError(PacsEmbedError, ValueError):
    """An argument or input value the user can fix (a ValueError, so code that catches ValueError still does)."""


class ArgumentTypeError(PacsEmbedError, TypeError):
    """An argument of the wrong kind (a TypeError, so code that catches TypeError still does)."""


class UnknownName(PacsEmbedError, KeyError):
    """A name (method, domain, description, prompt) that is not known here; the message says which are."""

    def __str__(self) -> str:   # KeyError's own str() quotes the message
        return str(self.args[0]) if self.args else ""


class ExtractionError(PacsEmbedError, RuntimeError):
    """An extraction that cannot go on (unreadable images under --strict, another model's cache, a journal of other
    settings, a decoding worker that died); the message says what is kept and how to go on."""
