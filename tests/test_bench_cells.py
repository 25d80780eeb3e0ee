"""The per-cell cache of benchmark suites (`cli.bench.run_cells`): finished cells are reused, changed ones rerun."""

from __future__ import annotations

import pytest

from test_tune import GaussSuite
from cli.bench import BenchmarkSuite, TunableSuite, cell_key, load_cell, run_cells


def test_a_second_run_reuses_every_cached_cell(tmp_path, monkeypatch):
    suite = GaussSuite()
    first = run_cells(suite, tmp_path)
    assert len(list((tmp_path / "cells").glob("*.json"))) == len(suite.cells())

    def must_not_run(cell):
        raise AssertionError(f"cell {cell} was run again")

    monkeypatch.setattr(suite, "run_cell", must_not_run)
    again = run_cells(suite, tmp_path)
    assert again["markdown"] == first["markdown"]  # the tensors riding along ('_images') came back too


def test_a_changed_cell_is_run_again_and_a_torn_cache_entry_ignored(tmp_path, monkeypatch):
    suite = GaussSuite()
    run_cells(suite, tmp_path)
    cells = suite.cells()
    changed = [dict(c, version="other-settings") for c in cells]
    assert all(load_cell(tmp_path / "cells", c) is None for c in changed)
    assert all(cell_key(a) != cell_key(b) for a, b in zip(cells, changed))

    (tmp_path / "cells" / f"{cell_key(cells[0])}.pt").unlink()  # a result whose tensors never landed
    ran = []
    original = suite.run_cell
    monkeypatch.setattr(suite, "run_cell", lambda c: ran.append(c) or original(c))
    run_cells(suite, tmp_path)
    assert ran == [cells[0]]


def test_a_failing_cell_leaves_the_finished_ones_cached(tmp_path, monkeypatch):
    suite = GaussSuite()
    cells = suite.cells()
    original = suite.run_cell

    def fail_on_third(cell):
        if cell == cells[2]:
            raise RuntimeError("worker died")
        return original(cell)

    monkeypatch.setattr(suite, "run_cell", fail_on_third)
    with pytest.raises(RuntimeError):
        run_cells(suite, tmp_path)
    assert [load_cell(tmp_path / "cells", c) is not None for c in cells] == [True, True, False, False]


def test_suites_are_checked_against_the_typed_protocols():
    assert isinstance(GaussSuite(), BenchmarkSuite) and isinstance(GaussSuite(), TunableSuite)
    assert not isinstance(object(), BenchmarkSuite)  # a suite without cells/run_cell/summarize is not one


class _Cells:
    """A suite whose cells record the thread and torch thread count that ran them."""

    def __init__(self, side_by_side: bool):
        self.cells_side_by_side = side_by_side
        self.prepared = 0

    def prepare(self):
        self.prepared += 1

    def cells(self):
        return [dict(task="t", method="m", seed=s) for s in range(6)]

    def run_cell(self, cell):
        import threading
        import time

        import torch

        time.sleep(0.05)  # long enough for a second lane to start meanwhile
        return dict(cell, thread=threading.current_thread().name, torch_threads=torch.get_num_threads())

    def summarize(self, results, out_dir):
        return dict(markdown="", results=results)


def test_a_suite_that_allows_it_runs_its_cells_side_by_side_in_order(tmp_path):
    """cells_side_by_side = True: the cells run in lanes (two on two torch threads, one thread each, shared
    state prepared once first), and summarize still gets them in cells() order; without it, one after another
    in the calling thread on every thread."""
    import torch

    from cli.run import torch_threads

    with torch_threads(2):
        lanes = _Cells(True)
        out = run_cells(lanes, tmp_path / "a")["results"]
        alone = _Cells(False)
        turn = run_cells(alone, tmp_path / "b")["results"]
        assert torch.get_num_threads() == 2  # restored
    assert [r["seed"] for r in out] == list(range(6)) and lanes.prepared == 1
    assert len({r["thread"] for r in out}) == 2 and {r["torch_threads"] for r in out} == {1}
    assert {r["thread"] for r in turn} == {"MainThread"} and {r["torch_threads"] for r in turn} == {2} and alone.prepared == 0
