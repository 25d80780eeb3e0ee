"""Train the digits-world guide networks (family A) and independent evaluators (family B).

    cd ugd_plugins/digits && ../../.venv/bin/python -m ugd_digits.train_guides            # all of them
    ../../.venv/bin/python -m ugd_digits.train_guides --only digit_classifier             # one (repeatable)

Every network trains on *clean* canvases only (never noisy diffusion inputs):
train-split digits at fresh random placements every batch, plus mild shape
augmentation (rotation of up to +-12 degrees, stroke thickness via 2x2
max-pool dilation / erosion). Held-out numbers are measured on the 1,000
held-out digits at random placements seeded with ``targets.HELDOUT_SEED`` (no
augmentation). Weights go to ``ugd_digits/weights/<name>.safetensors`` with
their recipe, seed, epochs, wall time and held-out metrics in the safetensors
metadata. Runs are deterministic at a fixed thread count (default 1) on one machine (another CPU may round differently).

Family A (guides, seed 1): ConvNet / SegNet / BoxNet.  Family B (evaluators,
seed 2): ResNetSmall. A guide is never scored by its own family.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from ugd_core.errors import UgdError

from . import models
from .data import CANVAS, N_TRAIN, Digits, Placement, foreground_mask, random_placement, tight_boxes, to_model_space
from .targets import HELDOUT_SEED, cached_digits, heldout_canvases

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
TRAIN_COMMAND = "cd ugd_plugins/digits && python -m ugd_digits.train_guides --only {name}"
GUIDE_SEED, EVAL_SEED = 1, 2
EMBED_DIM, TEMPERATURE = 64, 0.1
MAX_ROTATION_DEG = 12.0
_CLASSES = {"ConvNet": models.ConvNet, "ResNetSmall": models.ResNetSmall, "SegNet": models.SegNet, "BoxNet": models.BoxNet}


@dataclass(frozen=True)
class NetSpec:
    """How one network is built and trained."""

    arch: str  # class name in models.py
    kwargs: dict[str, Any]
    task: str  # classify | segment | detect | contrastive
    seed: int
    steps: int
    batch: int = 128
    lr: float = 3e-3
    weight_decay: float = 5e-4
    label_smoothing: float = 0.0
    augment: bool = True
    # Gaussian noise added to each training canvas, std uniform in [0, input_noise] per sample: a classifier
    # trained on noisy inputs has gradients that follow the digit's shape more than single pixels
    # (perceptually aligned gradients of noise-augmented classifiers, Kaur et al. 2019)
    input_noise: float = 0.0
    role: str = "guide"
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


NETWORKS: dict[str, NetSpec] = {
    "digit_classifier": NetSpec("ConvNet", dict(outputs=10, width=16), "classify", GUIDE_SEED, steps=500),
    "digit_classifier_robust": NetSpec(
        "ConvNet", dict(outputs=10, width=16), "classify", GUIDE_SEED + 2, steps=800, input_noise=1.5,
        notes="the digit-robust guide: digit_classifier's architecture trained on noisy canvases (seed 3)",
    ),
    "digit_segmenter": NetSpec("SegNet", dict(width=8, classes=2), "segment", GUIDE_SEED, steps=250),
    "digit_detector": NetSpec("BoxNet", dict(classes=10, width=16), "detect", GUIDE_SEED, steps=500),
    "digit_id": NetSpec("ConvNet", dict(outputs=EMBED_DIM, width=16), "contrastive", GUIDE_SEED, steps=300),
    "eval_classifier": NetSpec(
        "ResNetSmall", dict(outputs=10, width=16), "classify", EVAL_SEED, steps=900, label_smoothing=0.1, role="evaluator"
    ),
    "eval_id": NetSpec("ResNetSmall", dict(outputs=EMBED_DIM, width=16), "contrastive", EVAL_SEED, steps=300, role="evaluator"),
}


# ----------------------------------------------------------------------------------------------- networks


def build_network(name: str) -> nn.Module:
    """A fresh, randomly initialised network of the named recipe."""
    spec = _spec(name)
    return _CLASSES[spec.arch](**spec.kwargs)


def weights_path(name: str, weights: str | Path | None = None) -> Path:
    """Where the named network's weights live: ``weights`` if given, else ``ugd_digits/weights/<name>.safetensors``."""
    return Path(weights).expanduser() if weights else WEIGHTS_DIR / f"{name}.safetensors"


