"""Train (or resume training) the ``digits-flow`` backbone: a rectified flow on the digits world.

    python -m ugd_digits.train_flow --minutes 150            # resumes if a state file exists

Same network (``models.BACKBONE_CONFIG``), same train split and canvases, same optimiser,
warm-up, clipping and EMA as the DDPM (``train_backbone``); only the objective differs.
Rectified flow (Liu et al. 2023; Esser et al. 2024, "Scaling Rectified Flow Transformers", eq. 1-3):
x_sigma = (1 - sigma) x0 + sigma eps, the network predicts v = eps - x0 at timestep
1000 * sigma (the convention of diffusers' ``FlowMatchEulerDiscreteScheduler``, whose
``timesteps`` are ``sigmas * num_train_timesteps``), and the loss is ||v_hat - v||^2 with sigma
drawn logit-normal(0, 1) (Esser et al. 2024, section 3.1, "rf/lognorm(0.00, 1.00)").

``--init ddpm`` starts from the shipped ``digits`` DDPM's weights instead of a random network (a warm
start: the same architecture, re-trained on the flow objective; its time input changes meaning from the DDPM's
t to 1000 sigma and its output from eps to v). The shipped ``digits-flow`` weights say which in their
metadata (``init``) and in the log's first line.

Every ``--save-every`` steps the EMA weights go to ``weights/flow_backbone.safetensors`` (what
ships) and the whole state to ``training/flow_state.pt`` (not committed; a later run on the
same machine resumes from it). The log is ``training/flow_log.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import signal
import time
from pathlib import Path

import torch

from .data import load_digits, sample_canvases
from .models import backbone_unet
from .train_backbone import _atomic_save, _ema_tensors, learning_rate, log_step, optimizer_step, truncate_log

PLUGIN_DIR = Path(__file__).resolve().parent
WEIGHTS = PLUGIN_DIR / "weights" / "flow_backbone.safetensors"
STATE = PLUGIN_DIR.parent / "training" / "flow_state.pt"
LOG = PLUGIN_DIR.parent / "training" / "flow_log.jsonl"
NUM_TRAIN_TIMESTEPS = 1000  # the network sees t = 1000 * sigma, as diffusers' flow pipelines feed it


def flow_loss(unet: torch.nn.Module, x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Conditional flow-matching loss: mean ||v_hat(x_sigma, 1000 sigma) - (eps - x0)||^2."""
    s = sigma.view(-1, 1, 1, 1)
    x = (1 - s) * x0 + s * noise
    v = unet(x, sigma * NUM_TRAIN_TIMESTEPS).sample
    return (v - (noise - x0)).pow(2).mean()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=60.0, help="wall-clock budget of this run")
    p.add_argument("--max-steps", type=int, default=100_000)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=1.5e-3)
    p.add_argument("--decay-start", type=int, default=None,
                   help="cosine-decay the learning rate from this step to --max-steps (to 5%% of --lr)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--save-every", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fresh", action="store_true", help="ignore an existing training state")
    p.add_argument("--device", default="cpu")
    p.add_argument("--init", choices=("random", "ddpm"), default="random",
                   help="start from a random network or from the shipped digits DDPM's weights (warm start)")
    args = p.parse_args(argv)

    from diffusers.training_utils import EMAModel
    from safetensors.torch import save_file

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    digits = load_digits("train")
    torch.manual_seed(args.seed)
    unet = backbone_unet()
    if args.init == "ddpm":
        from safetensors.torch import load_file

        from .backbone import WEIGHTS as DDPM_WEIGHTS

        unet.load_state_dict(load_file(str(DDPM_WEIGHTS)))
    unet = unet.to(device)
    opt = torch.optim.AdamW(unet.parameters(), lr=args.lr, weight_decay=0.0)
    ema = EMAModel(unet.parameters(), decay=0.9995, use_ema_warmup=True, power=2 / 3)
    step, seconds = 0, 0.0
    if STATE.exists() and not args.fresh:
        state = torch.load(STATE, map_location=device, weights_only=False)
        unet.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        ema.load_state_dict(state["ema"])
        step, seconds = state["step"], state["seconds"]
        print(f"resumed at step {step} ({seconds / 60:.1f} min trained)", flush=True)
        truncate_log(LOG, step)
        args.init = state.get("init", args.init)
    else:
        LOG.parent.mkdir(parents=True, exist_ok=True)
        LOG.write_text(json.dumps(dict(step=0, init=args.init, batch=args.batch, lr=args.lr, decay_start=args.decay_start,
                                       max_steps=args.max_steps, seed=args.seed)) + "\n")
    gen = torch.Generator().manual_seed(args.seed * 1_000_003 + step)

    def checkpoint() -> None:
        STATE.parent.mkdir(parents=True, exist_ok=True)
        WEIGHTS.parent.mkdir(parents=True, exist_ok=True)
        state = dict(model=unet.state_dict(), optimizer=opt.state_dict(), ema=ema.state_dict(), step=step, seconds=seconds, init=args.init)
        _atomic_save(lambda f: torch.save(state, f), STATE)
        shadow = {k: v.detach().clone().contiguous().cpu() for k, v in zip(unet.state_dict().keys(), _ema_tensors(unet, ema))}
        meta = {"step": str(step), "train_minutes": f"{seconds / 60:.1f}", "recipe": "rectified flow, v = eps - x0, lognorm(0,1), ema", "init": args.init}
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
        sigma = torch.sigmoid(torch.randn(args.batch, generator=gen)).to(device)  # logit-normal(0, 1)
        noise = torch.randn(x0.shape, generator=gen).to(device)
        loss = flow_loss(unet, x0, noise, sigma)
        optimizer_step(unet, opt, ema, loss, learning_rate(step, args.lr, args.decay_start, args.max_steps))
        step += 1
        seconds += time.time() - t0
        log_step(LOG, step, loss, opt, seconds)
        if step % args.save_every == 0:
            checkpoint()
    checkpoint()
    print(f"stopped at step {step} ({seconds / 60:.1f} min trained); weights in {WEIGHTS}", flush=True)


if __name__ == "__main__":
    main()
