"""What docs/tune.md and docs/benchmarks.md ("Protocol") promise about `ugd tune` and the seed ranges, checked on
a fake suite whose numbers are closed-form functions of the knobs (no sampling, no Ray: each test takes well under
a second)."""

from __future__ import annotations

import inspect
import io
import json
import sys

import pytest

from cli.bench import seeds_outside
from cli.tune import UNGUIDED, Evaluation, choose_best, score_of, search_space, summarize_seeds, tune_suite, unguided_settings

TFG = dict(num_steps=10, forward_strength=0.25, backward_steps=1, backward_lr=0.25, smoothing_std=0.001)


class KnobSuite:
    """metric = strength - lr - smoothing (higher is better); quality = ``quality`` for a guided setting, 1 unguided."""

    tasks = ["t"]

    def __init__(self, quality: float = 1.0, methods: dict | None = None) -> None:
        self.quality = quality
        self.methods = {"unguided": None, "tfg": dict(TFG)} if methods is None else methods
        self.calls: list[tuple[dict | None, int]] = []

    def evaluate(self, task, settings, seed, n):
        self.calls.append((settings, seed))
        if settings is None:
            return dict(metric=0.0, quality=1.0, seconds_per_sample=0.01)
        metric = settings["forward_strength"] - settings["backward_lr"] - settings.get("smoothing_std", 0.0)
        guided = settings["forward_strength"] > 0 or settings.get("backward_steps", 0) > 0
        return dict(metric=metric, quality=self.quality if guided else 1.0, seconds_per_sample=0.01)


