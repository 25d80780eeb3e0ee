"""benchmarks/solver_efficiency.py: bad input stops before any work; a tiny run writes the expected table."""

from __future__ import annotations

import json

import pytest



@pytest.mark.parametrize("argv, needle", [
    (["--solvers", "ddim,dpm+++"], "not a diffusers scheduler"),
    (["--steps", "5,0"], "--steps"),
    (["--variant", "dpm++:forwrd_strength=2"], "forward_strength"),
    (["--variant", "dpm++"], "SOLVER:KNOB=VALUE"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, argv, needle, load_benchmark):
    out = tmp_path / "out"
    assert load_benchmark("solver_efficiency").main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and needle in err and "\n" not in err
    assert not out.exists()


@pytest.mark.slow
def test_tiny_run_writes_table_json_and_counts_passes(tmp_path, load_benchmark):
    pytest.importorskip("ugd_digits")
    mod = load_benchmark("solver_efficiency")
    from ugd_core.registry import get_registry

    reg = get_registry()
    preset = reg.get("preset", "auto-eps").settings
    k = preset.get("recurrence", 1)
    lo, hi = preset.get("recurrence_window", (0.0, 1.0))  # k passes at step i where lo <= i / steps < hi, else 1
    out = tmp_path / "out"
    argv = ["--samples-per-digit", "1", "--steps", "2,3", "--solvers", "ddim,dpm++", "--variant", "unipc:recurrence=1", "--out", str(out)]
    assert mod.main(argv) == 0
    md = (out / "results.md").read_text()
    data = json.loads((out / "results.json").read_text())
    labels = ["ddim", "dpm++", "unipc (recurrence=1)"]
    for label in labels:
        for steps in (2, 3):
            assert f"| {label} | {steps} | 10 |" in md
    rows = {(r["row"], r["steps"]): r for r in data["summary"]}
    assert set(rows) == {(label, s) for label in labels for s in (2, 3)}
    for (label, steps), r in rows.items():
        reps = 1 if label.startswith("unipc") else k  # one backward pass with each forward pass
        passes = sum(reps if lo <= i / steps < hi else 1 for i in range(steps))
        assert r["denoiser_forward_per_sample"] == passes
        assert r["denoiser_backward_per_sample"] == passes
        assert r["n"] == 10 and 0.0 <= r["classifier_accuracy"] <= 1.0 and 0.0 <= r["nn_accuracy"] <= 1.0
        assert r["pass_share_of_ddim50"] is None  # no DDIM-50 row in this run
    cell = data["cells"][0]
    assert sorted(cell["labels"]) == list(range(10)) and len(cell["guide_loss"]) == 10
    assert data["rows_settings"]["dpm++"]["scheduler"] == "dpm++"
    assert data["machine"]["threads"] == 1 and data["seeds"] == [1000]  # the first reported seed by default
    # an interrupted run is summarised from its cells.json: the same table, no sampling
    again = tmp_path / "again"
    assert mod.main(["--summarize", str(out / "cells.json"), "--out", str(again)]) == 0
    assert (again / "results.md").read_text() in md
