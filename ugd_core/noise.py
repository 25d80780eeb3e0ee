"""Per-sample random numbers: each image owns a generator, so an image depends only on its seed."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import Tensor

SEED_BITS = 32  # torch's CPU generator (mt19937) reads only a seed's low 32 bits


def generator_seed(seed: int) -> int:
    """The seed handed to torch for a caller's ``seed`` >= 0: itself below 2^32; a larger one mixed down to 32 bits
    by numpy's SeedSequence (numpy's seed-derivation hash), since torch would read only its low 32 bits and seeds
    2^32 apart would draw the same noise."""
    return seed if seed < 2**SEED_BITS else int(np.random.SeedSequence(seed).generate_state(1)[0])


def make_generators(seeds: Sequence[int]) -> list[torch.Generator]:
    """One CPU generator per seed (CPU so results do not depend on the device's RNG); seeds below 2^32 as they
    are, larger ones through :func:`generator_seed`, so any two seeds draw different noise."""
    return [torch.Generator().manual_seed(generator_seed(int(s))) for s in seeds]


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
