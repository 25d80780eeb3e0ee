"""`ugd bench digits` end to end: the Typer app in this process (one start-up of torch and diffusers for the file;
the console script itself is run by ugd_plugins/digits/tests/test_bench.py and tests/test_startup.py)."""

from __future__ import annotations

import json
import subprocess

from typer.testing import CliRunner

from cli.main import app


def ugd(*args: str) -> subprocess.CompletedProcess:
    """``ugd ARGS`` in process: its exit code, stdout and stderr."""
    res = CliRunner().invoke(app, list(args))
    return subprocess.CompletedProcess(["ugd", *args], res.exit_code, res.stdout, res.stderr)


def test_tiny_step_sweep_reports_both_judges_per_step_count(tmp_path):
    out = tmp_path / "sweep"
    res = ugd("bench", "digits", "--param", "tasks=label", "--param", "samples=1", "--param", "seeds=0",
              "--param", "steps=2,3", "--param", "methods=unguided,forward", "--out", str(out))
    assert res.returncode == 0, res.stdout + res.stderr
    data = json.loads((out / "results.json").read_text())
    assert data["settings"]["steps"] == [2, 3]
    rows = {(r["method"], r["steps"]): r for r in data["rows"]}
    assert set(rows) == {("unguided", 2), ("unguided", 3), ("forward", 2), ("forward", 3)}
    for r in rows.values():
        assert r["denoiser_forward_per_sample"] == r["steps"]
        assert len(r["per_digit_accuracy"]) == 10 and len(r["per_digit_nn_accuracy"]) == 10
        assert 0 <= r["nn_accuracy"] <= 1 and 0 <= r["nn_nondigit"] <= 1 and 0 <= r["class_accuracy"] <= 1
    assert rows[("forward", 3)]["denoiser_backward_per_sample"] == 3
    real = data["real_reference"]
    assert real["classifier"]["ece_after"] < real["classifier"]["ece_before"] and real["nn"]["accuracy"] > 0.8
    md = (out / "results.md").read_text()
    assert "Step sweep" in md and "| forward | " in md and "NN acc" in md
    assert md.startswith("Seeds 0; 1 sample(s) × ") and "2, 3 steps; class term digit-robust." in md.splitlines()[0]  # which seeds made the table
    assert data["settings"]["label_guide"] == "digit-robust" and data["settings"]["guide_weights"] == {}
    assert "note: seeds 0 (no range) lie outside the reported seeds 1000-1999" in res.stderr
    assert (out / "grid-label-forward-3steps.png").exists()


def test_a_run_with_guide_weights_says_so_in_its_table_and_its_json(tmp_path):
    """A run's results name the weights it ran with (a table of `guide_weights=digit-box=4` read as one at the bench's
    own weights would misreport what was measured)."""
    out = tmp_path / "w4"
    res = ugd("bench", "digits", "--param", "tasks=box", "--param", "samples=1", "--param", "cases=2", "--param", "seeds=1000",
              "--param", "steps=2", "--param", "methods=auto", "--param", "guide_weights=digit-box=4", "--out", str(out))
    assert res.returncode == 0, res.stdout + res.stderr
    settings = json.loads((out / "results.json").read_text())["settings"]
    assert settings["guide_weights"] == {"digit-box": 4.0} and settings["label_guide"] == "digit-robust"
    assert "; class term digit-robust; digit-box at weight 4 in every case." in (out / "results.md").read_text().splitlines()[0]


def test_bad_bench_parameters_fail_before_any_work(tmp_path):
    out = tmp_path / "x"
    res = ugd("bench", "digits", "--param", "steps=10,ten", "--out", str(out))
    assert res.returncode == 2 and "steps=" in (res.stdout + res.stderr)
    res = ugd("bench", "digits", "--param", "tasks=label,box", "--param", "samples=1", "--param", "cases=1", "--out", str(out))
    assert res.returncode == 2 and "samples=1 × cases=1 is one image a cell" in res.stdout + res.stderr  # FID needs two
    res = ugd("bench", "digits", "--param", "methods=unguided,no-such-preset", "--out", str(out))
    assert res.returncode == 2 and "no-such-preset" in (res.stdout + res.stderr)
    res = ugd("bench", "digits", "--param", f"label_weights={tmp_path / 'none.safetensors'}", "--out", str(out))
    assert res.returncode == 2 and "label_weights=" in (res.stdout + res.stderr)
    assert not out.exists()


def test_bench_runs_a_preset_file_as_a_method(tmp_path):
    from ugd_core import save_preset_file

    preset = tmp_path / "tuned.json"
    save_preset_file(preset, "tuned", dict(forward_strength=5.0, forward_schedule="abar_normalized"))
    out = tmp_path / "out"
    small = ["--param", "tasks=label", "--param", "samples=1", "--param", "seeds=0", "--param", "steps=3"]
    res = ugd("bench", "digits", *small, "--param", "methods=unguided", "--preset", str(preset), "--out", str(out))
    assert res.returncode == 0, res.stdout + res.stderr
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [r["method"] for r in rows] == ["unguided", str(preset)]
    assert rows[1]["denoiser_backward_per_sample"] == 3  # the preset's forward guidance ran

    res = ugd("bench", "digits", *small, "--preset", str(tmp_path / "missing.json"), "--out", str(tmp_path / "x"))
    assert res.returncode == 2 and "missing.json" in res.stdout + res.stderr and "does not exist" in res.stdout + res.stderr
    assert not (tmp_path / "x").exists()


def test_seeds_outside_checks_both_bounds_of_a_range():
    """A seed above a range (2500 for reported 1000-1999; 400 for tuning 300-399) is outside it."""
    from cli.bench import seeds_outside

    assert "2500" in seeds_outside([1000, 2500], "reported")
    assert "400" in seeds_outside([300, 400], "tuning")
    assert seeds_outside([1000, 1999], "reported") == ""
