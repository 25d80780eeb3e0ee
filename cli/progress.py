"""The one progress bar of the application layer (rich), for generate, bench, tune and Ray runs."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def progress_bar(console: Any = None, *, disable: bool | None = None) -> Progress:
    """A rich progress bar (description, bar, done/total, elapsed, remaining) on ``console``.

    Disabled (draws nothing) when ``console`` is None, unless ``disable`` says otherwise.
    """
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=(console is None) if disable is None else disable,
    )


@contextmanager
def tracking(console: Any, description: str) -> Iterator[Callable[[int, int], None]]:
    """A bar with one task; yields ``update(done, total)``, the ``progress`` callback of
    :func:`cli.run.generate_to_dir` (None console: a quiet bar)."""
    with progress_bar(console) as bar:
        task = bar.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update
