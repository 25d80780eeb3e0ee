"""Batches side by side: a run's batches sampled in up to ``lanes`` threads of this process at once.

On a CPU one batch of small images gains little from a second torch thread, while two batches, each on its
own thread with one torch thread, take about 0.6 of the time of one batch of twice the size on both cores
(benchmarks/digits_speed.py, option ``lanes``). A batch's pixels depend on its seeds, its size and its torch
thread count (recorded as ``torch_threads``), never on the lane that sampled it or what ran beside it.
The standard library's thread pool runs the lanes (torch releases the GIL inside its kernels).
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from typing import Callable, Iterator, TypeVar

T = TypeVar("T")
Progress = Callable[[int, int], None]


def lane_plan(lanes: int | None, batches: int, threads: int, device: str) -> tuple[int, int]:
    """(lanes, torch threads per lane) of a run on ``threads`` torch threads: ``lanes`` when given, else one
    per thread on a CPU and one on a GPU (whose kernels run one batch at a time there, so a second lane would
    only add memory); never more lanes than batches. Each lane's thread count follows from the lanes asked
    for, not from how many batches the run has, so an image's pixels do not depend on the run's size or on
    what a resumed run has left to do."""
    wanted = lanes if lanes is not None else (threads if device == "cpu" else 1)
    return max(1, min(wanted, batches)), max(1, threads // max(1, wanted))


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run with ``threads`` torch threads (None: unchanged), restoring the count afterwards."""
    import torch  # here, not at import: `ugd list` and a bad input's one line load no torch

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_in_lanes(
    batches: list[list[int]],
    lanes: int | None,
    device: str,
    sample: Callable[[list[int], Progress], T],
    on_result: Callable[[int, T], None],
    progress: Progress,
) -> None:
    """:func:`in_lanes` on this process's torch threads: the lanes of :func:`lane_plan`, each on its share."""
    import torch

    count, threads = lane_plan(lanes, len(batches), torch.get_num_threads(), device)
    with torch_threads(threads):
        in_lanes(batches, count, sample, on_result, progress)


class _Stopped(Exception):
    """Raised inside a lane at its next step once the run is stopping (Ctrl-C, or another lane failed)."""


def in_lanes(
    batches: list[list[int]],
    lanes: int,
    sample: Callable[[list[int], Progress], T],
    on_result: Callable[[int, T], None],
    progress: Progress,
) -> None:
    """``sample(seeds, step)`` for every batch, ``lanes`` at a time, handing ``on_result(k, result)`` to the
    calling thread as each batch completes (in order with one lane). ``step(i, n)`` is the sampler's per-step
    callback; ``progress(done, total)`` counts the steps of every batch together. On an error or Ctrl-C in
    the calling thread, batches not started are dropped and running ones stop at their next step; the first
    error is raised once every lane has stopped."""
    steps = [0] * len(batches)
    lock, stop = threading.Lock(), threading.Event()

    def step_of(k: int) -> Progress:
        def step(i: int, n: int) -> None:
            if stop.is_set():
                raise _Stopped()
            with lock:  # reports in order: the count never goes back
                steps[k] = i
                progress(sum(steps), n * len(batches))

        return step

    def lane(k: int) -> T:
        if stop.is_set():
            raise _Stopped()
        try:
            return sample(batches[k], step_of(k))
        except BaseException:
            stop.set()  # before this lane takes another batch
            raise

    if lanes <= 1:
        for k in range(len(batches)):
            on_result(k, lane(k))
        return
    pool = ThreadPoolExecutor(lanes, thread_name_prefix="ugd-lane")
    futures = {pool.submit(lane, k): k for k in range(len(batches))}
    try:
        for future in as_completed(futures):
            on_result(futures[future], future.result())
    except BaseException:
        stop.set()
        for future in futures:
            future.cancel()
        raise
    finally:
        pool.shutdown(wait=True)
