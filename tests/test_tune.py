"""`ugd tune` and benchmark cells on Ray, against a fake suite with a closed-form Gaussian backbone.

The fake suite follows the benchmark-suite interface (tasks, methods, cells,
run_cell, summarize, evaluate, __call__): data x0 ~ N(MU, S^2) per pixel, the
task pulls samples toward Y; metric = share of samples whose mean is below 0
(the 'target class'), quality = a spread error that grows when guidance
collapses diversity (lower is better).
"""

from __future__ import annotations

import json
import sys
import time
import types

import pytest
import torch

from ugd_core import CallableBackbone, SamplerConfig, hookimpl, load_preset_file, load_registry, make_guide, sample
from ugd_core.testing import gaussian_backbone
from cli.tune import BEAM_START, Evaluation, pareto_front, tune_suite

MU, S, DIM, Y = 0.5, 0.6, 8, -1.0


class GaussSuite:
    """A benchmark suite small enough for tests (one evaluate call is ~0.1 s)."""

    tasks = ["pull"]
    methods = {
        "unguided": None,  # like digits: None = sample without guides
        "ugd": dict(num_steps=10, forward_strength=0.3, backward_steps=1, backward_lr=0.05, recurrence=1),
        "tfg": dict(num_steps=10, forward_strength=0.25, backward_steps=1, backward_lr=0.25, smoothing_std=0.001),
        # a start too weak to pull anything (metric 0 on seeds 0-1; strength >= 1 reaches 1): a search that
        # works must leave it, so "better than the start" is a claim that can fail
        "weak": dict(num_steps=10, forward_strength=0.01),
        # the spherical step (auto's, DSG's): its strength is a rate in [0, 1]
        "sphere": dict(num_steps=10, forward_strength=0.25, forward_on="sphere", eta=1.0),
    }

    def __init__(self) -> None:
        self._backbone = None

    def __getstate__(self):
        return {}

    def __setstate__(self, state):
        self._backbone = None

    def backbone(self) -> CallableBackbone:
        if self._backbone is None:
            self._backbone = gaussian_backbone(MU, S, (DIM, 1, 1))
        return self._backbone

    def evaluate(self, task: str, settings: dict, seed: int, n: int) -> dict:
        guide = make_guide("quad", f=lambda x: x, loss=lambda out, y: (out - y).pow(2).flatten(1).sum(1), target=Y)
        guide = None if settings is None else guide
        cfg = SamplerConfig.from_dict(settings or {"num_steps": 10})
        t0 = time.perf_counter()
        x = sample(self.backbone(), guide, cfg, num_images=n, seed=10_000 * seed).latents.flatten(1)
        secs = (time.perf_counter() - t0) / n
        metric = (x.mean(1) < 0).float().mean().item()
        quality = 0.05 + abs(x.std(1).mean().item() - S)
        return dict(metric=metric, quality=quality, seconds_per_sample=secs)

    def cells(self) -> list[dict]:
        return [dict(task=t, method=m, seed=s, n=16) for t in self.tasks for m in ("unguided", "ugd") for s in (0, 1)]

    def run_cell(self, cell: dict) -> dict:
        r = self.evaluate(cell["task"], self.methods[cell["method"]], cell["seed"], cell["n"])
        return dict(cell, **r, _images=torch.full((2, 1, 2, 2), float(cell["seed"])))  # like digits: tensors ride along

    def summarize(self, results: list[dict], out_dir) -> dict:
        images = [r.pop("_images") for r in results]
        rows = [f"| {r['method']} | {r['seed']} | {r['metric']:.3f} | {im.mean().item():.0f} |" for r, im in zip(results, images)]
        return dict(markdown="\n".join(["| method | seed | metric | image |", "|---|---|---|---|", *rows]), results=results)

    def __call__(self, out_dir, progress=None) -> dict:
        return self.summarize([self.run_cell(c) for c in self.cells()], out_dir)


@pytest.fixture(scope="module")
def cluster():
    ray = pytest.importorskip("ray")
    torch.set_num_threads(1)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=80 * 1024 * 1024)
    yield ray
    ray.shutdown()
    ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def _same_seed_metric(suite, settings, seeds, n):
    return sum(suite.evaluate("pull", settings, s, n)["metric"] for s in seeds) / len(seeds)


