"""``--best-of N``: sample N candidates per image and keep the one the guides like best.

The pick reads only the guides' own losses on the finished candidates (never an evaluator). Losses of
different guides come in different units, so each guide's loss is divided by its mean over the image's N
candidates before the weighted sum: the pick does not change when a guide's loss is multiplied by any
c > 0, and ``weight`` keeps its meaning (a guide's share). A non-finite candidate is never picked.
"""

from __future__ import annotations

from typing import Any

import torch

from ugd_core.guidance import GuideSet, guide_loss

from .spec import BEST_OF_STRIDE as STRIDE  # candidate j of the image with seed s: seed s + j * STRIDE


def candidate_seeds(seeds: list[int], n: int) -> list[int]:
    """Every candidate's seed, candidate-major: [s_0, s_1, ..., s_0 + STRIDE, s_1 + STRIDE, ...]."""
    return [s + j * STRIDE for j in range(n) for s in seeds]


def pick(images: torch.Tensor, guides: GuideSet, seeds: list[int], n: int) -> tuple[list[int], list[list[dict[str, Any]]]]:
    """For candidate images [n * B, ...] (candidate-major, as :func:`candidate_seeds`): the index of the kept
    candidate of each of the B images, and every candidate's record (seed, each guide's loss, score)."""
    b = len(seeds)
    names = [item.guide.name for item in guides.items]
    with torch.no_grad():
        losses = torch.stack([guide_loss(item.guide, images).double().cpu() for item in guides.items], dim=1)  # [n*B, G]
    finite = torch.isfinite(images.flatten(1)).all(1).cpu() & torch.isfinite(losses).all(1)
    losses = losses.view(n, b, -1)
    finite = finite.view(n, b)
    safe = torch.where(finite[..., None], losses, torch.zeros_like(losses))
    mean = safe.sum(0) / finite.sum(0).clamp(min=1)[:, None]  # [B, G] over the finite candidates
    weights = torch.tensor([float(item.weight) for item in guides.items], dtype=torch.float64)
    score = (safe / mean.abs().clamp(min=1e-300)[None] * weights).sum(-1)  # [n, B]
    score = torch.where(finite, score, torch.full_like(score, float("inf")))
    best = score.argmin(0).tolist()
    records = [
        [dict(seed=seeds[i] + j * STRIDE, losses={nm: float(losses[j, i, g]) for g, nm in enumerate(names)}, score=float(score[j, i]))
         for j in range(n)]
        for i in range(b)
    ]
    return best, records
