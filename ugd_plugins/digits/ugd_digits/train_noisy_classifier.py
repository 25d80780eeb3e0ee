"""Train the noise-aware digit classifier used by classifier guidance (``digit-noisy``).

    cd ugd_plugins/digits && OMP_NUM_THREADS=1 nice -n 10 ../../.venv/bin/python -m ugd_digits.train_noisy_classifier

Recipe (Dhariwal & Nichol 2021, Sec. 4: a classifier trained on noised images at
uniformly drawn t): train-split digits at fresh random placements with the same
shape augmentation as the clean guides (``train_guides.training_canvases``),
noised as z_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps with t ~ U{0..999} and a_t the
digits backbone's own schedule (``models.backbone_scheduler``), cross-entropy on
the class. Never sees held-out digits or the evaluators. Held-out accuracy is
measured at t = 0, 250, 500, 750, 900 on the 1,000 held-out digits (fixed noise,
seed ``targets.HELDOUT_SEED``) and stored in the safetensors metadata with the
recipe, seed and wall time.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .data import N_TRAIN
from .models import backbone_scheduler
from .noisy_classifier import ARCH, TRAIN_COMMAND, WEIGHTS, NoisyDigitClassifier
from .targets import HELDOUT_SEED, cached_digits, heldout_canvases
from .train_guides import GUIDE_SEED, training_canvases

STEPS, BATCH, LR, WEIGHT_DECAY = 1200, 128, 3e-3, 5e-4
EVAL_TIMESTEPS = (0, 250, 500, 750, 900)


def noised(x0: torch.Tensor, t: torch.Tensor, alpha_bar: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """q(z_t | x0): sqrt(a_t) x0 + sqrt(1 - a_t) eps (Ho et al. 2020, eq. 4)."""
    a = alpha_bar[t].view(-1, 1, 1, 1)
    return a.sqrt() * x0 + (1 - a).sqrt() * torch.randn(x0.shape, generator=g)


@torch.no_grad()
def heldout_accuracy(net: nn.Module, alpha_bar: torch.Tensor) -> dict[str, float]:
    """Accuracy on the 1,000 held-out canvases noised to each of ``EVAL_TIMESTEPS`` (fixed noise)."""
    net.eval()
    x, y = heldout_canvases(1000)
    out = {}
    for t_int in EVAL_TIMESTEPS:
        g = torch.Generator().manual_seed(HELDOUT_SEED + t_int)
        t = torch.full((len(y),), t_int, dtype=torch.long)
        z = noised(x, t, alpha_bar, g)
        pred = torch.cat([net(z[i : i + 250], t[i : i + 250]).argmax(1) for i in range(0, len(y), 250)])
        out[f"accuracy_t{t_int}"] = float((pred == y).float().mean())
    return out


def train(steps: int = STEPS, out: Path = WEIGHTS, log=print) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """Train from the recipe, measure on held-out digits, save weights and metadata to ``out``."""
    from safetensors.torch import save_file

    torch.manual_seed(GUIDE_SEED)
    g = torch.Generator().manual_seed(GUIDE_SEED)
    alpha_bar = backbone_scheduler().alphas_cumprod.float()
    digits = cached_digits("train")
    net = NoisyDigitClassifier(**ARCH)
    opt = torch.optim.AdamW(net.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=LR, total_steps=steps, pct_start=0.15)
    t0, running = time.time(), None
    net.train()
    for step in range(1, steps + 1):
        idx = torch.randint(len(digits.labels), (BATCH,), generator=g)
        x0 = training_canvases(digits, idx, g, augment=True)
        t = torch.randint(0, len(alpha_bar), (BATCH,), generator=g)
        loss = F.cross_entropy(net(noised(x0, t, alpha_bar, g), t), digits.labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), 5.0)
        opt.step()
        sched.step()
        running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
        if step % 100 == 0 or step == steps:
            log(f"  noisy_classifier step {step}/{steps} loss {running:.4f} ({time.time() - t0:.0f}s)")
    secs = time.time() - t0
    metrics = heldout_accuracy(net, alpha_bar)
    meta = {
        "name": "noisy_classifier",
        "role": "guide",
        "arch": json.dumps({"class": "NoisyDigitClassifier", "kwargs": ARCH}),
        "task": "classify noisy z_t at t ~ U{0..999} (digits backbone schedule)",
        "seed": str(GUIDE_SEED),
        "steps": str(steps),
        "batch": str(BATCH),
        "epochs": f"{steps * BATCH / N_TRAIN:.1f}",
        "recipe": json.dumps({"lr": LR, "schedule": "one-cycle", "optimizer": "AdamW", "weight_decay": WEIGHT_DECAY,
                              "augment": True, "noise": "backbone_scheduler alphas_cumprod"}),
        "heldout": json.dumps({k: round(v, 4) for k, v in metrics.items()}),
        "heldout_set": f"1000 held-out digits at random placements, seed {HELDOUT_SEED}, noise seed {HELDOUT_SEED}+t",
        "train_seconds": f"{secs:.0f}",
        "threads": str(torch.get_num_threads()),
        "torch": torch.__version__,
        "command": TRAIN_COMMAND,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in net.state_dict().items()}, str(out), metadata=meta)
    log(f"noisy_classifier: {secs:.0f}s, held-out {meta['heldout']}")
    return metrics


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Train the noise-aware digit classifier for classifier guidance.")
    p.add_argument("--steps", type=int, default=STEPS)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=WEIGHTS)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    train(args.steps, args.out)


if __name__ == "__main__":
    main()
