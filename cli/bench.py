"""Benchmark suites made of cells, a per-cell result cache shared by every runner, and table/grid helpers.

A :class:`BenchmarkSuite` exposes ``cells() -> list[dict]`` (JSON-able work items),
``run_cell(cell) -> dict`` and ``summarize(results, out_dir) -> dict``; it runs
in-process with :func:`run_cells` or on Ray with
:func:`cli.distributed.run_bench_on_ray`; both keep each finished cell in
``out_dir/cells/`` so an interrupted run resumes where it stopped. A cell's
cache key is a hash of the whole cell, so a suite that puts everything a result
depends on (settings, weights) into its cells never reuses a stale result.
A :class:`TunableSuite` also has ``tasks`` and ``evaluate`` (what ``ugd tune`` calls).

Shared by the suites' tables and grids: :func:`mean_spread` (a spread over one
seed is "n/a (1 seed)", never "± 0.000"), :data:`QUICK_NOTE` for smoke runs, and
:func:`save_labelled_grid` (row and column labels on a grid of samples).
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any, Iterable, Protocol, Sequence, runtime_checkable

# The three disjoint seed ranges of every benchmark, defined here once (docs/benchmarks.md, "Seeds"):
# pilot seeds for choosing anything (weights, candidates, rules), tuning seeds for `ugd tune` (its defaults),
# and reported seeds for the tables, each looked at once per decision. Seeds 0-9, the reported seeds before
# these ranges, were looked at repeatedly and are no longer reported.
SEED_RANGES: dict[str, range] = {
    "pilot": range(500, 1000),  # 500-599 until pilot round 24 used them up; widened into unused seeds
    "tuning": range(300, 400),
    "reported": range(1000, 2000),
}


def seed_range_of(seed: int) -> str | None:
    """The name of the range holding ``seed`` ('pilot', 'tuning', 'reported'), or None."""
    return next((name for name, r in SEED_RANGES.items() if seed in r), None)


def seeds_outside(seeds: Iterable[int], range_name: str) -> str:
    """The seeds not in the range ``range_name``, each with the range it is in ("5 (no range), 1000 (reported)"),
    and that range's bounds ("... outside the tuning seeds 300-399"); "" when every seed is inside."""
    r = SEED_RANGES[range_name]
    outside = sorted({s for s in seeds if s not in r})
    if not outside:
        return ""
    names = ", ".join(f"{s} ({seed_range_of(s) or 'no range'})" for s in outside)
    return f"seeds {names} lie outside the {range_name} seeds {r.start}-{r.stop - 1}"


QUICK_NOTE = (
    "Quick run (`--quick`): a smoke test that the pipeline runs end to end, on a few samples "
    "and one seed; its numbers are not results. Run without --quick for the reported table."
)


@runtime_checkable
class BenchmarkSuite(Protocol):
    """A benchmark made of independent cells (what ``ugd bench`` runs, in-process or on Ray)."""

    def cells(self) -> list[dict[str, Any]]:
        """The JSON-able work items; a result depends on nothing outside its cell."""
        ...

    def run_cell(self, cell: dict[str, Any]) -> dict[str, Any]:
        """One cell's result (numbers; tensors under keys starting with '_' ride along)."""
        ...

    def summarize(self, results: list[dict[str, Any]], out_dir: Path) -> dict[str, Any]:
        """Tables and grids from every cell's result (in ``cells()`` order); returns a dict with 'markdown'."""
        ...


@runtime_checkable
class TunableSuite(Protocol):
    """A suite ``ugd tune`` can search knobs on (``methods``, a name -> settings map, is optional)."""

    tasks: list[str]

    def evaluate(self, task: str, settings: dict[str, Any] | None, seed: int, n: int) -> dict[str, float]:
        """'metric' (higher is better), 'quality' (lower is better) and 'seconds_per_sample' for
        ``n`` samples of ``task`` at ``settings`` (None: unguided) and ``seed``."""
        ...