def _assert_best_is_the_best_searched_point(result):
    """The chosen point is the highest metric among the complete feasible guided points (recomputed here),
    it is a point the search proposed (not the start), and it beats the start on the same seeds."""
    pts = [e for e in result.evaluations if e.complete and not e.error and e.feasible and e.label != "unguided"]
    assert result.best.metric == max(e.metric for e in pts)
    assert result.best is not result.base and result.best.changes  # found by the search, not the start
    assert result.best.metric > result.base.metric


def test_ray_tune_random_search_with_asha_beats_or_matches_the_starting_preset(cluster, tmp_path):
    suite = GaussSuite()
    seeds, n = [0, 1], 24
    result = tune_suite(
        suite, "pull", strategy="random", base="weak", trials=4, samples=n, seeds=seeds, quality_factor=3.0,
        knobs="forward_strength,backward_steps,windows", out_dir=tmp_path, search_seed=1,
    )
    assert len(result.evaluations) == 6  # unguided, the preset, 4 trials
    best = result.best
    assert best.complete and best.feasible and best.quality <= result.quality_limit
    assert result.base.metric == pytest.approx(_same_seed_metric(suite, suite.methods["weak"], seeds, n)) == 0.0
    _assert_best_is_the_best_searched_point(result)
    assert best.metric > result.unguided.metric
    # the written preset is what `ugd generate --preset FILE` reads, and reproduces the metric
    name, settings = load_preset_file(tmp_path / "best-preset.json")
    assert name == "tuned-suite-pull" and settings == best.settings
    assert _same_seed_metric(suite, settings, seeds, n) == pytest.approx(best.metric)
    front = json.loads((tmp_path / "pareto.json").read_text())["front"]
    assert front and "| point | metric | quality | s/sample |" in (tmp_path / "pareto.md").read_text()
    trials = json.loads((tmp_path / "trials.json").read_text())
    assert trials["quality_limit"] == pytest.approx(3.0 * result.unguided.quality)
    with pytest.raises(Exception, match="already exists"):
        tune_suite(suite, "pull", strategy="random", trials=1, out_dir=tmp_path)


def test_optuna_strategy_runs_tpe_on_ray_and_never_loses_to_its_start(cluster, tmp_path):
    pytest.importorskip("optuna")
    suite = GaussSuite()
    seeds, n = [0], 16
    result = tune_suite(suite, "pull", strategy="optuna", base="weak", trials=3, samples=n, seeds=seeds, quality_factor=3.0,
                        knobs="forward_strength,backward_lr", out_dir=tmp_path, search_seed=0)
    trials = [e for e in result.evaluations if e.label.startswith("trial")]
    assert len(trials) == 3 and all(e.complete for e in trials)
    # TPE proposes from the declared space: strengths and step sizes inside their ranges
    assert all(0.01 <= e.settings["forward_strength"] <= 10 and 0.01 <= e.settings["backward_lr"] <= 2 for e in trials)
    assert result.base.metric == pytest.approx(_same_seed_metric(suite, suite.methods["weak"], seeds, n))
    _assert_best_is_the_best_searched_point(result)
    assert json.loads((tmp_path / "trials.json").read_text())["strategy"] == "optuna"


def test_bench_cells_on_ray_match_the_in_process_run(cluster, tmp_path):
    from cli.distributed import run_bench_on_ray

    suite = GaussSuite()
    torch.set_num_threads(1)
    here = suite(tmp_path / "a")
    there = run_bench_on_ray(suite, tmp_path / "b", num_workers=1)
    strip = lambda rs: [{k: v for k, v in r.items() if k != "seconds_per_sample"} for r in rs]  # noqa: E731
    assert strip(there["results"]) == strip(here["results"])
    assert len(list((tmp_path / "b" / "cells").glob("*.json"))) == len(suite.cells())
    again = run_bench_on_ray(suite, tmp_path / "b", resume=True)  # every cell cached: no work, same table
    assert again["markdown"] == there["markdown"]


