"""Per-sample random numbers: each image owns a generator, so an image depends only on its seed."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor


def make_generators(seeds: Sequence[int]) -> list[torch.Generator]:
    """One CPU generator per seed (CPU so results do not depend on the device's RNG)."""
    return [torch.Generator().manual_seed(int(s)) for s in seeds]


def randn(shape: Sequence[int], generators: Sequence[torch.Generator], device: torch.device, dtype: torch.dtype = torch.float32) -> Tensor:
    """Standard normal noise of shape [len(generators), *shape], sample i drawn from generator i.

    When every sample shares one generator (diffusers-style), the batch is drawn at once. For a CUDA
    ``device`` the noise is drawn into pinned memory and copied without blocking the host.
    """
    pin = torch.device(device).type == "cuda"
    size = (len(generators), *shape)
    if len(generators) > 1 and all(g is generators[0] for g in generators):
        noise = torch.randn(size, generator=generators[0], dtype=dtype, pin_memory=pin)
    else:
        rows = [torch.randn(tuple(shape), generator=g, dtype=dtype) for g in generators]
        noise = torch.stack(rows, out=torch.empty(size, dtype=dtype, pin_memory=pin))
    return noise.to(device, non_blocking=pin)
