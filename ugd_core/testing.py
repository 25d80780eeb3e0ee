"""Test support: a closed-form Gaussian backbone (exact eps of N(mu, std^2) data) that runs the whole
sampler in a fraction of a second. Fixtures for guides (real photos, a tiny CLIP tokenizer) are in
``ugd_kit.testing``; tiny Stable Diffusion pipelines in ``ugd_sd.testing``."""

from __future__ import annotations

from typing import Any

import torch

from .backbones import CallableBackbone


class LinearDDPMSchedule:
    """What the sampler reads from a scheduler (DDPM linear betas, DDIM 'leading' steps), without
    importing diffusers: a Ray worker process that only needs this saves that import."""

    def __init__(self, steps: int = 1000) -> None:
        self.alphas_cumprod = torch.cumprod(1 - torch.linspace(1e-4, 0.02, steps), 0)
        self.steps = steps

    def set_timesteps(self, n: int) -> None:
        self.timesteps = torch.arange(n).mul(self.steps // n).flip(0)


def gaussian_eps(alphas_cumprod: torch.Tensor, mu: float, std: float) -> Any:
    """The exact eps-predictor of data x0 ~ N(mu, std^2) per pixel:
    E[eps | z_t] = sqrt(1 - a) (z - sqrt(a) mu) / (a std^2 + 1 - a)."""

    def eps(z: torch.Tensor, t: torch.Tensor, cond: Any = None) -> torch.Tensor:
        a = alphas_cumprod[t].view(-1, 1, 1, 1).to(z.dtype)
        return (1 - a).sqrt() * (z - a.sqrt() * mu) / (a * std**2 + 1 - a)

    return eps


def gaussian_backbone(mu: float, std: float, shape: tuple[int, ...], scheduler: Any = None, device: str = "cpu") -> CallableBackbone:
    """A closed-form denoiser of N(mu, std^2) images of ``shape`` (default scheduler: :class:`LinearDDPMSchedule`)."""
    sched = scheduler if scheduler is not None else LinearDDPMSchedule()
    return CallableBackbone(gaussian_eps(sched.alphas_cumprod, mu, std), shape, sched, device=device)


def float16_guide(scale: float = 1.0, target: float = 0.5) -> Any:
    """A guide whose network is in float16 (a small random conv net, as a user may load a guide in half
    precision) with a float32 squared-error loss multiplied by ``scale``: to check loss-scale invariance where
    ``scale`` times the loss's gradients would underflow float16's range inside the network."""
    from .guidance import make_guide

    with torch.random.fork_rng(devices=[]):  # torch's default init, seeded, the caller's random state untouched
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Tanh(), torch.nn.Conv2d(8, 4, 3, padding=1)).half()
    return make_guide("float16", f=net, loss=lambda out, y: scale * (out.float() - y).pow(2).mean((1, 2, 3)), target=target, modules=[net])


def loss_scaled(guide: Any, c: float) -> Any:
    """The same guide (a dataclass with ``loss_fn``, as :func:`make_guide` builds) with its loss multiplied by ``c``:
    the probe of loss-scale invariance used by the tests and benchmarks."""
    from dataclasses import replace

    return replace(guide, loss_fn=lambda o, t, f=guide.loss_fn: c * f(o, t))


def one_backward_step(config: Any, guides: Any, x0: torch.Tensor, step: int = 3, steps: int = 10) -> torch.Tensor:
    """delta* of the sampler's own backward guidance at chain step ``step`` of ``steps`` (the default scheduler's
    chain, a Gaussian backbone of x0's shape, one generator per sample, t = 0 for the guides): to check a backward
    step in closed form."""
    from .backbones import default_scheduler
    from .gradients import Smoothing
    from .guidance import as_guide_set
    from .noise import make_generators
    from .sampler import NoiseSchedule, UniversalGuidance

    guidance = UniversalGuidance(gaussian_backbone(0.2, 0.5, tuple(x0.shape[1:]), default_scheduler()), as_guide_set(guides), config,
                                 make_generators(range(x0.shape[0])))
    knobs = guidance.step_knobs(NoiseSchedule.from_scheduler(default_scheduler(), steps))[step]
    return guidance.backward_guidance(x0, torch.zeros(x0.shape[0], dtype=torch.long), knobs, Smoothing())
