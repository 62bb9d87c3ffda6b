"""Which failures are the user's and which are ours: the one rule every command follows.

A failure the user can cause and fix (a bad value, a missing or unreadable file, a result asked for before
it was computed) is raised as one of :data:`USER_ERRORS` with a message that names the value or file and
says what to do; the commands print it as ``Error: <message>`` and exit with status 1. Anything else is a
bug in bayesrobust: the commands print its type and message and ask for a report (``-v`` shows the
traceback), exit status :data:`BUG_EXIT_CODE`. ``KeyError`` and ``IndexError`` are not user errors, so a
failed lookup in our own code is never mistaken for bad input: where user input is looked up, the library
checks it and raises :class:`UserError` (or ``ValueError``) naming the valid values.

This module imports nothing heavy; it is the one place that defines the rule.
"""

from __future__ import annotations

import re

__all__ = ["BUG_EXIT_CODE", "BUG_NOTE", "INTERRUPT_EXIT_CODE", "USER_ERRORS", "DivergenceError", "DrawOutOfRangeError",
           "UserError", "is_user_error", "one_line", "user_message"]


class UserError(ValueError):
    """A failure caused by the user's input, with a message saying what, which value or file, and what to do.

    A ``ValueError``, so code that documents (or catches) ``ValueError`` for bad input keeps working.
    """


class DrawOutOfRangeError(UserError, IndexError):
    """A posterior draw index that does not exist (also an ``IndexError``, as before)."""


class DivergenceError(UserError, FloatingPointError):
    """A sampler that diverged with the user's settings (a step too large for the posterior); the message names
    the settings to lower. Also a ``FloatingPointError``, as before."""


#: Exception types that mean "the user's input or environment is wrong", never "bayesrobust is wrong":
#: a bad value (``UserError``, ``ValueError``) or a file system that refused (``OSError``: a missing file
#: -- ``DataNotFoundError`` of :mod:`bayesrobust.data` is a ``FileNotFoundError`` --, no permission, a file
#: where a folder belongs, a name too long, a full or read-only disk).
USER_ERRORS: tuple[type[BaseException], ...] = (UserError, ValueError, OSError)

#: Exit status of a bug (``EX_SOFTWARE`` of sysexits.h); a user error exits 1, a usage error 2 (click).
BUG_EXIT_CODE = 70
#: Exit status after Ctrl-C (128 + SIGINT, what shells report for an interrupted program).
INTERRUPT_EXIT_CODE = 130
BUG_NOTE = "This is a bug in bayesrobust, please report it"


def is_user_error(err: BaseException) -> bool:
    """Whether ``err`` is the user's to fix (one of :data:`USER_ERRORS`), not a bug."""
    return isinstance(err, USER_ERRORS)


def one_line(text: str) -> str:
    """``text`` on one line: line breaks (and the spaces around them) become single spaces."""
    return re.sub(r"\s*\n\s*", " ", text.strip())


def user_message(err: BaseException) -> str:
    """The one-line message of a user error: its text, or for an operating-system error (``open`` failing)
    the reason and the file, e.g. ``Permission denied: results/models``."""
    if isinstance(err, OSError) and err.strerror:
        text = err.strerror
        if err.filename is not None:
            text += f": {err.filename}"
            if err.filename2 is not None:
                text += f" -> {err.filename2}"
    else:
        text = str(err.args[0]) if len(err.args) == 1 else str(err)
    return one_line(text) or type(err).__name__
