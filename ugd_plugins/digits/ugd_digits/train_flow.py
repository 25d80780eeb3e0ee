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

from pathlib import Path

import torch

from .models import backbone_unet
from .training_loop import TrainingFiles, train, training_parser

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


def lognorm_flow_loss(unet: torch.nn.Module, x0: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """:func:`flow_loss` at sigma drawn logit-normal(0, 1) (Esser et al. 2024, section 3.1)."""
    sigma = torch.sigmoid(torch.randn(x0.shape[0], generator=gen)).to(x0.device)
    noise = torch.randn(x0.shape, generator=gen).to(x0.device)
    return flow_loss(unet, x0, noise, sigma)


def main(argv: list[str] | None = None) -> None:
    p = training_parser(__doc__.splitlines()[0], save_every=100)
    p.add_argument("--init", choices=("random", "ddpm"), default="random",
                   help="start from a random network or from the shipped digits DDPM's weights (warm start)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    unet = backbone_unet()
    if args.init == "ddpm":
        from safetensors.torch import load_file

        from .backbone import WEIGHTS as DDPM_WEIGHTS

        unet.load_state_dict(load_file(str(DDPM_WEIGHTS)))
    files = TrainingFiles(WEIGHTS, STATE, LOG, recipe="rectified flow, v = eps - x0, lognorm(0,1), ema", extra=dict(init=args.init))
    header = dict(init=args.init, batch=args.batch, lr=args.lr, decay_start=args.decay_start, max_steps=args.max_steps, seed=args.seed)
    train(args, unet, lognorm_flow_loss, files, header=header)


if __name__ == "__main__":
    main()
