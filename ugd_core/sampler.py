"""The universal-guidance sampler (Bansal et al. 2023, Algorithm 1), one step as small pure steps.

    for t in chain:
        for n in 1..k:                                        # self-recurrence
            eps, g = forward_guidance(z_t)                    # eps(z_t) and s(t) * grad_{z_t} l(f(D(x0(z_t, eps))))
            eps += g                         (forward_on = eps)
            delta = backward_guidance(x0(z_t, eps))           # argmin_delta l(f(D(x0 + delta))), m steps
            x0 += delta; eps re-derived at fixed z_t (backward_on = eps) or kept (backward_on = x0)
            z_prev = sqrt(a_prev) x0 + sqrt(1 - a_prev - sigma^2) eps + sigma * noise       # DDIM
            z_prev -= g  (forward_on = z_prev)  or  g / sqrt(a_t / a_prev)  (forward_on = z_t)
            or its noise sigma n turned toward -g on its sphere (forward_on = sphere, DSG)
            if n < k: z_t = self_recurrence(z_prev)
        z_t = z_prev

Every preset (ugd, dps, freedom, mpgd, lgd, tfg, ...) is a :class:`SamplerConfig` for this one loop.
With ``scheduler`` set to a diffusers scheduler, the DDIM line is that scheduler's ``step`` on the
guided eps (:class:`DiffusersSolver`). z_t and the DDIM arithmetic stay in float32 (float64 if the
caller's latents are); backbones and guides cast at their own boundary.
"""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple, Sequence

import torch
from torch import Tensor

from .backbones import Backbone, set_channels_last
from .config import SamplerConfig
from .errors import UgdError
from .gradients import GuidanceStats, HeldScales, Smoothing, keep_finite, loss_and_grad, loss_order, per_sample_rms
from .guidance import GuideSet, as_guide_set
from .noise import make_generators, randn
from .presets import PRESETS
from .schedules import in_window, schedule_values, scheduler_class, scheduler_options, step_takes_noise


@dataclass
class NoiseSchedule:
    """The sampling chain: timesteps (noisiest first) and a_t, a_prev (the step's target) for each."""

    timesteps: list[int]
    alpha_bar: list[float]
    alpha_bar_prev: list[float]

    @classmethod
    def from_scheduler(cls, scheduler: Any, num_steps: int) -> "NoiseSchedule":
        """The scheduler's own timesteps; each step lands where diffusers' ``DDIMScheduler.step`` lands.

        The target of step t is t - T // n (T training steps, n steps), its a_prev the scheduler's
        ``alphas_cumprod`` there, and past t = 0 its ``final_alpha_cumprod`` (1.0 for schedules without
        one). With ``linspace``/``trailing`` spacing t - T // n is not always the next listed timestep:
        diffusers' DDIM steps there, and so does ugd.
        """
        own = getattr(scheduler, "noise_schedule", None)
        if callable(own):  # a chain that is no alphas_cumprod table (flow models: sigmas)
            return own(num_steps)
        acp = scheduler.alphas_cumprod.double()
        scheduler.set_timesteps(num_steps)
        jump = len(acp) // num_steps
        final = float(getattr(scheduler, "final_alpha_cumprod", 1.0))
        ts: list[int] = []
        for t in scheduler.timesteps.tolist():
            t = min(int(round(t)), len(acp) - 1)
            if not ts or t < ts[-1]:
                ts.append(t)
        a = [float(acp[t]) for t in ts]
        return cls(ts, a, [float(acp[t - jump]) if t - jump >= 0 else final for t in ts])


@dataclass(frozen=True)
class StepKnobs:
    """The knobs of one step of the chain, after schedules and windows."""

    forward_strength: float  # s(t); 0 = no forward guidance at this step
    backward_steps: int  # m; 0 = no backward guidance
    backward_lr: float
    recurrence: int  # k; 1 = no self-recurrence
    smoothing_std: float
    backward_backtrack: int | None = None  # the line search's halvings at this step; None = the config's backward_backtrack


class Scored(NamedTuple):
    """A point backward guidance scored: the loss its line search compares [N], the gradient, the step's gain
    [N] (:meth:`UniversalGuidance._compose_gain`) and, with ``backward_merit`` "pareto" or "progress", each
    guide's own loss [G, N] (else None), and with ``backward_merit_scale="relative"`` each guide's term of the
    compared loss."""

    loss: Tensor
    grad: Tensor
    gain: Tensor
    own: Tensor | None
    terms: Tensor | None = None  # [G, N] each guide's term of ``loss`` (backward_merit_scale="relative"), else None


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
            guided_steps=g.guided_steps,
            skipped_every_step=list(g.skipped_every_step),  # per sample of the batch (empty: none skipped)
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


def ddim_sigma(a_t: float, a_prev: float, eta: float) -> float:
    """sigma_t = eta * sqrt((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev))   (DDIM eq. 16)."""
    return eta * ((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)) ** 0.5


def ddim_from_x0(x0: Tensor, eps: Tensor, a_prev: float, sigma: float, noise: Tensor | None) -> Tensor:
    """z_prev = sqrt(a_prev) x0 + sqrt(1 - a_prev - sigma^2) eps + sigma * noise   (DDIM eq. 12)."""
    z_prev = a_prev**0.5 * x0 + max(1 - a_prev - sigma**2, 0.0) ** 0.5 * eps
    return z_prev + sigma * noise if sigma > 0 and noise is not None else z_prev


