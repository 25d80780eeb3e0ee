"""The universal-guidance sampler (Bansal et al. 2023, Algorithm 1).

    for t in schedule:
        for n in 1..k:                                   # self-recurrence
            eps  = eps(z_t, t, c)                        # one denoiser pass, with grad if guiding
            eps += s(t) * grad_{z_t} l(f(D(x0(z_t, eps))))           # forward guidance
            eps -= sqrt(a_t / (1 - a_t)) * argmin_delta l(f(D(x0 + delta)))   # backward guidance
            z_prev = DDIM(z_t, eps)
            if n < k: z_t = renoise(z_prev)
        z_t = z_prev

Every preset (ugd, dps, freedom, mpgd, ...) is a :class:`SamplerConfig` for this
one loop.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from .backbones import Backbone
from .config import SamplerConfig
from .gradients import GuidanceStats, Smoothing, loss_and_grad, zero_nonfinite
from .guidance import GuideSet, as_guide_set
from .noise import make_generators, randn
from .schedules import in_window, schedule_values


@dataclass
class NoiseSchedule:
    """The sampling chain: timesteps (noisiest first) and a_t, a_prev for each."""

    timesteps: list[int]
    alpha_bar: list[float]
    alpha_bar_prev: list[float]

    @classmethod
    def from_scheduler(cls, scheduler: Any, num_steps: int) -> "NoiseSchedule":
        """Use any diffusers scheduler's ``alphas_cumprod`` and its timestep spacing."""
        acp = scheduler.alphas_cumprod.double()
        scheduler.set_timesteps(num_steps)
        ts: list[int] = []
        for t in scheduler.timesteps.tolist():
            t = int(round(t))
            if not ts or t < ts[-1]:
                ts.append(min(t, len(acp) - 1))
        a = [float(acp[t]) for t in ts]
        return cls(ts, a, a[1:] + [1.0])  # a_prev = 1 past the last step (SPEC.md)


@dataclass
class SampleStats:
    """Cost and behaviour of one run, counted in batch passes (= evaluations per sample)."""

    denoiser_forward: int = 0
    denoiser_backward: int = 0
    seconds: float = 0.0
    guidance: GuidanceStats = field(default_factory=GuidanceStats)

    def to_dict(self) -> dict[str, Any]:
        g = self.guidance
        return dict(
            denoiser_forward=self.denoiser_forward,
            denoiser_backward=self.denoiser_backward,
            guide_forward=g.guide_forward,
            guide_backward=g.guide_backward,
            zero_order_guides=sorted(g.zero_order_guides),
            nonfinite_skipped=g.nonfinite_skipped,
            seconds=round(self.seconds, 4),
        )


@dataclass
class SampleResult:
    """Decoded images in [-1, 1], final latents, and what the run cost."""

    images: Tensor
    latents: Tensor
    stats: SampleStats


def _bcast(v: Tensor | float, like: Tensor) -> Tensor:
    return torch.as_tensor(v, dtype=like.dtype, device=like.device).view(-1, *([1] * (like.dim() - 1)))


def predict_x0(z_t: Tensor, eps: Tensor, a_t: float) -> Tensor:
    """x0(z_t, eps) = (z_t - sqrt(1 - a_t) eps) / sqrt(a_t)."""
    return (z_t - (1 - a_t) ** 0.5 * eps) / a_t**0.5


def ddim_step(z_t: Tensor, eps: Tensor, a_t: float, a_prev: float, eta: float, noise: Tensor | None) -> Tensor:
    """S(z_t, eps, t): z_prev = sqrt(a_prev) x0 + sqrt(1 - a_prev - sigma^2) eps + sigma * noise."""
    x0 = predict_x0(z_t, eps, a_t)
    sigma = eta * ((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)) ** 0.5
    z_prev = a_prev**0.5 * x0 + max(1 - a_prev - sigma**2, 0.0) ** 0.5 * eps
    if sigma > 0 and noise is not None:
        z_prev = z_prev + sigma * noise
    return z_prev


def renoise(z_prev: Tensor, a_t: float, a_prev: float, noise: Tensor) -> Tensor:
    """Self-recurrence: z_t = sqrt(a_t / a_prev) z_prev + sqrt(1 - a_t / a_prev) eps'."""
    return (a_t / a_prev) ** 0.5 * z_prev + (1 - a_t / a_prev) ** 0.5 * noise


