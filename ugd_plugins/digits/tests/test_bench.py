"""The digits bench's parts, and `ugd generate` end to end through the `ugd` console script (the bench's command
line runs in process in tests/test_bench_cli.py)."""

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


def test_generate_defaults_to_the_digits_backbone(tmp_path):
    res = ugd("generate", "--guide", "digit:label=7", "-n", "2", "--steps", "3", "--out", str(tmp_path))
    assert res.returncode == 0, res.stdout + res.stderr
    record = json.loads(sorted(tmp_path.glob("*.json"))[0].read_text())
    assert record["backbone"]["name"] == "digits" and record["preset"] == "auto"
    assert record["sampler"]["num_steps"] == 3  # --steps wins over the backbone's default step count
    assert record["guides"][0]["params"] == {"label": "7"}