def test_beam_search_follows_tfg_and_needs_no_ray(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # the beam strategy runs in-process without Ray
    suite = GaussSuite()
    result = tune_suite(suite, "pull", strategy="beam", rounds=2, trials=20, samples=16, seeds=[0], quality_factor=3.0)
    labels = [e.label for e in result.evaluations]
    assert labels[:2] == ["unguided", "preset tfg"]  # the start point 0.25/0.25/0.001 is the tfg method itself
    start = result.base.settings
    assert {k: start[k] for k in BEAM_START} == BEAM_START
    round1 = [e for e in result.evaluations if e.label.startswith("beam 1.")]
    assert sorted((e.changes for e in round1), key=json.dumps) == sorted(
        [{"forward_strength": 0.5}, {"backward_lr": 0.5}, {"smoothing_std": 0.01}], key=json.dumps
    )
    round2 = [e for e in result.evaluations if e.label.startswith("beam 2.")]
    assert 1 <= len(round2) <= 6  # two kept, three children each, minus duplicates


def test_beam_search_improves_on_a_weak_start_by_doubling_the_strength(monkeypatch):
    """From the weak start, TFG's start values and two rounds of doubling reach strength 1, where the
    metric saturates: the best point is a doubled strength, strictly better than the start."""
    monkeypatch.setitem(sys.modules, "ray", None)
    suite = GaussSuite()
    result = tune_suite(suite, "pull", strategy="beam", base="weak", rounds=2, trials=20, samples=16, seeds=[0], quality_factor=3.0)
    assert result.base.metric == 0.0
    _assert_best_is_the_best_searched_point(result)
    assert result.best.settings["forward_strength"] in (0.5, 1.0)  # 0.25 x 2 or x 4


def test_beam_doubling_stops_at_a_full_turn_on_the_spherical_step(monkeypatch):
    """On the spherical step the beam doubles the rate 0.25 -> 0.5 -> 1 and stops there (2 would be refused):
    every setting it tries runs."""
    monkeypatch.setitem(sys.modules, "ray", None)
    result = tune_suite(GaussSuite(), "pull", strategy="beam", base="sphere", knobs="forward_strength", rounds=3, trials=20,
                        samples=8, seeds=[0], quality_factor=3.0)
    tried = sorted(e.settings["forward_strength"] for e in result.evaluations if e.label.startswith("beam"))
    assert tried == [0.5, 1.0] and all(e.complete for e in result.evaluations)


def test_pareto_front_keeps_only_non_dominated_points():
    def ev(label, m, q, s):
        return Evaluation(label, {}, {}, [], metric=m, quality=q, seconds_per_sample=s)

    pts = [ev("a", 0.9, 2.0, 1.0), ev("b", 0.5, 1.0, 1.0), ev("c", 0.4, 1.5, 1.0), ev("d", 0.9, 2.0, 0.5)]
    assert [e.label for e in pareto_front(pts)] == ["d", "b"]


def test_cli_tune_beam_writes_a_preset_that_generate_accepts(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import cli.main as cli
    from ugd_core import registry as registry_mod
    from cli.run import RunSpec, resolve_config

    def benchmarks(register):
        register("gauss", lambda: GaussSuite(), description="fake suite (tests)")

    plugin = types.ModuleType("gauss_plugin")
    plugin.ugd_register_benchmarks = hookimpl(benchmarks)
    reg = load_registry([("gauss", plugin)], entry_points=False)
    monkeypatch.setattr(registry_mod, "_DEFAULT", reg)
    args = ["tune", "gauss", "--strategy", "beam", "--rounds", "1", "--samples", "8", "--seeds", "1", "--quality-factor", "3", "--out", str(tmp_path)]
    result = CliRunner().invoke(cli.app, args)
    assert result.exit_code == 0, result.output
    assert "Pareto front" in result.output
    preset = tmp_path / "best-preset.json"
    config, name = resolve_config(RunSpec(preset=str(preset)), reg)
    assert name == "tuned-gauss-pull" and config.num_steps == 10
    assert CliRunner().invoke(cli.app, args).exit_code == 2  # existing results are not overwritten


def test_the_strength_searched_on_the_spherical_step_stays_a_rate():
    """With forward_on=sphere (auto, dsg) forward_strength is DSG's rate in [0, 1] (a larger one is a config error):
    the random search draws it below 1, not up to 10, so no trial is spent on a setting that cannot run."""
    from ugd_core.presets import PRESETS

    from cli.tune import search_space, strength_cap

    assert strength_cap(PRESETS["auto"][1]) == 1.0 and strength_cap(PRESETS["freedom"][1]) == 10.0
    assert search_space(["forward_strength"], PRESETS["auto"][1])["forward_strength"].upper == 1.0
    assert search_space(["forward_strength"])["forward_strength"].upper == 10.0
