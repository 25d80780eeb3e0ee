"""Backward guidance takes its first loss and gradient from the forward step when both score the same x0_hat
(``UniversalGuidance.reuses_forward_loss``): one guide pass fewer per guided step, the same samples bit for bit."""

import pytest
import torch

from ugd_core import SamplerConfig, make_guide, sample
from ugd_core import testing
from ugd_core.backbones import default_scheduler
from ugd_core.presets import PRESETS
from ugd_core.sampler import UniversalGuidance


def quad():
    return make_guide("quad", f=lambda x: x, loss=lambda out, y: (out - y).pow(3).abs().flatten(1).sum(1), target=0.7)


def run(settings, monkeypatch=None, reuse=True):
    if not reuse:
        monkeypatch.setattr(UniversalGuidance, "reuses_forward_loss", lambda self, k: False)
    backbone = testing.gaussian_backbone(0.2, 0.5, (2, 4, 4), default_scheduler())
    out = sample(backbone, quad(), SamplerConfig(**dict(settings, num_steps=6)), num_images=3, seed=11)
    if not reuse:
        monkeypatch.undo()
    return out


@pytest.mark.parametrize("name", ["auto", "dsg+sgd"])
def test_the_reused_start_gives_the_same_samples_with_fewer_guide_passes(name, monkeypatch):
    settings = dict(PRESETS["auto"][1]) if name == "auto" else dict(PRESETS["dsg"][1], backward_steps=2, backward_lr=0.05)
    reused, plain = run(settings), run(settings, monkeypatch, reuse=False)
    assert torch.equal(reused.latents, plain.latents)
    guided_steps = reused.stats.denoiser_backward  # one forward-guided pass per step and recurrence
    assert plain.stats.guidance.guide_forward - reused.stats.guidance.guide_forward == guided_steps > 0


@pytest.mark.parametrize("knobs", [dict(forward_on="eps", forward_normalize="grad", eta=0.0, forward_strength=0.1),
                                   dict(smoothing_std=0.1), dict(clip_x0=True), dict(backward_normalize="polyak")])
def test_no_reuse_where_the_start_differs_or_draws_noise(knobs):
    run_ = UniversalGuidance(testing.gaussian_backbone(0.2, 0.5, (2, 4, 4), default_scheduler()), None,
                             SamplerConfig(**dict(PRESETS["auto"][1], **knobs)), [torch.Generator()])
    from ugd_core.guidance import as_guide_set
    from ugd_core.sampler import StepKnobs

    run_.guides = as_guide_set(quad())
    k = StepKnobs(forward_strength=0.1, backward_steps=3, backward_lr=0.03, recurrence=1, smoothing_std=knobs.get("smoothing_std", 0.0))
    assert not run_.reuses_forward_loss(k)
