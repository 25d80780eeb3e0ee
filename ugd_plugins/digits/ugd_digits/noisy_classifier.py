"""A noise-aware digit classifier p(y | z_t, t) and its classifier-guidance guide ``digit-noisy``.

Dhariwal & Nichol 2021 (Sec. 4, Alg. 2) guide with a classifier trained on the
*noisy* inputs z_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps of the diffusion model,
conditioned on t. This is that classifier for the digits world: a small ConvNet
whose blocks are modulated by a timestep embedding (scale and shift after the
normalisation, as in the ADM ResBlock's ``use_scale_shift_norm``). It is trained
by :mod:`ugd_digits.train_noisy_classifier` on the train split only, with the
digits backbone's own noise schedule.

The guide is timestep-aware: the sampler calls ``f(z_t, t)``. With the knobs of
the ``digits-classifier-guidance`` preset (``forward_input="zt"``,
``forward_schedule="sqrt_1m_abar"``) the sampler's forward guidance is
eps_hat = eps - s sqrt(1 - a_t) grad_{z_t} log p(y | z_t, t), Dhariwal & Nichol eq. 14.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ugd_core.errors import UgdError

from .registrations import CLASSIFIER_SCALE, NOISY_GUIDE, NOISY_PRESET as PRESET  # noqa: F401

WEIGHTS = Path(__file__).resolve().parent / "weights" / "noisy_classifier.safetensors"
TRAIN_COMMAND = "cd ugd_plugins/digits && python -m ugd_digits.train_noisy_classifier"
ARCH = dict(classes=10, width=16, time_dim=64)


class _TimeBlock(nn.Module):
    """conv -> GroupNorm -> (1 + scale(t)) * h + shift(t) -> SiLU."""

    def __init__(self, cin: int, cout: int, time_dim: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm = nn.GroupNorm(8, cout)
        self.film = nn.Linear(time_dim, 2 * cout)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        scale, shift = self.film(emb)[:, :, None, None].chunk(2, dim=1)
        return F.silu(self.norm(self.conv(x)) * (1 + scale) + shift)


class NoisyDigitClassifier(nn.Module):
    """Class logits of a noisy 32x32 digit canvas z_t at training timestep t (0..999)."""

    def __init__(self, classes: int = 10, width: int = 16, time_dim: int = 64):
        super().__init__()
        from diffusers.models.embeddings import TimestepEmbedding, Timesteps

        w = width
        self.time_proj = Timesteps(32, flip_sin_to_cos=True, downscale_freq_shift=0)  # sinusoidal (DDPM)
        self.time_embed = TimestepEmbedding(32, time_dim)
        chans = [(1, w), (w, w), (w, 2 * w), (2 * w, 2 * w), (2 * w, 4 * w), (4 * w, 4 * w)]
        self.blocks = nn.ModuleList([_TimeBlock(a, b, time_dim) for a, b in chans])
        self.head = nn.Linear(4 * w, classes)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        t = torch.as_tensor(t, device=x.device).reshape(-1).expand(x.shape[0])
        emb = F.silu(self.time_embed(self.time_proj(t).to(x.dtype)))
        h = x
        for i, block in enumerate(self.blocks):
            h = block(h, emb)
            if i in (1, 3):
                h = F.max_pool2d(h, 2)  # 32 -> 16 -> 8
        return self.head(h.mean(dim=(2, 3)))


def load_noisy_classifier(weights: str | Path | None = None, device: str = "cpu") -> NoisyDigitClassifier:
    """The trained classifier, frozen, on ``device``; UgdError naming the file and the training command if absent."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(weights).expanduser() if weights else WEIGHTS
    if not path.is_file():
        raise UgdError(f"digit-noisy: weights file {str(path)!r} not found; train it with `{TRAIN_COMMAND}` or pass weights=PATH")
    try:
        with safe_open(str(path), "pt") as fh:
            meta = fh.metadata() or {}
        state = load_file(str(path))
        arch = json.loads(meta.get("arch", "{}")).get("kwargs", ARCH)
        net = NoisyDigitClassifier(**arch)
        net.load_state_dict(state)
    except Exception as exc:  # noqa: BLE001 - any read failure is a user-facing problem
        raise UgdError(f"digit-noisy: cannot load {str(path)!r} ({type(exc).__name__}); retrain with `{TRAIN_COMMAND}`") from None
    net.eval().requires_grad_(False)
    return net.to(device)


def digit_noisy_guide(label: int, weights: str | None = None, device: str = "cpu") -> Any:
    """Classifier guidance: cross-entropy -log p(label | z_t, t) of the noise-aware classifier (timestep-aware)."""
    from ugd_core.guidance import make_guide

    from .guides import _check_label, preprocess

    label = _check_label(label, "digit-noisy")
    net = load_noisy_classifier(weights, device)
    target = torch.tensor([label], device=device)

    def f(x: Tensor, t: Tensor) -> Tensor:
        return net(x, t)

    def loss(logits: Tensor, target: Tensor) -> Tensor:
        return F.cross_entropy(logits, target.to(logits.device).expand(logits.shape[0]), reduction="none")

    return make_guide("digit-noisy", f, loss, target, preprocess, modules=(net,), timestep_aware=True)


REGISTRATION = NOISY_GUIDE  # declared in ugd_digits.registrations (no torch there), with PRESET