def ddim_step(z_t: Tensor, eps: Tensor, a_t: float, a_prev: float, eta: float, noise: Tensor | None) -> Tensor:
    """S(z_t, eps, t): one DDIM step, as diffusers' ``DDIMScheduler.step`` with ``variance_noise=noise``."""
    return ddim_from_x0(predict_x0(z_t, eps, a_t), eps, a_prev, ddim_sigma(a_t, a_prev, eta), noise)


def spherical_step(d_sample: Tensor, direction: Tensor, rate: float, radius: float) -> Tensor:
    """DSG's step (Yang et al. 2024, eq. 10-11): d* = -radius g / ||g||, mix = d_sample + rate (d* - d_sample),
    the step is radius mix / ||mix||: on the sphere where the noise d_sample lives, whatever g's length (norms
    per sample). A sample with no direction (g = 0: its guidance skipped) keeps d_sample, as an unguided step."""
    def norm(v: Tensor) -> Tensor:  # DSG's code adds 1e-8 to norms; a floor at the dtype's tiny keeps any g scale-free
        return _bcast(torch.linalg.vector_norm(v.flatten(1), dim=1).clamp(min=torch.finfo(v.dtype).tiny), v)

    g_norm = norm(direction)
    mix = d_sample + rate * (-radius * direction / g_norm - d_sample)
    return torch.where(g_norm > torch.finfo(direction.dtype).tiny, radius * mix / norm(mix), d_sample)


def polyak_shares(terms: Tensor, parts: Tensor, cap: float, weights: Tensor | None = None) -> Tensor:
    """[G, N] how much of its part each guide keeps in a ``backward_normalize="polyak"`` step: min(1, rho_i / cap).

    Guide i alone reaches a loss of 0 to first order with the step l_i g_i / ||g_i||^2 (Polyak's step size with the
    minimum f* = 0: Polyak 1987, Introduction to Optimization, Sec. 5.3.2), whose RMS per element is
    rho_i = l_i / (n RMS(g_i)) = term_i / (n RMS(part_i)) whatever the guide's normaliser and weight (term_i [G, N] and
    part_i [G, N, ...] its terms of the loss and of the gradient with respect to x0; n the elements of a sample);
    cap is the step's nominal length (lr). Scale-free: rho_i does not change when l_i is multiplied by any c > 0.
    A loss at or below 0 counts as met (share 0), as does a non-finite one. A guide with a negative weight ([G, 1]
    ``weights``) asks for its loss to rise, away from any zero: it keeps its whole part."""
    n = parts[0, 0].numel()
    rms = torch.stack([per_sample_rms(p) for p in torch.nan_to_num(parts, nan=0.0, posinf=0.0, neginf=0.0)])
    if cap <= 0:
        return torch.ones_like(rms)
    share = torch.nan_to_num(terms.clamp(min=0) / (n * rms) / cap, nan=0.0, posinf=1.0).clamp(max=1.0)
    return share if weights is None else torch.where(weights < 0, torch.ones_like(share), share)