@pytest.fixture
def no_ray(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # beam runs in-process


def _ev(label, metric, quality, secs=1.0, feasible=True):
    return Evaluation(label, {"x": 1}, {}, [], metric=metric, quality=quality, seconds_per_sample=secs, feasible=feasible,
                      score=metric if feasible else -1e9)


def test_tune_defaults_to_the_first_two_tuning_seeds():
    """docs/tune.md: tuning seeds 300-399, "by default 300 and 301"."""
    assert tuple(inspect.signature(tune_suite).parameters["seeds"].default) == (300, 301)


def test_tuning_on_reported_seeds_is_warned_about_and_tuning_seeds_are_not(no_ray):
    from rich.console import Console

    def run(seeds):
        buf = io.StringIO()
        tune_suite(KnobSuite(), "t", strategy="beam", base="tfg", knobs="forward_strength", rounds=1, trials=2, samples=1,
                   seeds=seeds, console=Console(file=buf, width=300))
        return buf.getvalue()

    text = run([1000])
    assert "warning" in text and "1000 (reported)" in text
    assert "warning" not in run([300])


def test_seeds_below_a_range_are_outside_it_too():
    """seeds_outside names every seed not in the range, those below it as well ("5 (no range)")."""
    text = seeds_outside([5, 300], "tuning")
    assert "5 (no range)" in text and "300 (" not in text
    assert "1000 (reported)" in seeds_outside([1000], "tuning")


def test_an_infeasible_setting_scores_below_every_feasible_one():
    """Score of an infeasible setting: metric - 1000 x (1 + excess), below any feasible setting's metric."""
    assert score_of(0.5, 1.0, 1.0) == (True, 0.5)
    feasible, score = score_of(0.9, 2.0, 1.0)
    assert not feasible and score == pytest.approx(0.9 - 1000 * 2) and score < score_of(-10.0, 1.0, 1.0)[1]


def test_the_metric_of_a_setting_is_its_mean_over_seeds():
    rows = [dict(metric=0.0, quality=1.0, seconds_per_sample=1.0), dict(metric=1.0, quality=3.0, seconds_per_sample=3.0)]
    s = summarize_seeds(rows, 10.0)
    assert (s["metric"], s["quality"], s["seconds_per_sample"]) == (0.5, 2.0, 2.0) and s["feasible"]


def test_best_breaks_metric_ties_by_lower_quality_then_speed():
    a, b = _ev("a", 0.8, 1.2), _ev("b", 0.8, 1.1)
    assert choose_best([a, b]) is b and choose_best([b, a]) is b
    c, d = _ev("c", 0.8, 1.1, secs=2.0), _ev("d", 0.8, 1.1, secs=1.0)
    assert choose_best([c, d]) is d


def test_the_unguided_reference_is_never_the_best_point():
    """The best is a *guided* setting, even when the unguided run scores higher."""
    unguided, guided = _ev("unguided", 0.9, 1.0), _ev("preset x", 0.1, 1.0)
    assert choose_best([unguided, guided]) is guided


def test_without_an_unguided_method_the_reference_is_the_base_with_guidance_off():
    suite = KnobSuite(methods={"tfg": dict(TFG)})
    off = unguided_settings(suite, dict(TFG, recurrence=3))
    assert {k: off[k] for k in UNGUIDED} == UNGUIDED and off["num_steps"] == 10


def test_beam_keeps_the_best_scoring_settings_each_round(no_ray):
    """With width 1 the beam follows the best child: metric = strength - lr - smoothing rises by doubling the
    strength, so two rounds reach strength 1.0 (0.25 x 4) and that point is the best."""
    result = tune_suite(KnobSuite(), "t", strategy="beam", base="tfg", rounds=2, beam_width=1, trials=20, samples=1, seeds=[300])
    assert result.best.settings["forward_strength"] == 1.0
    assert result.best.metric == pytest.approx(1.0 - 0.25 - 0.001)
    round2 = [e for e in result.evaluations if e.label.startswith("beam 2.")]
    assert round2 and all(e.settings["forward_strength"] >= 0.5 for e in round2)


def test_beam_evaluates_at_most_trials_settings(no_ray):
    """--trials caps the settings the beam evaluates (the start counts)."""
    for trials in (1, 2, 3):
        result = tune_suite(KnobSuite(), "t", strategy="beam", base="tfg", rounds=3, trials=trials, samples=1, seeds=[300])
        assert sum(e.label.startswith("beam") for e in result.evaluations) <= trials


def test_the_quality_limit_is_the_factor_times_the_unguided_quality(no_ray):
    """limit = quality_factor x quality(unguided), not of the starting preset."""
    result = tune_suite(KnobSuite(quality=1.3), "t", strategy="beam", base="tfg", rounds=1, trials=3, samples=1,
                        seeds=[300], quality_factor=1.5)
    assert result.quality_limit == pytest.approx(1.5 * 1.0)
    assert result.base.quality == pytest.approx(1.3) and result.base.feasible


def test_the_preset_records_the_best_points_metric_even_when_nothing_is_feasible(no_ray, tmp_path):
    result = tune_suite(KnobSuite(quality=5.0), "t", strategy="beam", base="tfg", rounds=1, trials=3, samples=1,
                        seeds=[300], quality_factor=1.5, out_dir=tmp_path)
    assert not result.best.feasible
    tuned = json.loads((tmp_path / "best-preset.json").read_text())["tuned"]
    assert tuned["metric"] == pytest.approx(result.best.metric) and tuned["within_quality_limit"] is False
    assert tuned["seeds"] == [300]


def test_a_suite_that_pins_the_step_count_writes_it_over_the_base_presets(no_ray, tmp_path):
    """docs/tune.md: a suite that fixes the step count has it written into the preset's settings. Every point was
    measured at the suite's count, so it wins over a count the base preset carried (a preset written by an earlier
    ``ugd tune`` at another count once kept that count: ``ugd generate --preset`` then ran a setting never measured)."""
    suite = KnobSuite()
    suite.steps = 5
    tune_suite(suite, "t", strategy="beam", base="tfg", knobs="forward_strength", rounds=1, trials=2, samples=1,
               seeds=[300], out_dir=tmp_path)
    assert TFG["num_steps"] == 10
    assert json.loads((tmp_path / "best-preset.json").read_text())["settings"]["num_steps"] == 5


def test_the_random_search_space_matches_the_documented_ranges():
    """docs/tune.md, "Knobs searched": backward_steps 0-5, recurrence 1-4, smoothing 0 ... 0.1, lr 0.01-2."""
    pytest.importorskip("ray")
    space = search_space(["backward_steps", "recurrence", "smoothing_std", "backward_lr", "windows", "forward_schedule"])
    assert (space["backward_steps"].lower, space["backward_steps"].upper) == (0, 6)  # upper bound exclusive
    assert (space["recurrence"].lower, space["recurrence"].upper) == (1, 5)
    assert sorted(space["smoothing_std"].categories) == [0.0, 0.001, 0.003, 0.01, 0.03, 0.1]
    assert (space["backward_lr"].lower, space["backward_lr"].upper) == (0.01, 2.0)
    assert sorted(space["forward_window"].categories) == sorted(["all", "first-half", "first-80%", "skip-first-20%", "second-half"])
    assert len(space["forward_schedule"].categories) == 5


def test_the_progress_bar_is_quiet_without_a_console_and_tracks_done_of_total():
    from rich.console import Console

    from cli.progress import progress_bar, tracking

    assert progress_bar(None).disable and not progress_bar(Console(file=io.StringIO())).disable
    buf = io.StringIO()
    with tracking(Console(file=buf, width=200), "steps") as update:
        update(3, 10)
    assert "3/10" in buf.getvalue()


def test_any_existing_result_file_in_out_is_refused_without_overwrite(no_ray, tmp_path):
    from ugd_core.errors import UgdError

    for name in ("best-preset.json", "trials.json", "pareto.md"):
        out = tmp_path / name.replace(".", "-")
        out.mkdir()
        (out / name).write_text("{}")
        with pytest.raises(UgdError, match="already exists"):
            tune_suite(KnobSuite(), "t", strategy="beam", base="tfg", rounds=1, trials=2, samples=1, seeds=[300], out_dir=out)
        tune_suite(KnobSuite(), "t", strategy="beam", base="tfg", rounds=1, trials=2, samples=1, seeds=[300], out_dir=out,
                   overwrite=True)
        assert json.loads((out / "best-preset.json").read_text())["name"] == "tuned-suite-t"


def test_a_setting_the_suite_refuses_is_marked_failed_and_the_search_goes_on(no_ray):
    from ugd_core.errors import UgdError

    class Refusing(KnobSuite):
        def evaluate(self, task, settings, seed, n):
            if settings is not None and settings["forward_strength"] == 0.5:
                raise UgdError("this strength cannot run")
            return super().evaluate(task, settings, seed, n)

    result = tune_suite(Refusing(), "t", strategy="beam", base="tfg", rounds=2, trials=20, samples=1, seeds=[300])
    failed = [e for e in result.evaluations if e.error]
    assert failed and all("cannot run" in e.error and not e.complete for e in failed)
    assert result.best.complete and not result.best.error
    assert any(e.label.startswith("beam 2.") for e in result.evaluations)  # the search went on


def test_cli_tune_measures_seed_then_the_next_seeds(tmp_path, monkeypatch):
    """`--seed S --seeds K` evaluates every setting on S, S+1, ..., S+K-1."""
    import types

    from typer.testing import CliRunner

    import cli.main as cli
    from ugd_core import hookimpl, load_registry
    from ugd_core import registry as registry_mod

    suites: list[KnobSuite] = []

    def benchmarks(register):
        register("knobs", lambda: suites.append(KnobSuite()) or suites[-1], description="fake suite (tests)")

    plugin = types.ModuleType("knob_plugin")
    plugin.ugd_register_benchmarks = hookimpl(benchmarks)
    monkeypatch.setattr(registry_mod, "_DEFAULT", load_registry([("knobs", plugin)], entry_points=False))
    monkeypatch.setitem(sys.modules, "ray", None)
    args = ["tune", "knobs", "--strategy", "beam", "--preset", "tfg", "--rounds", "1", "--trials", "2", "--samples", "1",
            "--seed", "310", "--seeds", "3", "--out", str(tmp_path)]
    result = CliRunner().invoke(cli.app, args)
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "trials.json").read_text())["seeds"] == [310, 311, 312]
    assert sorted({seed for s in suites for _, seed in s.calls}) == [310, 311, 312]
