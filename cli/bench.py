"""Benchmark suites made of cells, with a per-cell result cache shared by every runner.

A suite that exposes ``cells() -> list[dict]`` (JSON-able work items),
``run_cell(cell) -> dict`` and ``summarize(results, out_dir) -> dict`` can be
run in-process by :func:`run_cells` or on Ray by
:func:`cli.distributed.run_bench_on_ray`; both keep each finished cell in
``out_dir/cells/`` so an interrupted run resumes where it stopped. A cell's
cache key is a hash of the whole cell, so a suite that puts everything a result
depends on (settings, weights) into its cells never reuses a stale result.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any


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


def run_cells(suite: Any, out_dir: Path | str, progress: Any = None) -> dict[str, Any]:
    """Run a cell-based suite in this process, reusing cached cells; returns ``suite.summarize``'s dict."""
    out = Path(out_dir)
    cache = out / "cells"
    cells = list(suite.cells())
    task_id = progress.add_task("bench cells", total=len(cells)) if progress is not None else None
    results = []
    for cell in cells:
        result = load_cell(cache, cell)
        if result is None:
            result = suite.run_cell(cell)
            save_cell(cache, cell, result)
        results.append(result)
        if progress is not None:
            progress.advance(task_id)
    return suite.summarize(results, out)