class UniversalGuidance:
    """One sampling run's state: backbone, guides, settings, per-sample generators, counters."""

    def __init__(self, backbone: Backbone, guides: GuideSet, config: SamplerConfig, generators: list[torch.Generator]):
        self.backbone, self.guides, self.cfg, self.gens = backbone, guides, config, generators
        self.stats = SampleStats()

    def _grad(self, images: Tensor, smoothing: float) -> tuple[Tensor, Tensor]:
        return loss_and_grad(
            self.guides,
            images,
            self.gens,
            self.stats.guidance,
            Smoothing(smoothing, self.cfg.smoothing_probes),
            self.cfg.zo_probes,
            self.cfg.zo_std,
        )

    def _guide_input(self, x: Tensor) -> Tensor:
        return self.backbone.decode(x.clamp(-1, 1) if self.cfg.clip_x0 else x)

    def guided_eps(self, z_t: Tensor, t: Tensor, a_t: float, cond: Any, knobs: dict[str, Any]) -> Tensor:
        """eps_tilde at one step: the denoiser's eps plus forward and backward guidance."""
        forward = knobs["forward"] != 0.0
        naive = forward and self.cfg.forward_input == "zt"
        with torch.enable_grad() if forward and not naive else torch.no_grad():
            z = z_t.detach().requires_grad_(forward and not naive)
            eps = self.backbone.eps(z, t, cond)
            self.stats.denoiser_forward += 1
            if forward:
                src = z_t.detach().requires_grad_(True) if naive else z
                with torch.enable_grad():
                    images = self._guide_input(src if naive else predict_x0(z, eps, a_t))
                loss, g_img = self._grad(images, knobs["smoothing"])
                # chain rule through D (and, for universal guidance, the denoiser): grad_{z_t} l
                (g_z,) = torch.autograd.grad(images, src, g_img)
                self.stats.denoiser_backward += 0 if naive else 1
                g_z = zero_nonfinite(self._normalize(g_z, loss), self.stats.guidance)
                eps = self._finite(eps + knobs["forward"] * g_z, eps)  # eps_hat = eps + s(t) grad (forward guidance)
        eps = eps.detach()
        if knobs["backward_steps"] > 0:
            delta = self.backward_delta(predict_x0(z_t, eps, a_t), knobs)
            eps = self._finite(eps - (a_t / (1 - a_t)) ** 0.5 * delta, eps)  # x0(z_t, eps_tilde) = x0_hat + delta*
        return eps

    def _finite(self, guided: Tensor, fallback: Tensor) -> Tensor:
        """Keep ``fallback`` for samples whose guided eps overflowed to inf/NaN (counted, warned once)."""
        bad = ~torch.isfinite(guided).flatten(1).all(dim=1)
        if not bad.any():
            return guided
        self.stats.guidance.note_nonfinite(int(bad.sum()))
        return torch.where(bad.view(-1, *([1] * (guided.dim() - 1))), fallback.detach(), guided)

    def backward_delta(self, x0_hat: Tensor, knobs: dict[str, Any]) -> Tensor:
        """delta* = argmin_delta l(f(D(x0_hat + delta))): m optimiser steps from delta = 0.

        Only the guide (and decoder) is differentiated; the denoiser is never re-run.
        """
        delta = torch.zeros_like(x0_hat, requires_grad=True)
        lr = knobs["backward_lr"]
        opt = torch.optim.Adam([delta], lr=lr) if self.cfg.backward_optimizer == "adam" else torch.optim.SGD([delta], lr=lr)
        for _ in range(knobs["backward_steps"]):
            with torch.enable_grad():
                images = self._guide_input(x0_hat + delta)
            _, g_img = self._grad(images, knobs["smoothing"])
            (g_delta,) = torch.autograd.grad(images, delta, g_img)
            delta.grad = zero_nonfinite(g_delta, self.stats.guidance)
            opt.step()
        return delta.detach()

    def _normalize(self, g: Tensor, loss: Tensor) -> Tensor:
        mode = self.cfg.forward_normalize
        if mode == "grad":  # unit RMS per sample: strength measured in units of eps
            rms = g.flatten(1).pow(2).mean(1).sqrt().clamp(min=1e-12)
            return g / _bcast(rms, g)
        if mode == "loss":  # DPS: step divided by the residual norm sqrt(l)
            return g / _bcast(loss.clamp(min=1e-12).sqrt(), g)
        return g

    def step_knobs(self, chain: NoiseSchedule) -> list[dict[str, Any]]:
        """Per-step strengths after schedules and windows."""
        c, n = self.cfg, len(chain.timesteps)
        ts, ab = chain.timesteps, chain.alpha_bar
        fwd = schedule_values(c.forward_schedule, ts, ab)
        bwd = schedule_values(c.backward_schedule, ts, ab)
        smo = schedule_values(c.smoothing_schedule, ts, ab)
        guided = bool(self.guides)
        out = []
        for i in range(n):
            out.append(
                dict(
                    forward=c.forward_strength * fwd[i] if guided and in_window(c.forward_window, i, n) else 0.0,
                    backward_steps=c.backward_steps if guided and in_window(c.backward_window, i, n) else 0,
                    backward_lr=c.backward_lr * bwd[i],
                    recurrence=c.recurrence if in_window(c.recurrence_window, i, n) else 1,
                    smoothing=c.smoothing_std * smo[i],
                )
            )
        return out


