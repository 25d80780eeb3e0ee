"""The one error type a user sees."""

from __future__ import annotations


class UgdError(Exception):
    """A problem with the user's input or environment.

    The message is one line naming the problem and the fix; the CLI prints it and
    exits with status 2, having written nothing. Plugins raise it too, for a bad
    parameter or a missing file (``from ugd_core import UgdError``)::

        raise UgdError(f"brightness: level={level} is outside [-1, 1]; e.g. brightness:level=0.5")
    """


class UgdWarning(RuntimeWarning):
    """A fallback the user should know about: ugd chose a value the user did not give.

    The message names the fallback, what it chose and how to choose otherwise; the CLI prints it as
    ``warning: ...``. A fallback that would silently change results is a :class:`UgdError` instead.
    """
