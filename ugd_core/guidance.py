"""Guidance functions: an off-the-shelf network f, a loss l, a target c and a preprocess.

A guide sees images as float tensors NCHW in [-1, 1] on the sampler's device, in
its network's own dtype; ``preprocess`` owns resizing and normalisation for its
network, ``f`` runs the network (``f(x, t)`` for a timestep-aware guide, t the
backbone's training timesteps [N]), and ``loss(f(preprocess(images)), target)``
returns one value per sample.
Guides never call ``backward`` or step an optimiser: the sampler owns every
gradient.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Protocol, Sequence, runtime_checkable

import torch
from torch import Tensor, nn

from .errors import UgdError


@runtime_checkable
class GuidanceFunction(Protocol):
    """What the sampler needs from a guide."""

    name: str
    differentiable: bool
    target: Any

    def preprocess(self, images: Tensor) -> Tensor:
        """Images in [-1, 1] (NCHW) -> the network's input."""
        ...

    def f(self, x: Tensor) -> Any:
        """Run the frozen network (``f(x, t)`` when the guide sets ``timestep_aware = True``)."""
        ...

    def loss(self, output: Any, target: Any) -> Tensor:
        """One loss value per sample, shape [N]; lower is better."""
        ...


def freeze(*modules: nn.Module) -> None:
    """Put guide networks in eval mode and stop their parameters from collecting gradients."""
    for m in modules:
        m.eval()
        m.requires_grad_(False)


def _identity(x: Tensor) -> Tensor:
    return x


@dataclass
class Guide:
    """A guide built from plain callables; see :func:`make_guide`."""

    name: str
    f_fn: Callable[[Tensor], Any]
    loss_fn: Callable[[Any, Any], Tensor]
    target: Any = None
    preprocess_fn: Callable[[Tensor], Tensor] = _identity
    differentiable: bool = True
    modules: Sequence[nn.Module] = field(default_factory=tuple)
    timestep_aware: bool = False

    def __post_init__(self) -> None:
        freeze(*self.modules)

    def preprocess(self, images: Tensor) -> Tensor:
        return self.preprocess_fn(images)

    def f(self, x: Tensor, t: Tensor | None = None) -> Any:
        return self.f_fn(x, t) if self.timestep_aware else self.f_fn(x)

    def loss(self, output: Any, target: Any) -> Tensor:
        return self.loss_fn(output, target)

    def to(self, device: torch.device | str) -> "Guide":
        """Move the guide's networks (and a tensor target) to ``device``."""
        for m in self.modules:
            m.to(device)
        if isinstance(self.target, Tensor):
            self.target = self.target.to(device)
        return self


def make_guide(
    name: str,
    f: Callable[[Tensor], Any],
    loss: Callable[[Any, Any], Tensor],
    target: Any = None,
    preprocess: Callable[[Tensor], Tensor] | None = None,
    differentiable: bool = True,
    modules: Iterable[nn.Module] = (),
    timestep_aware: bool = False,
) -> Guide:
    """Build a :class:`GuidanceFunction` from plain callables.

    ``modules`` are the networks inside ``f``; they are frozen (eval mode, no
    parameter gradients) here. ``timestep_aware=True``: the sampler calls
    ``f(x, t)`` with t the LongTensor [N] of the backbone's training timesteps at
    the current step (a noise-aware classifier with ``forward_input="zt"`` is
    Dhariwal & Nichol's classifier guidance); outside the sampler t = 0.
    """
    return Guide(name, f, loss, target, preprocess or _identity, differentiable, tuple(modules), timestep_aware)


def guide_dtype(guide: GuidanceFunction) -> torch.dtype | None:
    """The dtype of the guide's network: the first parameter of ``f`` when it is an ``nn.Module``
    (else of its first listed module); None when it has none (images are then left as they are)."""
    for net in (getattr(guide, "f_fn", None), getattr(guide, "f", None), *getattr(guide, "modules", ())):
        if isinstance(net, nn.Module):
            p = next(net.parameters(), None)
            if p is not None and p.is_floating_point():
                return p.dtype
    return None


def guide_loss(guide: GuidanceFunction, images: Tensor, t: Tensor | None = None) -> Tensor:
    """``l(f(preprocess(images)), c)`` as float32 (float64 where ``images`` are float64) with its shape checked:
    one value per sample.

    The one place images are cast to the guide network's dtype (backbones may run in
    fp16/bf16 while guides stay fp32). Timestep-aware guides get ``t`` (0 when None).
    """
    dtype = guide_dtype(guide)
    x = images.to(dtype) if dtype is not None and images.dtype != dtype else images
    net_in = guide.preprocess(x)
    if getattr(guide, "timestep_aware", False):
        t = t if t is not None else torch.zeros(images.shape[0], dtype=torch.long, device=images.device)
        out = guide.loss(guide.f(net_in, t), guide.target)
    else:
        out = guide.loss(guide.f(net_in), guide.target)
    if out.shape != (images.shape[0],):
        raise ValueError(
            f"guide {guide.name!r} returned a loss of shape {tuple(out.shape)}; "
            f"a guide's loss must have one value per sample, shape [{images.shape[0]}]"
        )
    return out.to(torch.float64 if images.dtype == torch.float64 else torch.float32)  # a float64 run keeps float64's precision (met's loss ratios)


@dataclass
class WeightedGuide:
    """A guide and its weight in the sum."""

    guide: GuidanceFunction
    weight: float = 1.0


class GuideSet:
    """Several guides combined as a weighted sum of their per-sample losses."""

    def __init__(self, guides: Iterable[GuidanceFunction | WeightedGuide | tuple[GuidanceFunction, float]] = ()):
        self.items: list[WeightedGuide] = []
        for g in guides:
            item = g if isinstance(g, WeightedGuide) else WeightedGuide(g[0], g[1]) if isinstance(g, tuple) else WeightedGuide(g, 1.0)
            if not isinstance(item.guide, GuidanceFunction):
                raise UgdError(f"{item.guide!r} ({type(item.guide).__name__}) is not a guide: it needs name, differentiable, "
                               "target, preprocess, f and loss; build one with make_guide(name, f, loss, target) or a plugin")
            try:
                weight = float(item.weight)
            except (TypeError, ValueError):
                weight = math.nan
            if not math.isfinite(weight):
                raise UgdError(f"guide {item.guide.name!r}: weight {item.weight!r} is not a finite number")
            self.items.append(WeightedGuide(item.guide, weight))

    def __len__(self) -> int:
        return len(self.items)

    def __bool__(self) -> bool:
        return bool(self.items)

    @property
    def differentiable(self) -> bool:
        """True when every guide supports autograd."""
        return all(i.guide.differentiable for i in self.items)

    def loss(self, images: Tensor) -> Tensor:
        """Weighted sum of every guide's per-sample loss, shape [N]."""
        total = torch.zeros(images.shape[0], device=images.device)
        for item in self.items:
            total = total + item.weight * guide_loss(item.guide, images)
        return total

    def losses(self, images: Tensor) -> dict[str, Tensor]:
        """Each guide's unweighted per-sample loss, by name (for logging and benchmarks)."""
        with torch.no_grad():
            return {i.guide.name: guide_loss(i.guide, images) for i in self.items}


def as_guide_set(guides: Any) -> GuideSet:
    """Accept a GuideSet, a single guide, or a list of guides / (guide, weight) pairs."""
    if guides is None:
        return GuideSet()
    if isinstance(guides, GuideSet):
        return guides
    if isinstance(guides, (list, tuple)) and not (len(guides) == 2 and isinstance(guides[1], (int, float))):
        return GuideSet(guides)
    return GuideSet([guides])
