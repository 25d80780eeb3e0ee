"""Algorithm 1's backward coefficient, pinned by a closed form.

Bansal et al. 2023, Algorithm 1 (universal guidance), backward step: with δ* = argmin_δ l(c, f(x̂0 + δ)),
ε̃ = ε̂ − √(a_t / (1 − a_t)) · δ*; docs/algorithm.md's table ("… lands on ε", ``backward_on="eps"``)
states the same, so that x̂0(z_t, ε̃) = x̂0 + δ*. The DDIM step (η = 0) is then
z_{t−1} = √a_{t−1} · x̂0(z_t, ε̃) + √(1 − a_{t−1}) · ε̃, with x̂0(z, ε) = (z − √(1 − a_t) ε) / √a_t.

Here the denoiser is linear (ε̂ = λ z_t), the guide quadratic (l(x) = Σ (x − y)²) and backward guidance m
plain SGD steps of size μ from δ = 0, so δ* = (x̂0 − y)((1 − 2μ)^m − 1) in closed form. Every quantity is
computed by hand from these formulas at a step with a_{t−1} ≠ 1, where z_{t−1} depends on the coefficient:
a coefficient of √((1 − a_t) / a_t) or 1 instead moves z_{t−1} by √(1 − a_{t−1}) · (c' − c) · δ*, far
outside the tolerance (checked below on the hand formulas too).
"""

from __future__ import annotations

import math

import pytest
import torch

from ugd_core import CallableBackbone, NoiseSchedule, SamplerConfig, make_guide, sample
from ugd_core.backbones import default_scheduler

LAMBDA, Y, MU, M, STEPS = 0.5, -1.0, 0.1, 2, 10


def _run() -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
    """Latents after every step, the x̂0 each step used, and the initial z_T (float64, 2 images)."""
    backbone = CallableBackbone(lambda z, t, cond: LAMBDA * z, (3, 2, 2), default_scheduler())
    guide = make_guide("quad", f=lambda x: x, loss=lambda out, y: (out - y).pow(2).flatten(1).sum(1), target=Y)
    cfg = SamplerConfig(num_steps=STEPS, eta=0.0, forward_strength=0.0, recurrence=1, smoothing_std=0.0, backward_steps=M,
                        backward_lr=MU, backward_optimizer="sgd", backward_normalize="none", backward_backtrack=0,
                        backward_on="eps", backward_schedule="constant", clip_x0=False)
    z_T = torch.randn(2, 3, 2, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    latents, x0s = [], []

    def keep(i: int, t: int, d: dict[str, torch.Tensor]) -> None:
        latents.append(d["latents"].clone())
        x0s.append(d["x0"].clone())

    sample(backbone, guide, cfg, num_images=2, latents=z_T, callback_on_step_end=keep)
    return latents, x0s, z_T


def _by_hand(z_t: torch.Tensor, a_t: float, a_prev: float, coefficient: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(x̂0(z_t, ε̃), z_{t−1}) from the paper's formulas with a given backward coefficient."""
    eps_hat = LAMBDA * z_t
    x0_hat = (z_t - math.sqrt(1 - a_t) * eps_hat) / math.sqrt(a_t)
    delta = (x0_hat - Y) * ((1 - 2 * MU) ** M - 1)  # M SGD steps on l(x0_hat + δ), gradient 2 (x0_hat + δ − y)
    eps_tilde = eps_hat - coefficient * delta
    x0_tilde = (z_t - math.sqrt(1 - a_t) * eps_tilde) / math.sqrt(a_t)
    z_prev = math.sqrt(a_prev) * x0_tilde + math.sqrt(1 - a_prev) * eps_tilde
    return x0_tilde, z_prev


@pytest.mark.parametrize("step", [1, 4, 7])
def test_backward_guidance_lands_on_eps_with_the_papers_coefficient(step: int) -> None:
    latents, x0s, z_T = _run()
    chain = NoiseSchedule.from_scheduler(default_scheduler(), STEPS)
    a_t, a_prev = float(chain.alpha_bar[step]), float(chain.alpha_bar_prev[step])
    assert 0.0 < a_t < a_prev < 0.999  # a step whose z_{t-1} still carries noise: the coefficient matters
    z_t = latents[step - 1]
    paper = math.sqrt(a_t / (1 - a_t))
    x0_tilde, z_prev = _by_hand(z_t, a_t, a_prev, paper)
    assert torch.allclose(x0s[step], x0_tilde, rtol=1e-6, atol=1e-8)  # x̂0(z_t, ε̃) = x̂0 + δ*
    assert torch.allclose(latents[step], z_prev, rtol=1e-6, atol=1e-8)
    # the check can fail: the coefficients an implementation might get wrong give other z_{t-1}
    for wrong in (math.sqrt((1 - a_t) / a_t), 1.0, a_t / (1 - a_t), 0.0):
        _, z_wrong = _by_hand(z_t, a_t, a_prev, wrong)
        assert not torch.allclose(z_wrong, latents[step], rtol=1e-3, atol=1e-4), wrong
