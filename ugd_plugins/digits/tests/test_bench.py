"""`ugd bench digits` end to end through the `ugd` console script, and the step-sweep parameter."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ugd_core.errors import UgdError
from ugd_digits.bench import DEFAULT_METHODS, PEER_PRESETS, method_settings, parse_steps

UGD = shutil.which("ugd") or str(Path(sys.executable).with_name("ugd"))
ENV = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")


def ugd(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([UGD, *args], capture_output=True, text=True, env=ENV, timeout=600)


def test_parse_steps():
    assert parse_steps("50") == (50,)
    assert parse_steps(50) == (50,)
    assert parse_steps("10, 20,50,100,250,500") == (10, 20, 50, 100, 250, 500)
    for bad in ("", "ten", "0", "10,10", "5,-1"):
        with pytest.raises(UgdError, match="steps="):
            parse_steps(bad)


def test_peer_methods_are_the_registered_presets_by_name():
    from ugd_core.registry import get_registry

    settings = method_settings(DEFAULT_METHODS)
    for name in PEER_PRESETS:
        assert settings[name] == dict(get_registry().get("preset", name).settings)
    assert settings["forward+backward+recurrence"] == dict(get_registry().get("preset", "digits-full").settings)


def test_digits_strong_derives_from_digits_full_and_label_guide_reaches_every_class_term():
    from ugd_core.registry import get_registry
    from ugd_digits.bench import task_cases

    reg = get_registry()
    full, strong = reg.get("preset", "digits-full").settings, reg.get("preset", "digits-strong").settings
    assert {k for k in full.keys() | strong.keys() if full.get(k) != strong.get(k)} == {"recurrence"} and strong["recurrence"] == 5
    for task in ("label", "box", "inpaint"):  # the class term of each task uses the chosen guide
        default = [g for c in task_cases(task, 0, 2) for g in c.guides]
        assert any(g.startswith("digit-robust:label=") for g in default) and not any(g.startswith("digit:") for g in default)
        specs = [g for c in task_cases(task, 0, 2, label_guide="digit") for g in c.guides]
        assert any(g.startswith("digit:label=") for g in specs) and not any(g.startswith("digit-robust:") for g in specs)
    bench = reg.build("benchmark", "digits", {"tasks": "label"})
    assert bench.label_guide == "digit-robust"  # the registered default: the noise-trained guide


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
    assert (out / "grid-label-forward-3steps.png").exists()


def test_bad_bench_parameters_fail_before_any_work(tmp_path):
    out = tmp_path / "x"
    res = ugd("bench", "digits", "--param", "steps=10,ten", "--out", str(out))
    assert res.returncode == 2 and "steps=" in (res.stdout + res.stderr)
    res = ugd("bench", "digits", "--param", "methods=unguided,no-such-preset", "--out", str(out))
    assert res.returncode == 2 and "no-such-preset" in (res.stdout + res.stderr)
    res = ugd("bench", "digits", "--param", f"label_weights={tmp_path / 'none.safetensors'}", "--out", str(out))
    assert res.returncode == 2 and "label_weights=" in (res.stdout + res.stderr)
    assert not out.exists()


@pytest.mark.parametrize("params, message", [(dict(samples=0), "samples=0 must be >= 1"), (dict(cases=-1), "cases=-1 must be >= 1")])
def test_empty_cells_are_refused_when_the_suite_is_made(params, message):
    from ugd_core.errors import UgdError
    from ugd_digits.bench import make_suite

    with pytest.raises(UgdError, match=message):  # a RuntimeError deep in the first cell before
        make_suite(**params)


def test_label_weights_reach_every_class_term_and_the_cell_version(tmp_path):
    """A retrained label guide (``label_weights``) is the class term's weights and changes the cached cells' version."""
    import shutil

    from ugd_digits.bench import make_suite, task_cases
    from ugd_digits.train_guides import weights_path

    import torch

    from ugd_core.guidance import guide_loss

    variant = tmp_path / "variant.safetensors"  # the clean classifier's weights: same architecture, other losses
    shutil.copy(weights_path("digit_classifier"), variant)
    for task in ("label", "box", "inpaint"):
        terms = [g for c in task_cases(task, 0, 2, label_weights=str(variant)) for g in c.guides if g.startswith("digit-robust:")]
        assert terms and all(g.endswith(f',weights="{variant}"') for g in terms)
    plain, swapped = make_suite(tasks="label", methods="digits-full"), make_suite(tasks="label", methods="digits-full", label_weights=str(variant))
    x = torch.randn(4, 1, 32, 32, generator=torch.Generator().manual_seed(0)).clamp(-1, 1)
    loss = {name: guide_loss(plain._guide(spec).guide, x) for name, spec in
            [("variant", task_cases("label", 0, 1, label_weights=str(variant))[2].guides[0]),
             ("clean", "digit:label=2"), ("robust", "digit-robust:label=2")]}
    assert torch.allclose(loss["variant"], loss["clean"]) and not torch.allclose(loss["variant"], loss["robust"])
    assert plain._version("digits-full", 50) != swapped._version("digits-full", 50)


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


def test_generate_defaults_to_the_digits_backbone(tmp_path):
    res = ugd("generate", "--guide", "digit:label=7", "-n", "2", "--steps", "3", "--out", str(tmp_path))
    assert res.returncode == 0, res.stdout + res.stderr
    record = json.loads(sorted(tmp_path.glob("*.json"))[0].read_text())
    assert record["backbone"]["name"] == "digits" and record["preset"] == "auto"
    assert record["sampler"]["num_steps"] == 3  # --steps wins over the backbone's default step count
    assert record["guides"][0]["params"] == {"label": "7"}
