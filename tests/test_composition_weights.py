"""benchmarks/composition_weights.py: only the placement guide's weight changes; the script runs end to end (slow)."""

import pytest


def test_only_the_named_guide_takes_the_weight(load_benchmark):
    weighted = load_benchmark("composition_weights").weighted
    specs = ['digit-box:box="4,4,20,20",weight=1', "digit-robust:label=3,weight=1"]
    assert weighted(specs, "digit-box", 4.0) == ['digit-box:box="4,4,20,20",weight=4', "digit-robust:label=3,weight=1"]
    assert weighted(specs, "digit", 4.0) == specs  # a name is matched whole, not as a prefix


@pytest.mark.slow
def test_composition_weights_runs(load_benchmark):
    rows = load_benchmark("composition_weights").main(["--seeds", "634", "--weights", "2", "--tasks", "mask+label",
                                                       "--samples", "1", "--cases", "1", "--steps", "2"])
    assert [(r["task"], r["weight"]) for r in rows] == [("mask+label", 0.0), ("mask+label", 2.0)]
    assert rows[0]["placement"] == 1.0 and rows[1]["nonfinite"] == 0