def sample(
    backbone: Backbone,
    guides: Any = None,
    config: SamplerConfig | None = None,
    *,
    num_images: int = 1,
    seed: int | Sequence[int] | None = None,
    generator: torch.Generator | list[torch.Generator] | None = None,
    prompt: Any = None,
    negative_prompt: Any = None,
    latents: Tensor | None = None,
    callback_on_step_end: Callable[[int, int, dict[str, Tensor]], dict[str, Tensor] | None] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> SampleResult:
    """Draw ``num_images`` samples from ``backbone`` steered by ``guides``.

    Randomness is per image: ``seed=s`` gives image i the seed s + i (a list gives
    each image's seed), so an image depends only on its own seed. A single
    ``generator`` is used as in diffusers. ``callback_on_step_end(i, t, tensors)``
    may return ``{"latents": ...}`` to replace z_t.
    """
    cfg = config or SamplerConfig()
    guide_set = as_guide_set(guides)
    gens = _generators(num_images, seed, generator)
    configure = getattr(backbone, "configure", None)
    if configure is not None:  # precision and memory knobs (optional part of the Backbone protocol)
        configure(cfg)
    run = UniversalGuidance(backbone, guide_set, cfg, gens)
    chain = NoiseSchedule.from_scheduler(backbone.scheduler, cfg.num_steps)
    knobs = run.step_knobs(chain)
    dev = backbone.device
    start = time.perf_counter()

    z = latents.to(dev) if latents is not None else randn(backbone.sample_shape, gens, dev)
    cond = backbone.condition(prompt, negative_prompt, num_images, cfg.cfg_scale)
    for i, (t_int, a_t, a_prev) in enumerate(zip(chain.timesteps, chain.alpha_bar, chain.alpha_bar_prev)):
        t = torch.full((num_images,), t_int, device=dev, dtype=torch.long)
        k = knobs[i]
        for n in range(k["recurrence"]):
            eps = run.guided_eps(z, t, a_t, cond, k)
            x0 = predict_x0(z, eps, a_t)
            noise = randn(backbone.sample_shape, gens, dev) if cfg.eta > 0 else None
            z_prev = ddim_step(z, eps, a_t, a_prev, cfg.eta, noise)
            if n < k["recurrence"] - 1:
                z = renoise(z_prev, a_t, a_prev, randn(backbone.sample_shape, gens, dev))
        z = z_prev.detach()
        if callback_on_step_end is not None:
            changed = callback_on_step_end(i, t_int, {"latents": z, "x0": x0})
            if changed and "latents" in changed:
                z = changed["latents"]
        if progress is not None:
            progress(i + 1, len(chain.timesteps))
    with torch.no_grad():
        images = backbone.decode(z).clamp(-1, 1)
    run.stats.seconds = time.perf_counter() - start
    return SampleResult(images, z, run.stats)


def _generators(n: int, seed: int | Sequence[int] | None, generator: Any) -> list[torch.Generator]:
    if generator is not None:
        gens = list(generator) if isinstance(generator, (list, tuple)) else [generator] * n
        if len(gens) != n:
            raise ValueError(f"{len(gens)} generators for {n} images")
        return gens
    if seed is None:
        seed = int(torch.randint(0, 2**31 - 1, (1,)).item())
    seeds = [int(seed) + i for i in range(n)] if isinstance(seed, int) else [int(s) for s in seed]
    if len(seeds) != n:
        raise ValueError(f"{len(seeds)} seeds for {n} images")
    return make_generators(seeds)


