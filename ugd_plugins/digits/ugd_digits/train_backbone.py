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

import argparse
import json
import math
import os
import signal
import time
from pathlib import Path
from typing import Any

import torch

from .data import load_digits, sample_canvases
from .models import backbone_scheduler, backbone_unet

PLUGIN_DIR = Path(__file__).resolve().parent
WEIGHTS = PLUGIN_DIR / "weights" / "backbone.safetensors"
STATE = PLUGIN_DIR.parent / "training" / "backbone_state.pt"
LOG = PLUGIN_DIR.parent / "training" / "backbone_log.jsonl"


def _atomic_save(obj_writer, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    obj_writer(tmp)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=60.0, help="wall-clock budget of this run")
    p.add_argument("--max-steps", type=int, default=100_000)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=1.5e-3)
    p.add_argument("--decay-start", type=int, default=None,
                   help="cosine-decay the learning rate from this step to --max-steps (to 5%% of --lr)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--save-every", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fresh", action="store_true", help="ignore an existing training state")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)

    from diffusers.training_utils import EMAModel
    from safetensors.torch import save_file

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    digits = load_digits("train")
    unet = backbone_unet().to(device)
    sched = backbone_scheduler()
    acp = sched.alphas_cumprod.to(device)
    opt = torch.optim.AdamW(unet.parameters(), lr=args.lr, weight_decay=0.0)
    ema = EMAModel(unet.parameters(), decay=0.9995, use_ema_warmup=True, power=2 / 3)
    step, seconds = 0, 0.0
    if STATE.exists() and not args.fresh:
        state = torch.load(STATE, map_location=device, weights_only=False)
        unet.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        ema.load_state_dict(state["ema"])
        step, seconds = state["step"], state["seconds"]
        print(f"resumed at step {step} ({seconds / 60:.1f} min trained)")
        truncate_log(LOG, step)
    gen = torch.Generator().manual_seed(args.seed * 1_000_003 + step)

    def checkpoint() -> None:
        STATE.parent.mkdir(parents=True, exist_ok=True)
        state = dict(model=unet.state_dict(), optimizer=opt.state_dict(), ema=ema.state_dict(), step=step, seconds=seconds)
        _atomic_save(lambda f: torch.save(state, f), STATE)
        shadow = {k: v.detach().clone().contiguous().cpu() for k, v in zip(unet.state_dict().keys(), _ema_tensors(unet, ema))}
        meta = {"step": str(step), "train_minutes": f"{seconds / 60:.1f}", "recipe": "eps, cosine, min-snr-5, ema"}
        _atomic_save(lambda f: save_file(shadow, str(f), metadata=meta), WEIGHTS)

    stop = []  # SIGTERM/SIGINT end the run at the next step boundary, after a checkpoint
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.append(True))
    start = time.time()
    budget = args.minutes * 60
    unet.train()
    while step < args.max_steps and time.time() - start < budget and not stop:
        t0 = time.time()
        x0, _, _ = sample_canvases(digits, args.batch, gen)
        x0 = x0.to(device)
        t = torch.randint(0, len(acp), (args.batch,), generator=gen).to(device)
        noise = torch.randn(x0.shape, generator=gen).to(device)
        a = acp[t].view(-1, 1, 1, 1)
        zt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        pred = unet(zt, t).sample
        snr = a.flatten() / (1 - a.flatten())
        weight = torch.clamp(snr, max=5.0) / snr  # Min-SNR-5 for eps-prediction
        loss = (weight * (pred - noise).pow(2).mean(dim=(1, 2, 3))).mean()
        optimizer_step(unet, opt, ema, loss, learning_rate(step, args.lr, args.decay_start, args.max_steps))
        step += 1
        seconds += time.time() - t0
        log_step(LOG, step, loss, opt, seconds)
        if step % args.save_every == 0:
            checkpoint()
    checkpoint()
    print(f"stopped at step {step} ({seconds / 60:.1f} min trained); weights in {WEIGHTS}")


def learning_rate(step: int, lr: float, decay_start: int | None, max_steps: int) -> float:
    """Linear warm-up over 200 steps, constant, then (from ``decay_start``) cosine decay to 5% at ``max_steps``."""
    if decay_start is None or step < decay_start:
        return lr * min(1.0, (step + 1) / 200)
    frac = min(1.0, (step - decay_start) / max(1, max_steps - decay_start))
    return lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * frac)))


def optimizer_step(unet: torch.nn.Module, opt: torch.optim.Optimizer, ema: Any, loss: torch.Tensor, lr: float) -> None:
    """One AdamW step at ``lr`` with the gradient norm clipped to 1, then the EMA update (both trainers)."""
    for g in opt.param_groups:
        g["lr"] = lr
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
    opt.step()
    ema.step(unet.parameters())


def log_step(log: Path, step: int, loss: torch.Tensor, opt: torch.optim.Optimizer, seconds: float, every: int = 50) -> None:
    """Append one JSON line (step, loss, lr, minutes trained) to the training log every ``every`` steps."""
    if step % every == 0:
        with log.open("a") as fh:
            fh.write(json.dumps(dict(step=step, loss=round(loss.item(), 5), lr=opt.param_groups[0]["lr"], minutes=round(seconds / 60, 2))) + "\n")


def truncate_log(log: Path, step: int) -> None:
    """Drop log lines past the resumed step (written after the last checkpoint of a killed run); a header line is step 0."""
    if log.exists():
        lines = [ln for ln in log.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] <= step]
        log.write_text("".join(ln + "\n" for ln in lines))


def _ema_tensors(unet: torch.nn.Module, ema) -> list[torch.Tensor]:
    # EMAModel keeps shadow copies of parameters only; buffers (none in UNet2DModel) come from the model.
    params = dict(unet.named_parameters())
    shadow = iter(ema.shadow_params)
    return [next(shadow) if name in params else tensor for name, tensor in unet.state_dict().items()]


if __name__ == "__main__":
    main()