def load_network(name: str, weights: str | Path | None = None, device: str = "cpu") -> nn.Module:
    """The trained network, frozen (eval mode, no parameter gradients), on ``device``.

    Raises UgdError naming the missing file and the command that trains it.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = weights_path(name, weights)
    if not path.is_file():
        raise UgdError(
            f"{name}: weights file {str(path)!r} not found; train it with `{TRAIN_COMMAND.format(name=name)}` "
            f"or pass weights=PATH"
        )
    try:
        with safe_open(str(path), "pt") as fh:
            meta = fh.metadata() or {}
        state = load_file(str(path))
    except Exception as exc:  # noqa: BLE001 - any read failure is a user-facing problem
        raise UgdError(f"{name}: cannot read weights {str(path)!r} ({type(exc).__name__}); retrain with "
                       f"`{TRAIN_COMMAND.format(name=name)}`") from None
    spec = _spec(name)
    arch = json.loads(meta["arch"]) if "arch" in meta else {"class": spec.arch, "kwargs": spec.kwargs}
    wrong = f"{name}: {str(path)!r} does not hold {spec.arch} weights of this recipe; retrain with `{TRAIN_COMMAND.format(name=name)}`"
    # a file of another network (its class, or its outputs: a 64-d embedding is no 10-class head) is refused here
    if arch["class"] != spec.arch or arch["kwargs"].get("outputs") != spec.kwargs.get("outputs"):
        raise UgdError(wrong)
    net = _CLASSES[arch["class"]](**arch["kwargs"])
    try:
        net.load_state_dict(state)
    except RuntimeError:
        raise UgdError(wrong) from None
    net.eval().requires_grad_(False)
    return net.to(device)


def weights_metadata(name: str, weights: str | Path | None = None) -> dict[str, str]:
    """The safetensors metadata (recipe, seed, epochs, held-out metrics) of a trained network."""
    from safetensors import safe_open

    with safe_open(str(weights_path(name, weights)), "pt") as fh:
        return dict(fh.metadata() or {})


def _spec(name: str) -> NetSpec:
    if name not in NETWORKS:
        raise UgdError(f"unknown digits network {name!r}; known: {', '.join(NETWORKS)}")
    return NETWORKS[name]


# ----------------------------------------------------------------------------------------------- data


def augment_shapes(images: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Random stroke thickness of 28x28 sources in [0, 1]: a third eroded, a third dilated (2x2), a third as is."""
    padded = F.pad(images, (0, 1, 0, 1))
    dil = F.max_pool2d(padded, 2, 1)
    ero = -F.max_pool2d(-padded, 2, 1)
    r = torch.randint(0, 3, (images.shape[0], 1, 1, 1), generator=g)
    return torch.where(r == 0, ero, torch.where(r == 2, dil, images))


