"""The one error type a user sees."""

from __future__ import annotations


class UgdError(Exception):
    """A problem with the user's input or environment.

    The message is one line naming the problem and the fix; the CLI prints it and
    exits with status 2, having written nothing.
    """
