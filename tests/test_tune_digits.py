"""`ugd tune` on the digits world (reached through the registry) with a tiny budget (TFG's beam search, in-process)."""

import json

import pytest
import torch
from typer.testing import CliRunner

from cli.main import app
from ugd_core import load_preset_file
from ugd_core.registry import get_registry

runner = CliRunner()


def test_tune_digits_on_tuning_seeds_with_the_development_objective(tmp_path, monkeypatch):
    """The defaults: tuning seeds (300, ...) and an objective that is the task's guide loss (box), never the
    held-out evaluator; the chosen point is the best candidate and reproduces its recorded metric."""
    from ugd_digits import evaluators

    def refuse(*args, **kwargs):
        raise AssertionError("ugd tune used the held-out evaluator")

    monkeypatch.setattr(evaluators.Evaluators, "__init__", refuse)
    torch.set_num_threads(1)
    params = ["--param", "steps=5", "--param", "cases=2"]
    out = tmp_path / "tune"
    res = runner.invoke(app, ["tune", "digits", "--task", "box", *params, "--strategy", "beam", "--preset", "digits",
                              "--rounds", "1", "--trials", "3", "--samples", "1", "--seeds", "1",
                              "--quality-factor", "1000", "--out", str(out)])
    assert res.exit_code == 0, res.output
    trials = json.loads((out / "trials.json").read_text())
    assert trials["task"] == "box" and trials["strategy"] == "beam" and trials["seeds"] == [300]  # the tuning seeds
    assert sum(e["label"].startswith("beam") for e in trials["evaluations"]) >= 2  # the start and at least one move
    candidates = [e for e in trials["evaluations"] if e["complete"] and e["feasible"] and e["label"] != "unguided"]
    best = next(e for e in trials["evaluations"] if e["label"] == trials["best"])
    assert best["metric"] == max(e["metric"] for e in candidates)

    # Re-measured outside the search: the tuned preset reproduces its recorded metric, which is minus the
    # box task's guide loss (the development objective), not the evaluator's IoU.
    suite = get_registry().build("benchmark", "digits", {"steps": "5", "cases": "2"})
    name, tuned = load_preset_file(out / "best-preset.json")
    again = suite.evaluate("box", tuned, 300, 1)
    assert again["metric"] == pytest.approx(best["metric"]) == pytest.approx(-again["guide_loss"])
    assert name == "tuned-digits-box" and tuned["num_steps"] == 5
