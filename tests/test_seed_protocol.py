"""Three disjoint seed ranges, defined once (cli.bench.SEED_RANGES; docs/benchmarks.md, "Seeds"), and the
defaults that must come from them: `ugd tune` on tuning seeds, `ugd bench digits` on reported seeds."""

from __future__ import annotations

import inspect
import itertools

from cli.bench import SEED_RANGES, seed_range_of


def test_the_three_seed_ranges_are_disjoint_and_as_documented():
    assert {k: (r.start, r.stop) for k, r in SEED_RANGES.items()} == {
        "pilot": (500, 1000), "tuning": (300, 400), "reported": (1000, 2000)}
    for a, b in itertools.combinations(SEED_RANGES, 2):
        assert not set(SEED_RANGES[a]) & set(SEED_RANGES[b]), (a, b)
    assert seed_range_of(0) is None and seed_range_of(1000) == "reported" and seed_range_of(999) == "pilot"
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md").read_text()
    for text in ("pilot seeds 500–999", "tuning seeds 300–399", "reported seeds 1000–1999"):
        assert text in doc, text


def test_ugd_tune_defaults_to_tuning_seeds():
    import cli.main
    from cli.tune import tune_suite

    default = inspect.signature(tune_suite).parameters["seeds"].default
    assert default and all(s in SEED_RANGES["tuning"] for s in default)
    params = inspect.signature(cli.main.tune).parameters
    first, count = params["seed"].default.default, params["seeds"].default.default  # typer OptionInfo
    assert all(first + i in SEED_RANGES["tuning"] for i in range(count))


def test_the_digits_bench_defaults_to_reported_seeds_and_smoke_runs_to_pilot_seeds():
    from ugd_core.registry import get_registry

    reg = get_registry()
    seeds = next(p for p in reg.get("benchmark", "digits").params if p.name == "seeds").default
    assert [int(s) for s in seeds.split(",")] == [1000, 1001, 1002]
    assert all(s in SEED_RANGES["reported"] for s in reg.build("benchmark", "digits", {}).seeds)
    assert all(s in SEED_RANGES["pilot"] for s in reg.build("benchmark", "digits", {"quick": "true"}).seeds)
