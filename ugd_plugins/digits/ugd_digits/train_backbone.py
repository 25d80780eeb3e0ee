"""Train (or resume training) the digits diffusion backbone.

    python -m ugd_digits.train_backbone --minutes 60            # resumes if a state file exists

Recipe: eps-prediction on the cosine schedule, AdamW with warm-up, gradient
clipping, Min-SNR-5 loss weighting (Hang et al. 2023, "Efficient Diffusion
Training via Min-SNR Weighting Strategy") and an EMA with warm-up (diffusers
``EMAModel``). Every ``--save-every`` steps the EMA weights are written to the
plugin's ``weights/backbone.safetensors`` (what ships) and the whole training
state to ``training/backbone_state.pt`` (what a later run on the same machine resumes from).
That state (optimiser moments, 10 MB) is regenerable and not committed: a fresh clone
ships only the EMA weights, and training there starts from scratch (10,500 steps took
151 CPU-minutes) or continues on the machine that holds a state file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from .models import backbone_scheduler, backbone_unet
from .training_loop import TrainingFiles, train, training_parser

PLUGIN_DIR = Path(__file__).resolve().parent
WEIGHTS = PLUGIN_DIR / "weights" / "backbone.safetensors"
STATE = PLUGIN_DIR.parent / "training" / "backbone_state.pt"
LOG = PLUGIN_DIR.parent / "training" / "backbone_log.jsonl"


def eps_loss(acp: torch.Tensor) -> Callable[[torch.nn.Module, torch.Tensor, torch.Generator], torch.Tensor]:
    """The DDPM objective on the schedule ``acp`` (alphas_cumprod): z_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps, the
    network predicts eps, each sample's squared error weighted by min(SNR, 5) / SNR (Min-SNR-5 for eps-prediction,
    Hang et al. 2023, eq. 8)."""

    def loss_of(unet: torch.nn.Module, x0: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        t = torch.randint(0, len(acp), (x0.shape[0],), generator=gen).to(x0.device)
        noise = torch.randn(x0.shape, generator=gen).to(x0.device)
        a = acp.to(x0.device)[t].view(-1, 1, 1, 1)
        pred = unet(a.sqrt() * x0 + (1 - a).sqrt() * noise, t).sample
        snr = a.flatten() / (1 - a.flatten())
        weight = torch.clamp(snr, max=5.0) / snr
        return (weight * (pred - noise).pow(2).mean(dim=(1, 2, 3))).mean()

    return loss_of


def main(argv: list[str] | None = None) -> None:
    args = training_parser(__doc__.splitlines()[0], save_every=200).parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)  # the network's initial weights
    train(args, backbone_unet(), eps_loss(backbone_scheduler().alphas_cumprod),
          TrainingFiles(WEIGHTS, STATE, LOG, recipe="eps, cosine, min-snr-5, ema"))


if __name__ == "__main__":
    main()