def place_rotated(images: torch.Tensor, placement: Placement, angle: torch.Tensor) -> torch.Tensor:
    """Like :func:`data.place` but also rotating each digit by ``angle`` radians about its centre."""
    n = images.shape[0]
    scale = CANVAS / placement.size
    c = placement.center / CANVAS * 2 - 1
    cos, sin = torch.cos(angle), torch.sin(angle)
    a = torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1) * scale[:, None, None]
    theta = torch.cat([a, -(a @ c[:, :, None])], dim=2)
    grid = F.affine_grid(theta, [n, 1, CANVAS, CANVAS], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def training_canvases(digits: Digits, idx: torch.Tensor, g: torch.Generator, augment: bool) -> torch.Tensor:
    """Train digits ``idx`` at fresh random placements (optionally augmented), in [-1, 1]."""
    src = digits.images[idx]
    n = len(idx)
    if augment:
        src = augment_shapes(src, g)
        angle = (torch.rand(n, generator=g) * 2 - 1) * math.radians(MAX_ROTATION_DEG)
    else:
        angle = torch.zeros(n)
    return to_model_space(place_rotated(src, random_placement(n, g), angle))


# ----------------------------------------------------------------------------------------------- losses


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = TEMPERATURE) -> torch.Tensor:
    """SimCLR's NT-Xent loss (Chen et al. 2020) of two views [B, D] (L2-normalised inside)."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    b = z1.shape[0]
    sim = z @ z.T / temperature
    sim = sim.masked_fill(torch.eye(2 * b, dtype=torch.bool), float("-inf"))
    target = torch.cat([torch.arange(b, 2 * b), torch.arange(0, b)])
    return F.cross_entropy(sim, target)


def detection_loss(box: torch.Tensor, logits: torch.Tensor, target_box: torch.Tensor, labels: torch.Tensor | None):
    """Per-sample L1 + GIoU between normalised boxes, plus cross-entropy to ``labels`` when given. Shape [N]."""
    from torchvision.ops import generalized_box_iou_loss

    loss = (box - target_box).abs().mean(1) + generalized_box_iou_loss(box, target_box, reduction="none")
    if labels is not None:
        loss = loss + F.cross_entropy(logits, labels, reduction="none")
    return loss


def _batch_loss(spec: NetSpec, net: nn.Module, digits: Digits, g: torch.Generator) -> torch.Tensor:
    if spec.task == "contrastive":
        idx = torch.randperm(len(digits.labels), generator=g)[: spec.batch]  # no duplicate sources: no false negatives
        x1 = training_canvases(digits, idx, g, spec.augment)
        x2 = training_canvases(digits, idx, g, spec.augment)
        z = net(torch.cat([x1, x2]))
        return nt_xent(z[: spec.batch], z[spec.batch :])
    idx = torch.randint(len(digits.labels), (spec.batch,), generator=g)
    x = training_canvases(digits, idx, g, spec.augment)
    if spec.input_noise > 0:
        x = x + spec.input_noise * torch.rand(spec.batch, 1, 1, 1, generator=g) * torch.randn(x.shape, generator=g)
    y = digits.labels[idx]
    if spec.task == "classify":
        return F.cross_entropy(net(x), y, label_smoothing=spec.label_smoothing)
    if spec.task == "segment":
        return F.cross_entropy(net(x), foreground_mask(x).long())
    if spec.task == "detect":
        box, logits = net(x)
        return detection_loss(box, logits, tight_boxes(foreground_mask(x)) / CANVAS, y).mean()
    raise ValueError(spec.task)


# ----------------------------------------------------------------------------------------------- held-out metrics


@torch.no_grad()
def _batched(fn: Callable[[torch.Tensor], Any], x: torch.Tensor, bs: int = 250) -> list[Any]:
    return [fn(x[i : i + bs]) for i in range(0, len(x), bs)]


@torch.no_grad()
def heldout_metrics(name: str, net: nn.Module, n: int = 1000) -> dict[str, float]:
    """Held-out numbers of a trained network on ``n`` held-out digits at seeded random placements."""
    spec = _spec(name)
    net.eval()
    x, y = heldout_canvases(n)
    if spec.task == "classify":
        pred = torch.cat(_batched(lambda b: net(b).argmax(1), x))
        return {"accuracy": float((pred == y).float().mean())}
    if spec.task == "segment":
        from .data import mask_iou

        pred = torch.cat(_batched(lambda b: net(b).argmax(1).bool(), x))
        gt = foreground_mask(x)
        return {"mask_iou": float(mask_iou(pred, gt).mean()), "pixel_accuracy": float((pred == gt).float().mean())}
    if spec.task == "detect":
        from .data import box_iou

        outs = _batched(net, x)
        box = torch.cat([o[0] for o in outs]) * CANVAS
        pred = torch.cat([o[1] for o in outs]).argmax(1)
        iou = box_iou(box, tight_boxes(foreground_mask(x)))
        return {"box_iou": float(iou.mean()), "box_iou_gt_0.5": float((iou > 0.5).float().mean()),
                "class_accuracy": float((pred == y).float().mean())}
    if spec.task == "contrastive":
        x2, _ = heldout_canvases(n, seed=HELDOUT_SEED + 1)
        z1 = F.normalize(torch.cat(_batched(net, x)), dim=1)
        z2 = F.normalize(torch.cat(_batched(net, x2)), dim=1)
        sim = z1 @ z2.T
        pos = sim.diagonal()
        neg = (sim.sum() - pos.sum()) / (n * (n - 1))
        same_class = (y[:, None] == y[None, :]) & ~torch.eye(n, dtype=torch.bool)
        return {
            "instance_top1": float((sim.argmax(1) == torch.arange(n)).float().mean()),
            "cos_same_digit": float(pos.mean()),
            "cos_same_class_other_digit": float(sim[same_class].mean()),
            "cos_other_digit": float(neg),
        }
    raise ValueError(spec.task)


# ----------------------------------------------------------------------------------------------- training


def train_one(name: str, steps: int | None = None, out_dir: Path = WEIGHTS_DIR, log: Callable[[str], None] = print,
              input_noise: float | None = None):
    """Train one network from its recipe, measure it on held-out canvases, save weights + metadata.

    ``steps`` and ``input_noise`` override the recipe (experiments; the metadata records what ran)."""
    from dataclasses import replace

    from safetensors.torch import save_file

    spec = _spec(name)
    if input_noise is not None:
        spec = replace(spec, input_noise=input_noise)
    steps = steps or spec.steps
    torch.manual_seed(spec.seed)
    net = build_network(name)
    g = torch.Generator().manual_seed(spec.seed)
    digits = cached_digits("train")
    opt = torch.optim.AdamW(net.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=spec.lr, total_steps=steps, pct_start=0.15)
    t0 = time.time()
    net.train()
    running = None
    for step in range(1, steps + 1):
        loss = _batch_loss(spec, net, digits, g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), 5.0)
        opt.step()
        sched.step()
        lv = loss.item()
        running = lv if running is None else 0.95 * running + 0.05 * lv
        if step % 100 == 0 or step == steps:
            log(f"  {name} step {step}/{steps} loss {running:.4f} ({time.time() - t0:.0f}s)")
    train_s = time.time() - t0
    metrics = heldout_metrics(name, net)
    views = 2 if spec.task == "contrastive" else 1
    meta = {
        "name": name,
        "role": spec.role,
        "arch": json.dumps({"class": spec.arch, "kwargs": spec.kwargs}),
        "task": spec.task,
        "seed": str(spec.seed),
        "steps": str(steps),
        "batch": str(spec.batch),
        "epochs": f"{steps * spec.batch * views / N_TRAIN:.1f}",
        "recipe": json.dumps({"lr": spec.lr, "schedule": "one-cycle", "optimizer": "AdamW",
                              "weight_decay": spec.weight_decay, "label_smoothing": spec.label_smoothing,
                              "augment": spec.augment, "max_rotation_deg": MAX_ROTATION_DEG, "input_noise": spec.input_noise,
                              "temperature": TEMPERATURE if spec.task == "contrastive" else None}),
        "heldout": json.dumps({k: round(v, 4) for k, v in metrics.items()}),
        "heldout_set": f"1000 held-out digits at random placements, seed {HELDOUT_SEED}",
        "train_seconds": f"{train_s:.0f}",
        "threads": str(torch.get_num_threads()),
        "torch": torch.__version__,
        "command": TRAIN_COMMAND.format(name=name),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
    save_file(state, str(out_dir / f"{name}.safetensors"), metadata=meta)
    log(f"{name}: {train_s:.0f}s, held-out {meta['heldout']}")
    return metrics, train_s


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Train the digits guides (family A) and evaluators (family B).")
    p.add_argument("--only", action="append", choices=list(NETWORKS), help="train only this network (repeatable)")
    p.add_argument("--steps", type=int, default=None, help="override the recipe's step count (experiments only)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--input-noise", type=float, default=None,
                   help="override the recipe's training noise range (experiments only; use with --out)")
    p.add_argument("--out", type=Path, default=WEIGHTS_DIR)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    for name in args.only or list(NETWORKS):
        metrics, secs = train_one(name, args.steps, args.out, input_noise=args.input_noise)
        rows.append((name, secs, metrics))
    print("\n| network | seconds | held-out |\n|---|---|---|")
    for name, secs, metrics in rows:
        print(f"| {name} | {secs:.0f} | " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()) + " |")


if __name__ == "__main__":
    main()
