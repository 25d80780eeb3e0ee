"""The digits denoisers' shared training run (ugd_digits/training_loop.py), on a tiny random UNet in a temporary
folder: what ships is the EMA, a run resumes where its state stopped, and the flow trainer's log and metadata say
how it started (the module docstrings of train_backbone.py and train_flow.py)."""

from __future__ import annotations

import functools
import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from ugd_digits import train_backbone, train_flow, training_loop


def tiny_unet() -> torch.nn.Module:
    from diffusers import UNet2DModel

    return UNet2DModel(sample_size=32, in_channels=1, out_channels=1, block_out_channels=(8,), layers_per_block=1,
                       down_block_types=("DownBlock2D",), up_block_types=("UpBlock2D",), norm_num_groups=4)


@functools.cache
def train_digits(split: str):  # type: ignore[no-untyped-def]
    return LOAD_DIGITS(split)


LOAD_DIGITS = training_loop.load_digits


def in_tmp(m, tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    """Trainer module ``m`` on a tiny UNet, writing its files under ``tmp_path``."""
    monkeypatch.setattr(m, "backbone_unet", tiny_unet)
    monkeypatch.setattr(training_loop, "load_digits", train_digits)  # loaded once for the file
    for name, file in (("WEIGHTS", "w.safetensors"), ("STATE", "state.pt"), ("LOG", "log.jsonl")):
        monkeypatch.setattr(m, name, tmp_path / file)
    return m


@pytest.fixture(params=[train_backbone, train_flow], ids=["ddpm", "flow"])
def trainer(request, tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    return in_tmp(request.param, tmp_path, monkeypatch)


def run(m, steps: int, *extra: str) -> None:  # type: ignore[no-untyped-def]
    m.main(["--max-steps", str(steps), "--batch", "2", "--save-every", "2", "--threads", "1", *extra])


def test_the_shipped_weights_are_the_ema_and_a_run_resumes_where_it_stopped(trainer, capsys) -> None:  # type: ignore[no-untyped-def]
    """Every checkpoint writes the EMA weights (what ships) and the whole state; a later run resumes from the state's
    step (not from 0) and drops log lines written past it by a killed run."""
    run(trainer, 3)
    state = torch.load(trainer.STATE, weights_only=False)
    assert state["step"] == 3
    weights = load_file(str(trainer.WEIGHTS))
    names = [n for n, _ in tiny_unet().named_parameters()]
    shadow = dict(zip(names, state["ema"]["shadow_params"]))
    raw = state["model"]
    assert all(torch.equal(weights[n], shadow[n]) for n in names)
    assert any(not torch.equal(weights[n], raw[n]) for n in names), "the EMA differs from the raw weights after 3 steps"

    with trainer.LOG.open("a") as fh:  # a line a killed run wrote after its last checkpoint
        fh.write(json.dumps(dict(step=99, loss=1.0, lr=0.0, minutes=0.0)) + "\n")
    run(trainer, 5)
    assert "resumed at step 3" in capsys.readouterr().out
    assert torch.load(trainer.STATE, weights_only=False)["step"] == 5
    with safe_open(str(trainer.WEIGHTS), "pt") as f:
        assert f.metadata()["step"] == "5"
    assert all(json.loads(ln)["step"] <= 5 for ln in trainer.LOG.read_text().splitlines())

    run(trainer, 2, "--fresh")  # --fresh ignores the state
    assert torch.load(trainer.STATE, weights_only=False)["step"] == 2


def test_the_flow_trainer_records_how_it_started(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """train_flow.py: the weights' metadata and the log's first line say `init`; a resumed run keeps the state's."""
    trainer = in_tmp(train_flow, tmp_path, monkeypatch)
    run(trainer, 2)
    header = json.loads(trainer.LOG.read_text().splitlines()[0])
    assert header["step"] == 0 and header["init"] == "random" and header["max_steps"] == 2
    with safe_open(str(trainer.WEIGHTS), "pt") as f:
        meta = f.metadata()
    assert meta["init"] == "random" and meta["recipe"].startswith("rectified flow")
    state = torch.load(trainer.STATE, weights_only=False)
    torch.save(dict(state, init="ddpm"), trainer.STATE)  # a state that began from the DDPM's weights
    run(trainer, 4)
    with safe_open(str(trainer.WEIGHTS), "pt") as f:
        assert f.metadata()["init"] == "ddpm"
    assert json.loads(trainer.LOG.read_text().splitlines()[0]) == header  # the header is not rewritten on resume


def test_the_flow_trainers_save_interval_is_the_documented_one(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """docs/backbones/digits-flow.md, "Training": "Every N steps (`--save-every`)" names the flow trainer's default."""
    import argparse
    import re
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[3] / "docs" / "backbones" / "digits-flow.md").read_text()
    documented = int(re.search(r"Every (\d+) steps \(`--save-every`\)", doc).group(1))  # type: ignore[union-attr]
    parsed = []
    monkeypatch.setattr(train_flow, "train", lambda args, *a, **k: parsed.append(args))
    train_flow.main(["--max-steps", "1"])
    assert parsed[0].save_every == documented
