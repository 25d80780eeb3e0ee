"""Per-step time and peak memory of one sampling run, and the tables' shared ends (used by sd_cost.py and flow_cost.py)."""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch


def timed(device: torch.device, run: Callable[[Callable[[], None]], torch.Tensor],
          clock: Callable[[], float] = time.perf_counter) -> tuple[float, float | None, torch.Tensor]:
    """(median seconds per step after the first, peak GB on CUDA else None, the run's output). ``run(on_step)``
    calls ``on_step`` at each step's end; gaps are CUDA events on GPU, ``clock`` on CPU (wall clock, or
    ``time.process_time``: the process's CPU time, which neighbours on a shared machine do not inflate)."""
    cuda = device.type == "cuda"
    marks: list[Any] = []

    def on_step() -> None:
        if cuda:
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            marks.append(ev)
        else:
            marks.append(clock())

    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    out = run(on_step)
    if cuda:
        torch.cuda.synchronize()
        gaps = [a.elapsed_time(b) / 1000 for a, b in zip(marks, marks[1:])]
        peak = torch.cuda.max_memory_allocated() / 1e9
    else:
        gaps, peak = [b - a for a, b in zip(marks, marks[1:])], None
    return statistics.median(gaps), peak, out


@dataclass
class CostCell:
    """One cell of a cost table: ugd's and the floor's median seconds and peak GB (None on CPU), and whether
    both runs ended finite. The scripts add their own columns."""

    model: str
    dtype: str
    mode: str
    ugd_s: float
    floor_s: float
    ugd_peak_gb: float | None
    floor_peak_gb: float | None
    finite: bool


def gigabytes(v: float | None) -> str:
    """A peak-memory cell: a dash where none was measured (CPU)."""
    return "–" if v is None else f"{v:.2f}"


def finish(cells: list[Any], start: float, json_path: str) -> list[Any]:
    """Print the run's wall time and, given a path, write every cell (a dataclass) there as JSON; returns ``cells``."""
    print(f"total wall time {time.perf_counter() - start:.0f} s", flush=True)
    if json_path:
        with open(json_path, "w") as fh:
            json.dump([c.__dict__ for c in cells], fh, indent=1)
    return cells
