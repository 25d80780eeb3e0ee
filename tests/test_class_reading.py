"""benchmarks/class_reading.py: pilot seeds only; every run's counts add up (the misread samples split into the guide's
loss met or not, and those the guide itself reads as the asked class are among them)."""

import pytest


def test_reported_seeds_are_refused(load_benchmark):
    with pytest.raises(SystemExit, match="pilot seeds are 500-999"):
        load_benchmark("class_reading").main(["--seeds", "1000"])


@pytest.mark.slow
def test_the_counts_add_up(load_benchmark):
    rows = load_benchmark("class_reading").main(["--seeds", "500", "--samples", "2", "--cases", "1", "--steps", "2"])
    mod = load_benchmark("class_reading")
    assert [(r["task"], r["method"], r["weight"]) for r in rows] == mod.RUNS
    for r in rows:
        assert r["samples"] == 2 and 0 <= r["right"] <= 2
        assert r["wrong_met"] + r["wrong_unmet"] == r["samples"] - r["right"]
        assert r["wrong_asked"] <= r["samples"] - r["right"] and r["met"] <= r["samples"] and r["asked"] <= r["samples"]
