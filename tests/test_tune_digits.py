"""`ugd tune` on the digits world (reached through the registry) with a tiny budget (TFG's beam search, in-process)."""

import json

import pytest
import torch
from typer.testing import CliRunner

from cli.main import app
from ugd_core import load_preset_file
from ugd_core.registry import get_registry

runner = CliRunner()


def test_tune_digits_best_point_is_no_worse_than_the_default_preset_on_the_same_seeds(tmp_path):
    torch.set_num_threads(1)
    params = ["--param", "steps=5", "--param", "cases=2"]
    out = tmp_path / "tune"
    res = runner.invoke(app, ["tune", "digits", "--task", "box", *params, "--strategy", "beam", "--preset", "digits",
                              "--rounds", "1", "--trials", "3", "--samples", "1", "--seeds", "1", "--seed", "100",
                              "--quality-factor", "1000", "--out", str(out)])
    assert res.exit_code == 0, res.output
    trials = json.loads((out / "trials.json").read_text())
    assert trials["task"] == "box" and trials["strategy"] == "beam" and trials["seeds"] == [100]
    assert sum(e["label"].startswith("beam") for e in trials["evaluations"]) >= 2  # the start and at least one move

    # Re-measure both on the same seed, outside the search: the tuned preset reproduces its recorded
    # metric and is at least as good as the digits default preset.
    suite = get_registry().build("benchmark", "digits", {"steps": "5", "cases": "2"})
    name, tuned = load_preset_file(out / "best-preset.json")
    default = dict(get_registry().get("preset", "digits").settings)
    tuned_metric = suite.evaluate("box", tuned, 100, 1)["metric"]
    default_metric = suite.evaluate("box", default, 100, 1)["metric"]
    best = next(e for e in trials["evaluations"] if e["label"] == trials["best"])
    assert tuned_metric == pytest.approx(best["metric"])
    assert tuned_metric >= default_metric
    assert name == "tuned-digits-box" and tuned["num_steps"] == 5
