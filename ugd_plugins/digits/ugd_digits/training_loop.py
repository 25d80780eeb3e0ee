"""The training run both digits denoisers share (``train_backbone``: the ε-prediction DDPM; ``train_flow``: the
rectified flow): their options, resuming from a state file, the loop (AdamW with warm-up and optional cosine
decay, gradient clipping, an EMA with warm-up: diffusers' ``EMAModel``), checkpoints written atomically (the EMA
weights that ship, and the whole state that a later run on the same machine resumes from), a JSON-lines log, and a
clean stop on SIGTERM / SIGINT. Only the objective differs: ``loss_of(unet, x0, generator)``."""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from .data import load_digits, sample_canvases

LossOf = Callable[[torch.nn.Module, torch.Tensor, torch.Generator], torch.Tensor]


@dataclass
class TrainingFiles:
    """Where one trainer keeps its files, and what its weights' metadata calls its recipe."""

    weights: Path
    state: Path
    log: Path
    recipe: str
    extra: dict[str, Any] = field(default_factory=dict)  # kept in the state and the weights' metadata (e.g. init)


def training_parser(description: str, save_every: int) -> argparse.ArgumentParser:
    """The options both trainers take."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--minutes", type=float, default=60.0, help="wall-clock budget of this run")
    p.add_argument("--max-steps", type=int, default=100_000)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=1.5e-3)
    p.add_argument("--decay-start", type=int, default=None,
                   help="cosine-decay the learning rate from this step to --max-steps (to 5%% of --lr)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--save-every", type=int, default=save_every)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fresh", action="store_true", help="ignore an existing training state")
    p.add_argument("--device", default="cpu")
    return p


def train(args: argparse.Namespace, unet: torch.nn.Module, loss_of: LossOf, files: TrainingFiles,
          header: dict[str, Any] | None = None) -> None:
    """Train ``unet`` on the train digits' canvases until ``--max-steps``, ``--minutes`` or a signal, resuming from
    ``files.state`` unless ``--fresh``. A fresh run with a ``header`` starts the log with it (step 0); a resumed run
    drops log lines past its step and takes ``files.extra`` from the state."""
    from diffusers.training_utils import EMAModel
    from safetensors.torch import save_file

    device = torch.device(args.device)
    digits = load_digits("train")
    unet = unet.to(device)
    opt = torch.optim.AdamW(unet.parameters(), lr=args.lr, weight_decay=0.0)
    ema = EMAModel(unet.parameters(), decay=0.9995, use_ema_warmup=True, power=2 / 3)
    step, seconds = 0, 0.0
    if files.state.exists() and not args.fresh:
        state = torch.load(files.state, map_location=device, weights_only=False)
        unet.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        ema.load_state_dict(state["ema"])
        step, seconds = state["step"], state["seconds"]
        files.extra.update({k: state[k] for k in files.extra if k in state})
        print(f"resumed at step {step} ({seconds / 60:.1f} min trained)", flush=True)
        truncate_log(files.log, step)
    elif header is not None:
        files.log.parent.mkdir(parents=True, exist_ok=True)
        files.log.write_text(json.dumps(dict(step=0, **header)) + "\n")
    gen = torch.Generator().manual_seed(args.seed * 1_000_003 + step)

    def checkpoint() -> None:
        files.state.parent.mkdir(parents=True, exist_ok=True)
        files.weights.parent.mkdir(parents=True, exist_ok=True)
        state = dict(model=unet.state_dict(), optimizer=opt.state_dict(), ema=ema.state_dict(), step=step, seconds=seconds, **files.extra)
        _atomic_save(lambda f: torch.save(state, f), files.state)
        shadow = {k: v.detach().clone().contiguous().cpu() for k, v in zip(unet.state_dict().keys(), _ema_tensors(unet, ema))}
        meta = {"step": str(step), "train_minutes": f"{seconds / 60:.1f}", "recipe": files.recipe, **{k: str(v) for k, v in files.extra.items()}}
        _atomic_save(lambda f: save_file(shadow, str(f), metadata=meta), files.weights)

    stop = []  # SIGTERM/SIGINT end the run at the next step boundary, after a checkpoint
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.append(True))
    start = time.time()
    budget = args.minutes * 60
    unet.train()
    while step < args.max_steps and time.time() - start < budget and not stop:
        t0 = time.time()
        x0, _, _ = sample_canvases(digits, args.batch, gen)
        loss = loss_of(unet, x0.to(device), gen)
        optimizer_step(unet, opt, ema, loss, learning_rate(step, args.lr, args.decay_start, args.max_steps))
        step += 1
        seconds += time.time() - t0
        log_step(files.log, step, loss, opt, seconds)
        if step % args.save_every == 0:
            checkpoint()
    checkpoint()
    print(f"stopped at step {step} ({seconds / 60:.1f} min trained); weights in {files.weights}", flush=True)


def learning_rate(step: int, lr: float, decay_start: int | None, max_steps: int) -> float:
    """Linear warm-up over 200 steps, constant, then (from ``decay_start``) cosine decay to 5% at ``max_steps``."""
    if decay_start is None or step < decay_start:
        return lr * min(1.0, (step + 1) / 200)
    frac = min(1.0, (step - decay_start) / max(1, max_steps - decay_start))
    return lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * frac)))


def optimizer_step(unet: torch.nn.Module, opt: torch.optim.Optimizer, ema: Any, loss: torch.Tensor, lr: float) -> None:
    """One AdamW step at ``lr`` with the gradient norm clipped to 1, then the EMA update."""
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
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("a") as fh:
            fh.write(json.dumps(dict(step=step, loss=round(loss.item(), 5), lr=opt.param_groups[0]["lr"], minutes=round(seconds / 60, 2))) + "\n")


def truncate_log(log: Path, step: int) -> None:
    """Drop log lines past the resumed step (written after the last checkpoint of a killed run); a header line is step 0."""
    if log.exists():
        lines = [ln for ln in log.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] <= step]
        log.write_text("".join(ln + "\n" for ln in lines))


def _atomic_save(obj_writer: Callable[[Path], None], path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    obj_writer(tmp)
    os.replace(tmp, path)


def _ema_tensors(unet: torch.nn.Module, ema: Any) -> list[torch.Tensor]:
    # EMAModel keeps shadow copies of parameters only; buffers (none in UNet2DModel) come from the model.
    params = dict(unet.named_parameters())
    shadow = iter(ema.shadow_params)
    return [next(shadow) if name in params else tensor for name, tensor in unet.state_dict().items()]
