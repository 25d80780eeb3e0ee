"""Gradients of the combined guide loss with respect to the image a guide sees.

Differentiable guides use autograd on a detached leaf; guides with
``differentiable = False`` get an antithetic Gaussian-smoothing estimate
(a zeroth-order estimate: g = E_u[(l(x + s u) - l(x - s u)) / (2 s) u], u ~ N(0, I)).
Optional Gaussian smoothing of the guide's input (TFG's gamma, LGD) averages the
loss over probes x + gamma * n. Samples whose gradient is not finite get a zero
gradient (their guidance is skipped for this step) and are counted (:func:`keep_finite`).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import Tensor

from .guidance import GuideSet, guide_dtype, guide_loss
from .noise import randn


@dataclass
class GuidanceStats:
    """What the guidance did during a run (written into the run spec)."""

    guide_forward: int = 0  # guide network evaluations (batch passes)
    guide_backward: int = 0
    zero_order_guides: set[str] = field(default_factory=set)
    nonfinite_skipped: int = 0  # sample-steps whose guidance was skipped for NaN/inf (set by finish())
    guided_steps: int = 0  # sampler steps with guidance on (counted by end_step())
    skipped_every_step: list[bool] = field(default_factory=list)  # per sample: some guidance skipped at every guided step (finish())
    _pending: Tensor | None = None  # that count, summed on the device: reading it would sync the host
    _by_guide: dict[str, Tensor] = field(default_factory=dict)  # the same, per guide of a composition
    _step: Tensor | None = None  # [N] samples with a skip since the last end_step(), on the device
    _steps_skipped: Tensor | None = None  # [N] guided steps with a skip, per sample, on the device

    def note_nonfinite(self, flags: Tensor, guide: str | None = None) -> None:
        """Add the samples flagged in ``flags`` [N] to the count (of ``guide`` alone when named), on the device."""
        self._step = flags if self._step is None else self._step | flags
        count = flags.sum()
        if guide is not None:
            self._by_guide[guide] = self._by_guide[guide] + count if guide in self._by_guide else count
            return
        self._pending = count if self._pending is None else self._pending + count

    def end_step(self, guided: bool) -> None:
        """Close one sampler step (its recurrence passes included); ``guided``: guidance was on at it."""
        if guided:
            self.guided_steps += 1
            if self._step is not None:
                hit = self._step.long()
                self._steps_skipped = hit if self._steps_skipped is None else self._steps_skipped + hit
        self._step = None

    def finish(self) -> None:
        """Read the device-side counts (once per run) and warn once when guidance was skipped."""
        if self._steps_skipped is not None and self.guided_steps:  # a run guided nowhere has failed (cli.run says so)
            self.skipped_every_step = [bool(s) for s in (self._steps_skipped == self.guided_steps).tolist()]
        self._steps_skipped = None
        by_guide = {name: int(c) for name, c in self._by_guide.items()}
        broken = {name: c for name, c in by_guide.items() if c}
        count = (int(self._pending) if self._pending is not None else 0) + sum(broken.values())
        self._pending, self._by_guide = None, {}
        if count and not self.nonfinite_skipped:
            if broken:
                names = ", ".join(f"{name!r} ({c} sample-steps)" for name, c in broken.items())
                hint = f" from guide {names}: that guide was skipped there while the others kept guiding; check its loss and inputs"
            else:
                hint = ": skipped guidance for the affected samples at those steps (counted in the run's stats); lower the guidance strength"
            warnings.warn(f"non-finite guidance gradient{hint}", RuntimeWarning, stacklevel=3)
        self.nonfinite_skipped += count


@dataclass
class Smoothing:
    """Gaussian smoothing of the guide's input: probes x + n_j, n_j ~ N(0, std^2 I), j < probes, reduced by
    ``mean`` (mean of the losses) or ``log_mean_exp`` (-log mean_j exp(-loss_j): the log of the Monte-Carlo
    mean of the likelihoods, LGD and TFG). With ``shared`` the first draw (in the shape of the image the
    guide sees) is kept and reused by every later call of the step (TFG's shared probes)."""

    std: float = 0.0
    probes: int = 1
    reduce: str = "mean"
    shared: bool = False
    offsets: list[Tensor | None] | None = None

    def draw(self, like: Tensor, generators: Sequence[torch.Generator]) -> list[Tensor | None]:
        """The probes' offsets ([None] = no smoothing)."""
        if self.offsets is not None:
            return list(self.offsets)
        if self.std <= 0:
            return [None]
        offsets: list[Tensor | None] = [self.std * randn(like.shape[1:], generators, like.device, like.dtype) for _ in range(self.probes)]
        if self.shared:
            self.offsets = offsets
        return list(offsets)


@dataclass
class HeldScales:
    """Each guide's normaliser r_i [N] kept over a run, so that a guide whose loss is met takes a shrinking share
    of the step. ``first`` (``guide_normalize="first"``): r_i of the guide's first evaluation, for its loss and
    gradient. ``peak`` (``guide_normalize="peak"``): the largest r_i so far, for the gradient only (the loss
    stays divided by the r_i of the point evaluated, as with ``grad``); its share r_i / max r_i is kept at least
    ``floor`` (the normaliser is min(max r_i, r_i / floor)). A composition reduced by log-mean-exp over probes
    takes the gradient of its loss, so there ``peak`` acts as ``grad``. ``met`` (``guide_normalize="met"``):
    each r_i of the point evaluated, as with ``grad``, and each guide's term scaled by its :meth:`shares`."""

    mode: str = "first"
    floor: float = 0.0
    met_below: float = 0.01
    values: dict[int, Tensor] = field(default_factory=dict)
    starts: list[Tensor] = field(default_factory=list)

    def hold(self, index: int, r: Tensor) -> Tensor:
        if self.mode == "met":
            return r
        if self.mode == "peak":
            old = self.values.get(index)
            self.values[index] = peak = r if old is None else torch.maximum(old, r)
            return torch.minimum(peak, r / self.floor) if self.floor > 0 else peak
        return self.values.setdefault(index, r)

    def shares(self, losses: list[Tensor], weights: Sequence[float] | Tensor | None = None) -> list[Tensor] | None:
        """With ``met``, each guide's share of the step [N] from its own losses l_i [N] (else None): y_i =
        min(1, l_i / (tau l_i0)), l_i0 the guide's loss at its first evaluation in the run and tau ``met_below``, so
        a guide keeps its full share until its loss is below tau times where it started and then yields in
        proportion to what is left; share_i = y_i / max_j y_j, so the least-met guide always steps at full share
        (one guide: 1, exactly) and a met guide's share comes back as soon as its loss rises. Ratios of a guide's
        loss to its own start: multiplying a loss by any c > 0 changes nothing. A start that is not a finite
        positive loss never yields (y = 1), nor does a guide whose weight (``weights``, in the same order) is not
        positive (it is pushed away, not toward a zero); a loss at or below 0 is met (y = 0); where every y is 0, every
        share is 1."""
        if self.mode != "met" or len(losses) < 2:
            return None
        if not self.starts:
            self.starts = [l.detach().clone() for l in losses]
        ys = []
        for i, (loss, start) in enumerate(zip(losses, self.starts)):
            usable = torch.isfinite(start) & (start > 0) & (weights is None or weights[i] > 0)
            y = (loss.detach() / (self.met_below * torch.where(usable, start, torch.ones_like(start)))).clamp(0, 1)
            ys.append(torch.where(usable & torch.isfinite(y), y, torch.ones_like(y)))
        top = torch.stack(ys).amax(0)
        return [torch.where(top > 0, y / torch.where(top > 0, top, torch.ones_like(top)), torch.ones_like(y)) for y in ys]

    def met_limits(self, own: Tensor, weights: Sequence[float] | Tensor) -> Tensor:
        """[G, N] how high each guide's own loss may go in a trial, from the current point's own losses ``own``
        [G, N] and the guides' ``weights`` (floats, or [G, 1]; the differentiable guides first, :func:`loss_order`): a guide that yields
        there (share < 1) may rise up to tau l_i0, so it stays met; every other guide not at all (pareto's own test).
        One guide never yields."""
        n = len(self.starts)
        shares = self.shares(list(own[:n]), weights[:n]) if self.mode == "met" and n > 1 else None
        if shares is None:
            return own
        limits = own.clone()
        for i, (share, start) in enumerate(zip(shares, self.starts)):
            limits[i] = torch.where(share < 1, torch.maximum(own[i], self.met_below * start.to(own.dtype)), own[i])
        return limits

    @property
    def loss_keeps_own(self) -> bool:
        """Whether the loss keeps the normaliser of the point evaluated (only the gradient uses the held one)."""
        return self.mode == "peak"


def per_sample_rms(g: Tensor) -> Tensor:
    """sqrt(mean(g^2)) over every axis but the first, [N], kept above the dtype's smallest normal number."""
    return g.flatten(1).double().pow(2).mean(1).sqrt().clamp(min=torch.finfo(g.dtype).tiny).to(g.dtype)


def _bcast(v: Tensor, like: Tensor) -> Tensor:
    return v.view(-1, *([1] * (like.dim() - 1)))


def seeded_grad(loss: Tensor, leaf: Tensor, half: bool) -> Tensor:
    """The gradient of ``loss.sum()`` [N] with respect to ``leaf`` (the graph kept).

    For a float16 guide network (``half``) the backward is seeded with 1 / |l_n| per sample and the gradient
    scaled back by |l_n| in float32, so that a loss of any scale c enters the network's backward at the same
    magnitude: c l's own gradients would underflow float16's range for small c (or overflow it for large c)
    inside the network, and change the direction that scale-free guidance normalises (mixed-precision loss
    scaling, Micikevicius et al. 2018, Sec. 3.2; torch's GradScaler picks one scale for a whole model, not per
    sample, hence written here). A loss of 0 (or below 1e-12) keeps the seed 1."""
    if not half:
        return torch.autograd.grad(loss.sum(), leaf, retain_graph=True)[0]
    mag = loss.detach().abs()
    scale = torch.where(mag >= 1e-12, mag, torch.ones_like(mag))
    (g,) = torch.autograd.grad((loss / scale).sum(), leaf, retain_graph=True)
    return g * _bcast(scale, g).to(g.dtype)


def loss_order(guides: GuideSet) -> list:
    """The guides in the order :func:`loss_and_grad` reports them (``own_losses``, ``terms``): the
    differentiable ones, then the zero-order ones, each group in the set's order."""
    return sorted(guides.items, key=lambda item: not item.guide.differentiable)  # a stable sort keeps each group's order


def loss_and_grad(
    guides: GuideSet,
    images: Tensor,
    generators: Sequence[torch.Generator],
    stats: GuidanceStats,
    smoothing: Smoothing = Smoothing(),
    zo_probes: int = 8,
    zo_std: float = 0.05,
    t: Tensor | None = None,
    normalize: bool = False,
    held: HeldScales | None = None,
    own_losses: list[Tensor] | None = None,
    terms: list[Tensor] | None = None,
    guide_grads: list[Tensor] | None = None,
) -> tuple[Tensor, Tensor]:
    """Weighted loss per sample [N] and its gradient with respect to ``images``.

    ``images`` is treated as a leaf (detached); callers chain the gradient back to
    z_t or delta with ``torch.autograd.grad(images, wrt, grad)``. ``t`` is the
    backbone's training timestep [N], passed to timestep-aware guides.

    With ``normalize`` (``SamplerConfig.guide_normalize="grad"``) each guide's loss is divided by the
    per-sample RMS r_i of its own gradient (r_i held constant), before the weighted sum: the gradient of
    l_i / r_i is unit-RMS, l_i / r_i does not change when l_i is multiplied by any c > 0, and a guide's
    ``weight`` is its share of the step whatever its loss's units.

    ``own_losses``, when given, receives each guide's own loss [N] (the probes' mean, before its weight and
    normaliser), in :func:`loss_order`. ``terms``, when given (additive
    reductions only), receives each guide's term of the weighted loss [N] in the same order, as computed (a
    non-finite one stays non-finite there, where the sum counts it as 0). ``guide_grads``, when given (additive
    reductions only), receives each guide's term of the gradient in the same order (they sum to the gradient
    returned, up to its non-finite guard).
    """
    x = images.detach()
    total_loss = torch.zeros(x.shape[0], device=x.device)
    total_grad = torch.zeros_like(x)
    offsets = smoothing.draw(x, generators)

    diff = [i for i in guides.items if i.guide.differentiable]
    if diff:
        leaf = x.clone().requires_grad_(True)
        with torch.enable_grad():
            inputs = [leaf if off is None else leaf + off for off in offsets]
            weights = [1.0 if normalize else item.weight for item in diff]  # with normalize, weights apply after it
            unweighted = [torch.stack([guide_loss(item.guide, inp, t) for inp in inputs]) for item in diff]
            if own_losses is not None:
                own_losses.extend(losses.mean(0).detach() for losses in unweighted)
            per_guide = [w * losses for w, losses in zip(weights, unweighted)]
            additive = smoothing.reduce != "log_mean_exp"
            raw: list[Tensor] = []
            shares: list[Tensor] | None = None
            if normalize:  # l_i / r_i, r_i the RMS of g_i = grad l_i (of the probes' mean), held constant
                raw = [seeded_grad(losses.mean(0), leaf, guide_dtype(item.guide) == torch.float16) for item, losses in zip(diff, per_guide)]
                rms = own = [per_sample_rms(g).detach() for g in raw]
                if held is not None:
                    rms = [held.hold(j, r) for j, r in enumerate(rms)]
                    own = own if held.loss_keeps_own else rms
                per_guide = [item.weight * losses / r for item, losses, r in zip(diff, per_guide, own)]
                shares = held.shares([losses.mean(0) for losses in unweighted], [item.weight for item in diff]) if held is not None else None
                if shares is not None:  # guide_normalize="met": a met guide's term shrinks (held constant, like r_i)
                    per_guide = [s * losses for s, losses in zip(shares, per_guide)]
            if not additive:  # not additive over guides: one gradient of the composition
                parts = [(None, math.log(len(offsets)) - torch.logsumexp(-sum(per_guide), dim=0))]
            else:  # additive: one gradient per guide (the same backward work), so a guide that breaks is skipped alone
                names = [item.guide.name for item in diff] if len(diff) > 1 else [None]
                parts = [(name, losses.mean(0)) for name, losses in zip(names, per_guide)]
            for j, (name, loss) in enumerate(parts):
                if raw and additive:  # grad (w_i l_i / r_i) = w_i g_i / r_i: no second backward pass
                    grad = diff[j].weight * raw[j] / _bcast(rms[j], raw[j])
                    if shares is not None:
                        grad = grad * _bcast(shares[j].to(grad.dtype), grad)
                else:
                    (grad,) = torch.autograd.grad(loss.sum(), leaf, retain_graph=j < len(parts) - 1)
                if terms is not None:
                    terms.append(loss.detach())
                if name is not None:
                    bad = ~torch.isfinite(loss)
                    grad = keep_finite(grad.to(x.dtype), torch.zeros_like(x), stats, bad, guide=name)
                    loss = torch.where(bad, torch.zeros_like(loss), loss)
                if guide_grads is not None:
                    guide_grads.append(grad.to(x.dtype))
                total_loss = total_loss + loss.detach()
                total_grad = total_grad + grad.to(x.dtype)
        stats.guide_forward += len(diff) * len(offsets)
        stats.guide_backward += len(diff) * len(offsets) * (2 if normalize and not additive else 1)
    for j, item in enumerate(guides.items):
        if item.guide.differentiable:
            continue
        stats.zero_order_guides.add(item.guide.name)
        with torch.no_grad():
            base = guide_loss(item.guide, x, t)
            if own_losses is not None:
                own_losses.append(base)
            g = torch.zeros_like(x)
            for _ in range(zo_probes):
                u = randn(x.shape[1:], generators, x.device, x.dtype)
                lp = guide_loss(item.guide, x + zo_std * u, t)
                lm = guide_loss(item.guide, x - zo_std * u, t)
                g = g + _bcast((lp - lm) / (2 * zo_std), x).to(x.dtype) * u
            stats.guide_forward += 1 + 2 * zo_probes
        if normalize:
            r = own = per_sample_rms(g / zo_probes)
            if held is not None:
                r = held.hold(len(diff) + j, r)
                own = own if held.loss_keeps_own else r
            base, g = base / own, g / _bcast(r * zo_probes, g)
            term = item.weight * g
        else:
            term = item.weight * g / zo_probes
        total_loss, total_grad = total_loss + item.weight * base, total_grad + term
        if terms is not None:
            terms.append(item.weight * base)
        if guide_grads is not None:
            guide_grads.append(term)
    bad = ~torch.isfinite(total_loss)
    return total_loss, keep_finite(total_grad, torch.zeros_like(total_grad), stats, bad)


def keep_finite(value: Tensor, fallback: Tensor, stats: GuidanceStats, bad: Tensor | None = None, guide: str | None = None) -> Tensor:
    """The sampler's one non-finite guard: samples whose ``value`` has NaN/inf (or flagged in ``bad`` [N])
    get ``fallback`` instead (their guidance is skipped for this step); they are counted on the device
    (no host sync per call), per ``guide`` when one guide of a composition is guarded, and
    :meth:`GuidanceStats.finish` reports them once at the end of the run."""
    nonfinite = ~torch.isfinite(value).flatten(1).all(dim=1)
    if bad is not None:
        nonfinite = nonfinite | bad
    stats.note_nonfinite(nonfinite, guide)
    return torch.where(nonfinite.view(-1, *([1] * (value.dim() - 1))), fallback.detach().to(value.dtype), value)
