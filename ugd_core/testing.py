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