def mean_spread(mean: float, std: float, seeds: int, digits: int = 3) -> str:
    """``mean ± std`` over seeds for a table cell; with one seed the spread is "n/a (1 seed)"; a non-finite
    mean (a diverged sample's worst value, or a nan FID) is written as such, never as a blank."""
    if not math.isfinite(mean):
        return "nan" if math.isnan(mean) else ("inf" if mean > 0 else "-inf")
    if seeds < 2:
        return f"{mean:.{digits}f} ± n/a (1 seed)"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def save_labelled_grid(
    images: Any,
    path: Path,
    ncol: int,
    *,
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    title: Sequence[str] = (),
) -> Path:
    """Images [N, C, H, W] in [-1, 1] as one PNG grid of ``ncol`` columns, with row/column labels and a title."""
    from .outputs import labelled_grid, to_pil

    tiles = [to_pil(im) for im in images]
    rows = [tiles[i : i + ncol] for i in range(0, len(tiles), max(1, ncol))]
    labelled_grid(rows, row_labels=row_labels, col_labels=col_labels, title=title).save(path)
    return path


def cell_key(cell: dict[str, Any]) -> str:
    """A stable file name for a cell's cached result."""
    text = json.dumps(cell, sort_keys=True, default=str)
    slug = "-".join(str(cell.get(k, "")) for k in ("task", "method", "seed") if k in cell)
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in slug)[:60]
    return f"{safe}-{hashlib.sha1(text.encode()).hexdigest()[:10]}"


def save_cell(cache: Path, cell: dict[str, Any], result: dict[str, Any]) -> None:
    """Cache one cell's result: JSON for the numbers, a .pt file for private tensors ('_images')."""
    import torch

    cache.mkdir(parents=True, exist_ok=True)
    key = cell_key(cell)
    tensors = {k: v for k, v in result.items() if k.startswith("_") and isinstance(v, torch.Tensor)}
    if tensors:
        torch.save(tensors, cache / f"{key}.pt")
    plain = {k: v for k, v in result.items() if k not in tensors}
    tmp = cache / f"{key}.json.tmp"
    tmp.write_text(json.dumps(dict(cell=cell, result=plain, tensors=sorted(tensors)), indent=2, default=str))
    tmp.replace(cache / f"{key}.json")  # the JSON lands last: a cell is cached iff its JSON exists


def load_cell(cache: Path, cell: dict[str, Any]) -> dict[str, Any] | None:
    """A cached result of exactly this cell, or None."""
    import torch

    path = cache / f"{cell_key(cell)}.json"
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    if data.get("cell") != json.loads(json.dumps(cell, default=str)):
        return None
    result = dict(data["result"])
    if data.get("tensors"):
        pt = path.with_suffix(".pt")
        if not pt.exists():
            return None
        result.update(torch.load(pt, weights_only=True))
    return result


def run_cells(suite: BenchmarkSuite, out_dir: Path | str, progress: Any = None, lanes: int | None = None) -> dict[str, Any]:
    """Run a cell-based suite in this process, reusing cached cells; returns ``suite.summarize``'s dict.

    A suite whose ``run_cell`` may run in several threads at once says so with ``cells_side_by_side = True``
    (and may build what its cells share first in ``prepare()``); its cells then run in lanes as ``ugd generate``'s
    batches do (:mod:`cli.lanes`: by default one per torch thread on a CPU, each cell on its share of the
    threads, so on 2 cores two one-thread cells at once give the numbers of ``OMP_NUM_THREADS=1`` in turn).
    ``lanes`` asks for a count; any other suite runs its cells one after another."""
    from .lanes import run_in_lanes

    out = Path(out_dir)
    cache = out / "cells"
    cells = list(suite.cells())
    task_id = progress.add_task("bench cells", total=len(cells)) if progress is not None else None
    results: list[dict[str, Any] | None] = [load_cell(cache, cell) for cell in cells]
    todo = [k for k, r in enumerate(results) if r is None]
    if progress is not None:
        progress.advance(task_id, len(cells) - len(todo))
    side_by_side = getattr(suite, "cells_side_by_side", False)
    if side_by_side and todo and callable(getattr(suite, "prepare", None)):
        suite.prepare()  # type: ignore[attr-defined]

    def done(j: int, result: dict[str, Any]) -> None:
        save_cell(cache, cells[todo[j]], result)
        results[todo[j]] = result
        if progress is not None:
            progress.advance(task_id)

    # a cell's thread count follows from the lanes asked for, not from how many cells are left
    run_in_lanes([[k] for k in todo], lanes if side_by_side else 1, str(getattr(suite, "device", "cpu")),
                 lambda ks, step: suite.run_cell(cells[ks[0]]), done, lambda d, t: None)
    return suite.summarize([r for r in results if r is not None], out)
