"""Gradients of the combined guide loss with respect to the image a guide sees.

Differentiable guides use autograd on a detached leaf; guides with
``differentiable = False`` get an antithetic Gaussian-smoothing estimate
(a zeroth-order estimate: g = E_u[(l(x + s u) - l(x - s u)) / (2 s) u], u ~ N(0, I)).
Optional Gaussian smoothing of the guide's input (TFG's gamma, LGD) averages the
loss over probes x + gamma * n. Samples whose gradient is not finite get a zero
gradient (their guidance is skipped for this step) and are counted.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import Tensor

from .guidance import GuideSet, guide_loss
from .noise import randn


@dataclass
class GuidanceStats:
    """What the guidance did during a run (written into the run spec)."""

    guide_forward: int = 0  # guide network evaluations (batch passes)
    guide_backward: int = 0
    zero_order_guides: set[str] = field(default_factory=set)
    nonfinite_skipped: int = 0  # sample-steps whose guidance was skipped for NaN/inf
    _warned: bool = False

    def note_nonfinite(self, count: int) -> None:
        if count <= 0:
            return
        self.nonfinite_skipped += count
        if not self._warned:
            warnings.warn(
                "non-finite guidance gradient: skipped guidance for the affected samples at this step "
                "(further occurrences are counted in the run's stats); lower the guidance strength",
                RuntimeWarning,
                stacklevel=3,
            )
            self._warned = True


@dataclass
class Smoothing:
    """Gaussian smoothing of the guide's input: loss averaged over x + std * n_j, j < probes."""

    std: float = 0.0
    probes: int = 1


def loss_and_grad(
    guides: GuideSet,
    images: Tensor,
    generators: Sequence[torch.Generator],
    stats: GuidanceStats,
    smoothing: Smoothing = Smoothing(),
    zo_probes: int = 8,
    zo_std: float = 0.05,
) -> tuple[Tensor, Tensor]:
    """Weighted loss per sample [N] and its gradient with respect to ``images``.

    ``images`` is treated as a leaf (detached); callers chain the gradient back to
    z_t or delta with ``torch.autograd.grad(images, wrt, grad)``.
    """
    x = images.detach()
    total_loss = torch.zeros(x.shape[0], device=x.device)
    total_grad = torch.zeros_like(x)
    probes = smoothing.probes if smoothing.std > 0 else 1
    offsets = [smoothing.std * randn(x.shape[1:], generators, x.device, x.dtype) for _ in range(probes)] if smoothing.std > 0 else [None]

    diff = [i for i in guides.items if i.guide.differentiable]
    if diff:
        leaf = x.clone().requires_grad_(True)
        with torch.enable_grad():
            loss = torch.zeros(x.shape[0], device=x.device)
            for off in offsets:
                inp = leaf if off is None else leaf + off
                for item in diff:
                    loss = loss + item.weight * guide_loss(item.guide, inp) / len(offsets)
            (grad,) = torch.autograd.grad(loss.sum(), leaf)
        stats.guide_forward += len(diff) * len(offsets)
        stats.guide_backward += len(diff) * len(offsets)
        total_loss = total_loss + loss.detach()
        total_grad = total_grad + grad
    for item in guides.items:
        if item.guide.differentiable:
            continue
        stats.zero_order_guides.add(item.guide.name)
        with torch.no_grad():
            base = guide_loss(item.guide, x)
            g = torch.zeros_like(x)
            for _ in range(zo_probes):
                u = randn(x.shape[1:], generators, x.device, x.dtype)
                lp = guide_loss(item.guide, x + zo_std * u)
                lm = guide_loss(item.guide, x - zo_std * u)
                g = g + ((lp - lm) / (2 * zo_std)).view(-1, *([1] * (x.dim() - 1))) * u
            stats.guide_forward += 1 + 2 * zo_probes
        total_loss = total_loss + item.weight * base
        total_grad = total_grad + item.weight * g / zo_probes
    return total_loss, zero_nonfinite(total_grad, stats, total_loss)


def zero_nonfinite(grad: Tensor, stats: GuidanceStats, loss: Tensor | None = None) -> Tensor:
    """Zero the gradient of samples whose gradient (or loss) has NaN/inf, and count them."""
    bad = ~torch.isfinite(grad).flatten(1).all(dim=1)
    if loss is not None:
        bad = bad | ~torch.isfinite(loss)
    if bad.any():
        stats.note_nonfinite(int(bad.sum()))
        grad = torch.where(bad.view(-1, *([1] * (grad.dim() - 1))), torch.zeros_like(grad), grad)
    return grad
