"""`ugd bench digits --quick` end to end, and the embedded default of `ugd generate`."""

import json

import torch
from typer.testing import CliRunner

from cli.main import app

runner = CliRunner()


def test_quick_bench_completes_and_label_guidance_beats_unguided(tmp_path):
    torch.set_num_threads(1)
    res = runner.invoke(app, ["bench", "digits", "--quick", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    data = json.loads((tmp_path / "results.json").read_text())
    rows = {(r["task"], r["method"]): r for r in data["rows"]}
    assert rows[("label", "forward")]["metric"] > rows[("label", "unguided")]["metric"]
    assert (tmp_path / "results.md").read_text().count("| forward |") == 2  # label and mask tables
    assert (tmp_path / "grid-label-forward.png").exists()


def test_generate_defaults_to_the_digits_backbone(tmp_path):
    res = runner.invoke(app, ["generate", "--guide", "digit:label=7", "-n", "2", "--steps", "10", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    record = json.loads((tmp_path / "ugd-000001.json").read_text())
    assert record["backbone"]["name"] == "digits" and record["preset"] == "digits-full"
    assert record["guides"][0]["params"] == {"label": "7"}


def test_bench_runs_a_preset_file_as_a_method(tmp_path):
    from ugd_core import save_preset_file

    preset = tmp_path / "tuned.json"
    save_preset_file(preset, "tuned", dict(forward_strength=5.0, forward_schedule="increase"))
    out = tmp_path / "out"
    small = ["--param", "tasks=label", "--param", "samples=1", "--param", "seeds=0", "--param", "steps=5"]
    res = runner.invoke(app, ["bench", "digits", *small, "--param", "methods=unguided", "--preset", str(preset), "--out", str(out)])
    assert res.exit_code == 0, res.output
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [r["method"] for r in rows] == ["unguided", str(preset)]
    assert rows[1]["denoiser_backward_per_sample"] == 5  # the preset's forward guidance ran

    res = runner.invoke(app, ["bench", "digits", *small, "--preset", str(tmp_path / "missing.json"), "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and "missing.json" in res.output and "does not exist" in res.output
    assert not (tmp_path / "x").exists()