def polyak_shortened(terms: Tensor, parts: Tensor, cap: float, gain: Tensor, weights: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """The guides' gradient with respect to x0 with each guide's part weighted by its :func:`polyak_shares`, and
    the step's gain: far from a guide's zero the step is the normalised one, near it no longer than what reaches
    it. The gain scales the caller's unit-RMS direction by RMS(shortened) / RMS(sum of the parts), so that one
    guide steps min(lr, rho_i). A non-finite part is left out."""
    share = polyak_shares(terms, parts, cap, weights)
    parts = torch.nan_to_num(parts, nan=0.0, posinf=0.0, neginf=0.0)
    short = (share.view(*share.shape, *([1] * (parts.dim() - 2))).to(parts.dtype) * parts).sum(0)
    return short, gain * per_sample_rms(short) / per_sample_rms(parts.sum(0))


def self_recurrence(z_prev: Tensor, a_t: float, a_prev: float, noise: Tensor) -> Tensor:
    """Re-noise z_{t-1} to z_t: z_t = sqrt(a_t / a_prev) z_prev + sqrt(1 - a_t / a_prev) eps'."""
    return (a_t / a_prev) ** 0.5 * z_prev + (1 - a_t / a_prev) ** 0.5 * noise


class UniversalGuidance:
    """One sampling run's state: backbone, guides, settings, per-sample generators, counters."""

    def __init__(self, backbone: Backbone, guides: GuideSet, config: SamplerConfig, generators: list[torch.Generator]):
        self.backbone, self.guides, self.config, self.gens = backbone, guides, config, generators
        self.stats = SampleStats()
        held = config.guide_normalize in ("first", "peak", "met")
        self.held = HeldScales(config.guide_normalize, config.guide_share_floor, config.guide_met_below) if held else None  # kept over the run
        self.own_start: Tensor | None = None  # [G, N] each guide's own loss at its first evaluation (progress; pareto's slack)

    def _scored(self, images: Tensor, t: Tensor, smoothing: Smoothing, merit: HeldScales | None = None,
                guide_grads: list[Tensor] | None = None) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
        """The guides' compared loss [N] and gradient at ``images`` (normalisers held in ``merit`` when given, else
        the run's), and with ``backward_merit`` "pareto" or "progress" each guide's own loss [G, N] (else None);
        the first own losses of the run are kept as each guide's start l_i0 (``progress``; pareto's
        ``backward_merit_slack``); and with ``backward_merit_scale="relative"`` or ``backward_normalize="polyak"`` each
        guide's term of the loss [G, N] (else None). ``guide_grads``, when given, receives each guide's term of the gradient."""
        c = self.config
        own: list[Tensor] | None = [] if c.backward_merit in ("pareto", "progress") else None
        terms: list[Tensor] | None = [] if c.backward_merit_scale == "relative" or c.backward_normalize == "polyak" else None
        held = merit if merit is not None else self.held
        loss, g_img = loss_and_grad(self.guides, images, self.gens, self.stats.guidance, smoothing, c.zo_probes, c.zo_std, t,
                                    c.guide_normalize != "none", held, own, terms, guide_grads)
        parts = torch.stack(terms) if terms is not None else None
        if own is None:
            return loss, g_img, None, parts
        losses = torch.stack(own)
        if self.own_start is None and self._keeps_start:
            self.own_start = losses.abs().clamp(min=torch.finfo(losses.dtype).tiny)  # a loss that starts at 0 may never rise
        return loss, g_img, losses, parts

    @property
    def _keeps_start(self) -> bool:
        """Whether the run keeps each guide's first own loss l_i0: ``progress`` and pareto's slack measure in it."""
        return self.config.backward_merit == "progress" or self.config.backward_merit_slack > 0

    def _merit(self) -> HeldScales | None:
        """With ``backward_merit="start"`` (and unit-RMS guides), each guide's normaliser r_i held from a line
        search's first evaluation, at x0_hat: every trial is then scored by one fixed function,
        sum_i w_i l_i / r_i(x0_hat), and for one guide an accepted step lowers the raw loss."""
        return HeldScales("first") if self.config.backward_merit == "start" and self.config.guide_normalize == "grad" else None

    def denoise(self, z_t: Tensor, t: Tensor, cond: Any) -> Tensor:
        """eps(z_t, t, c) in z_t's dtype (one denoiser pass)."""
        self.stats.denoiser_forward += 1
        return self.backbone.eps(z_t, t, cond).to(z_t.dtype)

    def x0(self, z_t: Tensor, eps: Tensor, a_t: float, t: Tensor, cond: Any) -> Tensor:
        """x0_hat(z_t, eps). At a_t = 0 (pure noise: a flow's sigma = 1) eps = z_t carries no x0; the backbone's
        ``x0_at_pure_noise(z_t, t, cond)`` (its own prediction from the same pass) gives it."""
        if a_t > 0:
            return predict_x0(z_t, eps, a_t)
        own = getattr(self.backbone, "x0_at_pure_noise", None)
        if own is None:
            raise UgdError(f"the chain starts at a_t = 0 (pure noise), where eps holds no x0 and {type(self.backbone).__name__} "
                           "has no x0_at_pure_noise; use a schedule with a_t > 0 at its first step")
        return own(z_t, t, cond).to(z_t.dtype)

    def forward_guidance(self, z_t: Tensor, t: Tensor, a_t: float, cond: Any, k: StepKnobs,
                         smoothing: Smoothing) -> tuple[Tensor, Tensor | None, Scored | None]:
        """eps(z_t), the forward step s(t) * N(grad_{z_t} l(f(D(x0(z_t, eps))))) (None when off), and, where
        backward guidance will start from this same x0_hat (:meth:`reuses_forward_loss`), the loss and its
        gradient with respect to x0_hat there, so that backward guidance need not evaluate them again.

        N is ``forward_normalize``. With ``forward_input="zt"`` the guide sees z_t itself and only the
        guide is differentiated; otherwise the gradient runs through the denoiser (one backward pass).
        """
        if k.forward_strength == 0.0:
            with torch.no_grad():
                return self.denoise(z_t, t, cond), None, None
        on_zt = self.config.forward_input == "zt"
        at_x0 = None
        with torch.enable_grad():
            z = z_t.detach().requires_grad_(True)
            eps = self.denoise(z.detach() if on_zt else z, t, cond)
            x0 = z if on_zt else self.x0(z, eps, a_t, t, cond)
            images = self.backbone.decode(x0)
            loss, g_img, own, terms = self._scored(images, t, smoothing)
            if self.reuses_forward_loss(k):  # the same chain rule, split at x0_hat
                (g_x0,) = torch.autograd.grad(images, x0, g_img, retain_graph=True)
                (g_z,) = torch.autograd.grad(x0, z, g_x0)
                at_x0 = Scored(loss, keep_finite(g_x0, torch.zeros_like(g_x0), self.stats.guidance), self._compose_gain(g_img), own, terms)
            else:
                (g_z,) = torch.autograd.grad(images, z, g_img)  # chain rule through D (and the denoiser)
        self.stats.denoiser_backward += 0 if on_zt else 1
        g_z = keep_finite(self._normalize(g_z, loss), torch.zeros_like(g_z), self.stats.guidance)
        return eps.detach(), k.forward_strength * g_z, at_x0

    def reuses_forward_loss(self, k: StepKnobs) -> bool:
        """Whether backward guidance starts where the forward step scored the guides, so that it can take their
        loss and gradient from it: the forward step leaves eps (and so x0_hat) as it was, the guide saw x0_hat,
        no probes or zero-order estimates draw fresh noise, no projection moves the start, and the line search
        does not hold its own normalisers from its first evaluation (``backward_merit="start"``) nor need each guide's
        part of the gradient (``backward_normalize="polyak"``)."""
        c = self.config
        return (k.backward_steps > 0 and c.forward_on != "eps" and c.forward_input == "x0" and k.smoothing_std == 0
                and not c.clip_x0 and self._merit() is None and c.backward_normalize != "polyak"
                and all(item.guide.differentiable for item in self.guides.items))

    def _normalize(self, g: Tensor, loss: Tensor) -> Tensor:
        mode = self.config.forward_normalize
        if mode == "grad":  # unit RMS per sample: strength measured in units of eps
            return g / _bcast(per_sample_rms(g), g)
        if mode == "loss":  # DPS (Chung et al. 2023, Alg. 1): zeta_t = zeta / ||y - A(x0_hat)|| = zeta / sqrt(l)
            return g / _bcast(loss.clamp(min=1e-12).sqrt(), g)
        return g

    def _delta_loss_grad(self, x0_hat: Tensor, delta: Tensor, t: Tensor, smoothing: Smoothing,
                         merit: HeldScales | None = None, lr: float = 0.0) -> Scored:
        """l(f(D(x0_hat + delta))) [N] and its gradient with respect to delta (the guide and D only), scored; with
        ``backward_normalize="polyak"`` each guide's part no longer than its own Polyak step (:func:`polyak_shortened`,
        ``lr`` the step's nominal length)."""
        polyak = self.config.backward_normalize == "polyak"
        parts: list[Tensor] | None = [] if polyak else None
        with torch.enable_grad():
            d = delta.detach().requires_grad_(True)
            images = self.backbone.decode(x0_hat + d)
            loss, g_img, own, terms = self._scored(images, t, smoothing, merit, parts)
            gain = self._compose_gain(g_img)
            if polyak:  # each guide's part chained back to delta (one decoder backward a guide), shortened there
                assert terms is not None and parts is not None  # _scored keeps them with "polyak"
                per_guide = [torch.autograd.grad(images, d, p, retain_graph=j < len(parts) - 1)[0] for j, p in enumerate(parts)]
                g_delta, gain = polyak_shortened(terms, torch.stack(per_guide), lr, gain, self._guide_weights(terms))
            else:
                (g_delta,) = torch.autograd.grad(images, d, g_img)
        return Scored(loss, keep_finite(g_delta, torch.zeros_like(g_delta), self.stats.guidance), gain, own, terms)

    def _compose_gain(self, g_img: Tensor) -> Tensor:
        """[N] the length of a normalised backward step in units of one guide's: 1, or with
        ``backward_compose="add"`` and several guides RMS(sum_i w_i g_i / r_i) / max_i |w_i| of the unit-RMS guides'
        weighted sum in the guides' image space (each guide then steps as far as it would alone where the
        guides' gradients are orthogonal; sqrt(2) for two equal orthogonal guides, 2 for parallel ones)."""
        n = g_img.shape[0]
        if self.config.backward_compose != "add" or len(self.guides.items) < 2:
            return torch.ones(n, device=g_img.device, dtype=g_img.dtype)  # x * 1.0 is exact: "share" is unchanged
        return per_sample_rms(g_img) / max(abs(item.weight) for item in self.guides.items)

    def backward_guidance(self, x0_hat: Tensor, t: Tensor, k: StepKnobs, smoothing: Smoothing,
                          start: Scored | None = None) -> Tensor:
        """delta* = argmin_delta l(f(D(x0_hat + delta))): m optimiser steps from delta = 0.

        With ``clip_x0`` the iterate x0_hat + delta is projected onto [-1, 1] before each step and
        at the end (official code, Guided_Diffusion_Imagenet gaussian_diffusion.py:744,795). With
        ``backward_normalize="grad"`` each step's gradient is unit-RMS per sample (lr in x0 units), and
        with ``backward_backtrack`` > 0 the steps are line-searched (:meth:`backward_line_search`).
        Only the guide (and decoder) is differentiated; the denoiser is never re-run. ``start``: the loss and
        gradient at delta = 0 when the forward step already computed them there.
        """
        if self.config.backward_backtrack > 0:
            return self.backward_line_search(x0_hat, t, k, smoothing, start)
        delta = torch.zeros_like(x0_hat, requires_grad=True)
        optimizer = torch.optim.Adam if self.config.backward_optimizer == "adam" else torch.optim.SGD
        opt = optimizer([delta], lr=k.backward_lr)
        for i in range(k.backward_steps):
            self._project(x0_hat, delta)
            at = start if start is not None and i == 0 else self._delta_loss_grad(x0_hat, delta, t, smoothing, lr=k.backward_lr)
            delta.grad = self._backward_direction(at.grad, at.gain)
            opt.step()
        self._project(x0_hat, delta)
        return keep_finite(delta.detach(), torch.zeros_like(x0_hat), self.stats.guidance)

    def _backward_direction(self, g: Tensor, gain: Tensor) -> Tensor:
        return g / _bcast(per_sample_rms(g), g) * _bcast(gain, g) if self.config.backward_normalize != "none" else g

    def backward_line_search(self, x0_hat: Tensor, t: Tensor, k: StepKnobs, smoothing: Smoothing,
                             start: Scored | None = None) -> Tensor:
        """m gradient steps on delta, each backtracked per sample (Armijo-style with a zero slope term,
        Nocedal & Wright Alg. 3.1): a trial delta - lr N(g) is kept for a sample only if its loss falls
        below the current one; otherwise its step is halved, at most ``backward_backtrack`` times (at the chain's last
        step ``backward_final_backtrack`` where set), and a
        sample whose loss stops falling keeps its delta and takes no further steps (they would repeat the
        same rejected trials). The compared loss only ever decreases (x0_hat + delta is not kept in the data range: an
        absurd lr can land where the loss is lower and the image far off), and positive
        rescaling of the loss leaves every comparison (and, with normalised gradients, every step) unchanged.
        With unit-RMS guides the compared loss is sum_i w_i l_i / r_i, each r_i at the point scored (a step can
        lower it while raising l_i), or with ``backward_merit="start"`` held at the search's start (:meth:`_merit`);
        with ``backward_merit="pareto"`` a trial must also leave no guide's own loss higher, with ``"progress"`` not
        raise the guides' summed losses, each in units of its own first loss (:meth:`_own_losses_allow`).
        """
        n = x0_hat.shape[0]
        delta = torch.zeros_like(x0_hat)
        if self.config.clip_x0:
            delta = torch.maximum(torch.minimum(delta, 1 - x0_hat), -1 - x0_hat)
        merit = self._merit()  # held from this search's first evaluation, at x0_hat
        at = start if start is not None else self._delta_loss_grad(x0_hat, delta, t, smoothing, merit, k.backward_lr)
        active = torch.ones(n, dtype=torch.bool, device=x0_hat.device)  # samples whose last step lowered the loss
        for _ in range(k.backward_steps):
            lr = torch.full((n,), k.backward_lr, device=x0_hat.device, dtype=x0_hat.dtype)
            direction = self._backward_direction(at.grad, at.gain)
            pending = active.clone()
            halvings = self.config.backward_backtrack if k.backward_backtrack is None else k.backward_backtrack
            for _ in range(halvings + 1):
                trial = delta - _bcast(lr, delta) * direction
                if self.config.clip_x0:
                    trial = torch.maximum(torch.minimum(trial, 1 - x0_hat), -1 - x0_hat)
                new = self._delta_loss_grad(x0_hat, trial, t, smoothing, merit, k.backward_lr)
                ok = pending & self._falls(new, at)  # a non-finite trial loss never falls: rejected
                if at.own is not None:
                    ok = ok & self._own_losses_allow(new.own, at.own)
                keep = ok.view(-1, *([1] * (delta.dim() - 1)))
                delta = torch.where(keep, trial, delta)
                at = Scored(torch.where(ok, new.loss, at.loss), torch.where(keep, new.grad, at.grad),
                            torch.where(ok, new.gain, at.gain), None if at.own is None else torch.where(ok, new.own, at.own),
                            None if at.terms is None else torch.where(ok, new.terms, at.terms))
                pending = pending & ~ok
                if not bool(pending.any()):  # a data-dependent stop: one host read per trial
                    break
                lr = torch.where(pending, lr / 2, lr)
            # a sample that found no lower loss keeps delta and g, so its next step would repeat the same trials
            active = active & ~pending
            if not bool(active.any()):
                break
        return keep_finite(delta, torch.zeros_like(x0_hat), self.stats.guidance)

    def _guide_weights(self, like: Tensor) -> Tensor:
        """[G, 1] the guides' weights in the order of their own losses and terms (:func:`loss_order`)."""
        weights = [item.weight for item in loss_order(self.guides)]
        return torch.tensor(weights, dtype=like.dtype, device=like.device).view(-1, 1)

    def _falls(self, new: Scored, old: Scored) -> Tensor:
        """[N] whether a trial's compared loss falls: ``absolute``, sum_i m_i' < sum_i m_i; ``relative``,
        sum_i w_i log(m_i' / m_i) < 0 over each guide's term m_i = w_i l_i / r_i (scale-free like the terms; for one
        guide the sign of m' - m, so the same test)."""
        if self.config.backward_merit_scale != "relative":
            return new.loss < old.loss
        assert new.terms is not None and old.terms is not None  # _scored keeps them with "relative"
        tiny = torch.finfo(new.terms.dtype).tiny  # a non-positive term counts as met
        ratio = new.terms.clamp(min=tiny) / old.terms.clamp(min=tiny)
        return (self._guide_weights(ratio) * ratio.log()).sum(0) < 0

    def _own_losses_allow(self, new: Tensor, old: Tensor) -> Tensor:
        """[N] whether a trial's own losses [G, N] pass against the current point's: ``pareto``, no guide's loss
        rises (by more than ``backward_merit_slack`` l_i0; with ``guide_normalize="met"`` a yielding guide above tau
        l_i0, :meth:`HeldScales.met_limits`), or falls for a guide with a negative weight; ``progress``, sum_i w_i (l_i - l_i_old) / l_i0 <= 0, each
        change in units of the guide's own start l_i0 (scale-free; for one guide the sign of l - l_old, so the same
        test as ``pareto``)."""
        assert self.own_start is not None or not self._keeps_start  # set by the run's first evaluation
        if self.config.backward_merit == "pareto":
            # signed by each guide's weight: a guide with a negative weight is to be pushed up (its loss may not fall),
            # one with weight 0 is free
            weights = self._guide_weights(new)
            sign = torch.sign(weights)
            limit = self.held.met_limits(old, weights) if self.held is not None else old  # met: a yielding guide stays met
            limit = torch.where(sign > 0, limit, old)
            slack = self.config.backward_merit_slack * self.own_start if self._keeps_start else torch.zeros_like(old)
            return ((sign * new <= sign * limit + slack) | (sign == 0)).all(0)
        return (self._guide_weights(new) * (new - old) / self.own_start).sum(0) <= 0

    def _project(self, x0_hat: Tensor, delta: Tensor) -> None:
        if self.config.clip_x0:
            with torch.no_grad():
                delta.copy_(torch.maximum(torch.minimum(delta, 1 - x0_hat), -1 - x0_hat))

    def guided_eps(self, z_t: Tensor, t: Tensor, a_t: float, cond: Any, k: StepKnobs) -> tuple[Tensor, Tensor, Tensor | None]:
        """eps and x0_hat after forward and backward guidance at z_t, and the forward step when it lands
        on z_{t-1} or z_t rather than on eps (``forward_on``)."""
        c, stats = self.config, self.stats.guidance
        # with smoothing_shared, one set of probes for this step, drawn in the guide's image shape (TFG tfg.py:99)
        smoothing = Smoothing(k.smoothing_std, c.smoothing_probes, c.smoothing_reduce, shared=c.smoothing_shared)
        eps, step, at_x0 = self.forward_guidance(z_t, t, a_t, cond, k, smoothing)
        if step is not None and c.forward_on == "eps":
            eps, step = keep_finite(eps + step, eps, stats), None  # eps_hat = eps + s(t) grad
        x0 = self.x0(z_t, eps, a_t, t, cond)
        if k.backward_steps > 0:
            delta = self.backward_guidance(x0, t, k, smoothing, at_x0)
            if c.backward_on == "eps":  # eps_tilde = eps_hat - sqrt(a_t / (1 - a_t)) delta, so x0(z_t, eps_tilde) = x0 + delta
                eps = keep_finite(eps - (a_t / (1 - a_t)) ** 0.5 * delta, eps, stats)
            x0 = x0 + delta
        return eps, x0, step

    def step(self, z_t: Tensor, t: Tensor, a_t: float, a_prev: float, cond: Any, k: StepKnobs) -> tuple[Tensor, Tensor]:
        """One guided DDIM step z_t -> (z_{t-1}, the x0_hat it used)."""
        eps, x0, step = self.guided_eps(z_t, t, a_t, cond, k)
        sigma = ddim_sigma(a_t, a_prev, self.config.eta)
        noise = randn(z_t.shape[1:], self.gens, z_t.device, z_t.dtype) if self.config.eta > 0 else None
        if step is not None and self.config.forward_on == "sphere":
            mean = ddim_from_x0(x0, eps, a_prev, sigma, None)
            z_prev = mean + spherical_step(sigma * noise, step, k.forward_strength, sigma * noise[0].numel() ** 0.5)
            return keep_finite(z_prev, mean + sigma * noise, self.stats.guidance).detach(), x0.detach()
        z_prev = ddim_from_x0(x0, eps, a_prev, sigma, noise)
        if step is not None:  # the step lands on z_{t-1}, or on z_t carried by DDPM's 1/sqrt(alpha_t) (TFG tfg.py:129)
            # at a_t = 0 (a flow's sigma = 1) 1/sqrt(alpha_t) is infinite: the guard below skips that step, counted
            scale = ((a_t / a_prev) ** -0.5 if a_t > 0 else float("inf")) if self.config.forward_on == "z_t" else 1.0
            z_prev = keep_finite(z_prev - scale * step, z_prev, self.stats.guidance)
        return z_prev.detach(), x0.detach()

    def step_knobs(self, chain: NoiseSchedule) -> list[StepKnobs]:
        """Per-step strengths after schedules and windows."""
        c, n = self.config, len(chain.timesteps)
        args = (chain.timesteps, chain.alpha_bar, chain.alpha_bar_prev)
        fwd, bwd, smo = (schedule_values(s, *args) for s in (c.forward_schedule, c.backward_schedule, c.smoothing_schedule))
        guided = bool(self.guides)
        return [
            StepKnobs(
                forward_strength=c.forward_strength * fwd[i]
                if guided and in_window(c.forward_window, i, n) and chain.alpha_bar[i] >= c.forward_min_abar
                else 0.0,
                backward_steps=(c.backward_final_steps if i == n - 1 and c.backward_final_steps > 0 else c.backward_steps)
                if guided and in_window(c.backward_window, i, n) else 0,
                backward_lr=c.backward_lr * bwd[i],
                recurrence=c.recurrence if in_window(c.recurrence_window, i, n) else 1,
                smoothing_std=c.smoothing_std * smo[i],
                backward_backtrack=c.backward_final_backtrack if i == n - 1 and c.backward_final_backtrack > 0 else c.backward_backtrack,
            )
            for i in range(n)
        ]


class DDIMSolver:
    """ugd's exact DDIM (``scheduler="ddim"``): the chain of :class:`NoiseSchedule`, z_t in VP units."""

    def __init__(self, scheduler: Any, num_steps: int):
        self.chain = NoiseSchedule.from_scheduler(scheduler, num_steps)

    def start(self, z: Tensor) -> Tensor:
        return z

    def snapshot(self) -> None:
        pass

    def restore(self, repeat: bool) -> None:
        pass

    def step(self, run: UniversalGuidance, x: Tensor, i: int, t: Tensor, cond: Any, k: StepKnobs) -> tuple[Tensor, Tensor]:
        return run.step(x, t, self.chain.alpha_bar[i], self.chain.alpha_bar_prev[i], cond, k)

    def renoise(self, x_prev: Tensor, i: int, noise: Tensor) -> Tensor:
        return self_recurrence(x_prev, self.chain.alpha_bar[i], self.chain.alpha_bar_prev[i], noise)


class DiffusersSolver(DDIMSolver):
    """Guided steps through any diffusers scheduler (``SamplerConfig.scheduler``), built with ``from_config``
    from the backbone's scheduler (prediction_type epsilon: backbones return eps).

    Guidance acts on eps and on the x0_hat of the same step (forward and backward ``*_on="eps"``); the
    scheduler then steps with the guided eps. Its sample x is the VP z_t times 1 / sqrt(a_t) for
    sigma-space schedulers (Euler, Heun), so self-recurrence re-noises z = x sqrt(a) from the step's
    target back to t with the scheduler's own a_t (from its sigmas). A repeated step restores the
    scheduler's state (step index, multistep history) from a snapshot taken before the first try, and
    drops a predictor-corrector's ``last_sample`` so that the re-noised z_t is not "corrected".
    """

    def __init__(self, name: str, base: Any, num_steps: int, turn_noise: bool = False):
        # every setting of the backbone's scheduler, its defaults included: from_config drops the keys the
        # source left at its own defaults, and another class's defaults differ (DDIM's "leading" timestep
        # spacing became DPM-Solver's "linspace", which starts at t = 999 where a cosine schedule's a_t ~ 2e-9)
        settings = {k: v for k, v in base.config.items() if k != "_use_default_values"}
        settings.update(scheduler_options(name))
        self.scheduler = sched = scheduler_class(name).from_config(settings, prediction_type="epsilon")
        sched.set_timesteps(num_steps)
        self.takes_generator = "generator" in inspect.signature(sched.step).parameters
        # the spherical forward step turns the step's noise: drawn here per image, handed to the step
        self.turns_noise = turn_noise and step_takes_noise(sched)
        if turn_noise and not self.turns_noise:
            raise UgdError(f"forward_on='sphere' turns each step's noise, and {type(sched).__name__} as configured takes none from "
                           "the sampler: use scheduler='ddim' with eta > 0 or a stochastic solver (dpm++-sde), or --preset auto-eps")
        acp = sched.alphas_cumprod.double()
        self.raw_timesteps = list(sched.timesteps)
        ts = [min(int(round(float(t))), len(acp) - 1) for t in self.raw_timesteps]
        sigmas = getattr(sched, "sigmas", None)
        if sigmas is not None and len(sigmas) > len(ts):  # a = 1 / (1 + sigma^2), the last target included
            a_all = [1 / (1 + float(s) ** 2) for s in sigmas[: len(ts) + 1]]
        else:
            a_all = [float(acp[t]) for t in ts] + [float(getattr(sched, "final_alpha_cumprod", 1.0))]
        self.chain = NoiseSchedule(ts, a_all[:-1], a_all[1:])
        self.sigma_space = float(sched.init_noise_sigma) > 1.0
        self.acp = acp
        self._state: dict[str, Any] = {}

    def start(self, z: Tensor) -> Tensor:
        return z * float(self.scheduler.init_noise_sigma)

    def snapshot(self) -> None:
        self._state = dict(vars(self.scheduler))

    def restore(self, repeat: bool) -> None:
        state = vars(self.scheduler)
        state.clear()  # lists (multistep histories) are copied so that a repeated step cannot grow them
        state.update({k: list(v) if isinstance(v, list) else v for k, v in self._state.items()})
        if repeat and "last_sample" in state:  # a re-noised z_t is no predictor output: skip the corrector (UniPC)
            state["last_sample"] = None

    def step(self, run: UniversalGuidance, x: Tensor, i: int, t: Tensor, cond: Any, k: StepKnobs) -> tuple[Tensor, Tensor]:
        sched, t_sched = self.scheduler, self.raw_timesteps[i]
        z = sched.scale_model_input(x, t_sched)
        eps, x0, step = run.guided_eps(z, t, float(self.acp[self.chain.timesteps[i]]), cond, k)
        kwargs: dict[str, Any] = {}
        if self.turns_noise:  # unit noise turned as DDIM's sigma_t n is (the step scales it by its own sigma)
            noise = randn(x.shape[1:], run.gens, x.device, x.dtype)
            turned = noise if step is None else spherical_step(noise, step, k.forward_strength, noise[0].numel() ** 0.5)
            kwargs["variance_noise"] = keep_finite(turned, noise, run.stats.guidance)
        elif self.takes_generator:
            kwargs["generator"] = run.gens[0] if all(g is run.gens[0] for g in run.gens) else run.gens
        x_prev = sched.step(eps.to(x.dtype), t_sched, x, **kwargs).prev_sample
        return x_prev.detach(), x0.detach()

    def renoise(self, x_prev: Tensor, i: int, noise: Tensor) -> Tensor:
        a_t, a_prev = self.chain.alpha_bar[i], self.chain.alpha_bar_prev[i]
        scale_t, scale_prev = (a_t**0.5, a_prev**0.5) if self.sigma_space else (1.0, 1.0)
        return self_recurrence(x_prev * scale_prev, a_t, a_prev, noise) / scale_t


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
    """Draw ``num_images`` samples from ``backbone`` steered by ``guides`` (``config`` None: the ``auto``
    preset where guides are given, plain DDIM without them).

    Randomness is per image: ``seed=s`` gives image i the seed s + i (a list gives
    each image's seed), so an image depends only on its own seed. A single
    ``generator`` is used as in diffusers. ``callback_on_step_end(i, t, tensors)``
    may return ``{"latents": ...}`` to replace z_t.
    """
    guide_set = as_guide_set(guides)
    if config is None:  # the default of every backbone where guides are given (without guides no knob acts)
        config = SamplerConfig(**PRESETS["auto"][1]) if guide_set else SamplerConfig()
    if not isinstance(config, SamplerConfig):
        raise UgdError(f"config must be a SamplerConfig (SamplerConfig(**settings) or SamplerConfig.from_dict(d)), got {type(config).__name__}")
    if not isinstance(num_images, int) or num_images < 1:
        raise UgdError(f"num_images must be a whole number >= 1, got {num_images!r}")
    if latents is not None and tuple(latents.shape) != (num_images, *backbone.sample_shape):
        raise UgdError(f"latents of shape {tuple(latents.shape)} for {num_images} images of shape {tuple(backbone.sample_shape)}: "
                       f"pass latents of shape {(num_images, *backbone.sample_shape)}")
    if latents is not None and not bool(torch.isfinite(latents).all()):
        raise UgdError("latents hold NaN or inf values, which every step would carry into the images; pass finite latents")
    gens = _generators(num_images, seed, generator)
    configure = getattr(backbone, "configure", None)
    if configure is not None:  # precision and memory knobs (optional part of the Backbone protocol)
        configure(config)
    set_channels_last(config.channels_last, *(m for item in guide_set.items for m in getattr(item.guide, "modules", ())))
    run = UniversalGuidance(backbone, guide_set, config, gens)
    solver = (DDIMSolver(backbone.scheduler, config.num_steps) if config.scheduler == "ddim"
              else DiffusersSolver(config.scheduler, backbone.scheduler, config.num_steps, config.forward_on == "sphere"))
    chain = solver.chain
    knobs = run.step_knobs(chain)
    dev = backbone.device
    start = time.perf_counter()

    if latents is not None:  # float32 at least (float64 latents keep float64)
        z = latents.to(dev, torch.promote_types(latents.dtype, torch.float32))
    else:
        z = randn(backbone.sample_shape, gens, dev)
    z = solver.start(z)
    cond = backbone.condition(prompt, negative_prompt, num_images, config.cfg_scale)
    for i, t_int in enumerate(chain.timesteps):
        t = torch.full((num_images,), t_int, device=dev, dtype=torch.long if isinstance(t_int, int) else torch.float32)
        k = knobs[i]
        solver.snapshot()
        for n in range(k.recurrence):
            solver.restore(repeat=n > 0)
            z_prev, x0 = solver.step(run, z, i, t, cond, k)
            if n < k.recurrence - 1:  # self-recurrence: back to t with fresh noise
                z = solver.renoise(z_prev, i, randn(z.shape[1:], gens, dev, z.dtype))
        z = z_prev
        run.stats.guidance.end_step(k.forward_strength != 0 or k.backward_steps > 0)  # for the per-sample failure flag
        if callback_on_step_end is not None:
            changed = callback_on_step_end(i, t_int, {"latents": z, "x0": x0})
            if changed and "latents" in changed:
                z = changed["latents"]
        if progress is not None:
            progress(i + 1, len(chain.timesteps))
    with torch.no_grad():
        images = backbone.decode(z).clamp(-1, 1)
    run.stats.guidance.finish()  # the one host read of the non-finite count
    run.stats.seconds = time.perf_counter() - start
    return SampleResult(images, z, run.stats)


def _generators(n: int, seed: int | Sequence[int] | None, generator: Any) -> list[torch.Generator]:
    if generator is not None:
        gens = list(generator) if isinstance(generator, (list, tuple)) else [generator] * n
        if len(gens) != n:
            raise UgdError(f"{len(gens)} generators for {n} images: pass one generator per image, or a single one")
        return gens
    if seed is None:
        seed = int(torch.randint(0, 2**31 - 1, (1,)).item())
    seeds = [int(seed) + i for i in range(n)] if isinstance(seed, int) else [int(s) for s in seed]
    if len(seeds) != n:
        raise UgdError(f"{len(seeds)} seeds for {n} images: pass one seed per image, or a single int (image i gets seed + i)")
    if min(seeds) < 0:
        raise UgdError(f"seed {min(seeds)} is negative: seeds are whole numbers >= 0")
    return make_generators(seeds)


