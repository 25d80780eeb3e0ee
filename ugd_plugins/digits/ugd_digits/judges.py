"""Judges of label results that guidance cannot easily fool, and the held-out splits they use.

Two judges, both fitted on real held-out digits only (never on generated samples):

- **Calibrated classifier**: ``eval_classifier`` (trained with label smoothing 0.1, which caps
  its confidence) with one temperature T fitted by minimising the negative log-likelihood of
  softmax(logits / T) on the *calibration* split (Guo et al. 2017, "On Calibration of Modern
  Neural Networks", Sec. 4.2). Temperature scaling leaves every argmax, hence the accuracy,
  unchanged; it only makes p mean what it says.
- **Nearest neighbours in normalised pixel space** (no learned features): each image's ink
  (pixels > 0 in [-1, 1], the plugin's ink definition) is cropped to its tight box, resized so the
  longer side is 20 px and centred in 28 x 28 (the MNIST normalisation, LeCun et al. 1998),
  deskewed (the shear that zeroes the ink's second moment mu11, as in LeCun et al.'s deslanted
  k-NN), blurred (Gaussian, sigma 0.5), mean-centred and scaled to unit L2 norm. The class is the vote of the
  k = 5 nearest *reference* digits (Euclidean distance between unit vectors; a tied vote goes to the class whose
  neighbours' ranks sum lower, nearer on the whole, and a tie of rank sums as the weights' float64 rounding and then
  the lower class index settle it: the rule every reported number was measured with). An image whose nearest reference is farther than the 99th percentile of the
  calibration digits' nearest distances (or that has no ink) is "not a digit", and is never counted
  correct.

Held-out splits: indices into ``load_digits("heldout")`` (the 1,000 digits that no network of the
plugin, backbone, guides or evaluators, was trained on), as canvases from
``targets.heldout_canvases(1000)`` (placements seeded by ``HELDOUT_SEED``):

==============  =========  ===============================================================
split           indices    used for
==============  =========  ===============================================================
reference       0-499      the NN judge's neighbours
calibration     500-749    the temperature T and the NN non-digit threshold
test            750-999    every reported real-digit number (ECE, accuracy, NN ceiling), and
                           the bench's task targets (``data.DIGIT_SETS["target"]``)
==============  =========  ===============================================================

The ranges are ``data.DIGIT_SETS`` (defined there once, with the train set); the judges never see a task
target. The *development* judge (:func:`development_judge`), which tuning may use, is the NN judge's
algorithm on train digits only (``data.DEV_JUDGE_SETS``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor

from ugd_core.errors import UgdError

from .data import DEV_JUDGE_SETS, DIGIT_SETS
from .guides import preprocess
from .targets import heldout_canvases

# held-out index ranges [start, stop) of the judges' splits, from the one definition in data.DIGIT_SETS
SPLITS = {name: DIGIT_SETS[key][1:] for name, key in
          (("reference", "judge_reference"), ("calibration", "judge_calibration"), ("test", "target"))}
DEV_PLACEMENT_SEED = 4321  # placements of the train digits the development judge uses
NN_K = 5
NN_SIDE = 20  # longer side of the normalised digit (MNIST: 20 px in a 28 px frame)
NN_FRAME = 28
NN_BLUR_SIGMA = 0.5
NONDIGIT_PERCENTILE = 99.0
ECE_BINS = 15


def heldout_split(name: str) -> tuple[Tensor, Tensor]:
    """(canvases [n, 1, 32, 32] in [-1, 1], labels [n]) of one named held-out split (see the module doc)."""
    if name not in SPLITS:
        raise UgdError(f"unknown held-out split {name!r}; use one of {', '.join(SPLITS)}")
    lo, hi = SPLITS[name]
    images, labels = _all_heldout()
    return images[lo:hi], labels[lo:hi]


@lru_cache(maxsize=1)
def _all_heldout() -> tuple[Tensor, Tensor]:
    return heldout_canvases(1000)


# -- calibration -----------------------------------------------------------------------------


def fit_temperature(logits: Tensor, labels: Tensor) -> float:
    """The T > 0 minimising mean NLL of softmax(logits / T) (Guo et al. 2017, temperature scaling).

    Optimised over log T with L-BFGS, so T stays positive.
    """
    logits, labels = logits.detach().double(), labels.detach().long()
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.5, max_iter=100, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    opt.step(closure)
    return float(log_t.detach().exp())


def expected_calibration_error(probs: Tensor, labels: Tensor, bins: int = ECE_BINS) -> float:
    """ECE: sum over equal-width confidence bins of |accuracy - mean confidence| x bin share (Guo et al. 2017, eq. 3)."""
    conf, pred = probs.max(1)
    correct = (pred == labels).double()
    edges = torch.linspace(0, 1, bins + 1, dtype=torch.float64)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (conf.double() > lo) & (conf.double() <= hi)
        if inside.any():
            ece += float(inside.double().mean() * (correct[inside].mean() - conf[inside].double().mean()).abs())
    return ece


def calibration_report(logits: Tensor, labels: Tensor, temperature: float) -> dict[str, float]:
    """Accuracy, ECE and the share of p >= 0.9, before (T = 1) and after temperature scaling."""
    out: dict[str, float] = {"n": len(labels), "temperature": temperature}
    for tag, t in (("before", 1.0), ("after", temperature)):
        p = (logits / t).softmax(1)
        out[f"accuracy_{tag}"] = float((p.argmax(1) == labels).float().mean())
        out[f"ece_{tag}"] = expected_calibration_error(p, labels)
        out[f"confident_{tag}"] = float((p.max(1).values >= 0.9).float().mean())
    return out


# -- nearest neighbours ----------------------------------------------------------------------


def normalise_digits(images: Tensor) -> tuple[Tensor, Tensor]:
    """Images [N, C, H, W] in [-1, 1] -> (unit vectors [N, 784], has_ink [N] bool).

    Tight ink box -> longer side NN_SIDE px (aspect kept, bilinear) -> centred in a
    NN_FRAME x NN_FRAME frame -> deskewed -> Gaussian blur -> mean removed -> unit L2 norm. An image with
    no ink gives the zero vector and has_ink False.
    """
    from torchvision.transforms.functional import gaussian_blur

    x = preprocess(images.detach().float().cpu())
    ink = ((x[:, 0] + 1) / 2).clamp(0, 1)
    mask = x[:, 0] > 0.0
    out = torch.zeros(len(x), 1, NN_FRAME, NN_FRAME)
    has_ink = mask.flatten(1).any(1)
    for i in torch.nonzero(has_ink).flatten().tolist():
        rows = torch.nonzero(mask[i].any(1)).flatten()
        cols = torch.nonzero(mask[i].any(0)).flatten()
        crop = ink[i, rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
        h, w = crop.shape
        scale = NN_SIDE / max(h, w)
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        patch = F.interpolate(crop[None, None], size=(nh, nw), mode="bilinear", align_corners=False, antialias=False)
        top, left = (NN_FRAME - nh) // 2, (NN_FRAME - nw) // 2
        out[i, 0, top : top + nh, left : left + nw] = patch[0, 0]
    out = gaussian_blur(deskew(out), kernel_size=5, sigma=NN_BLUR_SIGMA).flatten(1)
    out = out - out.mean(1, keepdim=True)
    out = out / out.norm(dim=1, keepdim=True).clamp(min=1e-8)
    out[~has_ink] = 0.0
    return out, has_ink


def deskew(frames: Tensor) -> Tensor:
    """Shear each [N, 1, S, S] frame about its ink centroid so that the ink's moment mu11 becomes 0.

    With centroid (cx, cy) and central moments mu11, mu02 the output pixel (x, y) reads the input
    at (x + s (y - cy), y) with s = mu11 / mu02, and the centroid moves to the frame's centre.
    """
    n, _, side, _ = frames.shape
    ys, xs = torch.meshgrid(torch.arange(side, dtype=frames.dtype), torch.arange(side, dtype=frames.dtype), indexing="ij")
    w = frames[:, 0]
    mass = w.flatten(1).sum(1).clamp(min=1e-6)
    cx = (w * xs).flatten(1).sum(1) / mass
    cy = (w * ys).flatten(1).sum(1) / mass
    dx, dy = xs - cx[:, None, None], ys - cy[:, None, None]
    skew = (w * dx * dy).flatten(1).sum(1) / (w * dy**2).flatten(1).sum(1).clamp(min=1e-6)
    c, half = (side - 1) / 2, side / 2
    theta = torch.zeros(n, 2, 3, dtype=frames.dtype)
    theta[:, 0, 0] = 1.0
    theta[:, 0, 1] = skew
    theta[:, 1, 1] = 1.0
    theta[:, 0, 2] = ((cx - c) - skew * (cy - c)) / half
    theta[:, 1, 2] = (cy - c) / half
    grid = F.affine_grid(theta, [n, 1, side, side], align_corners=False)
    return F.grid_sample(frames, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


@dataclass
class NNVerdict:
    """Per-image results of the nearest-neighbour judge."""

    pred: Tensor  # [N] long, the k-NN vote (-1 for a non-finite image)
    distance: Tensor  # [N] distance to the nearest reference (2.0, the maximum, for an image with no ink or a non-finite one)
    is_digit: Tensor  # [N] bool: finite, has ink and distance <= threshold

    def correct(self, labels: Tensor) -> Tensor:
        """[N] bool: the vote equals the label and the image is a digit (a non-finite image never is)."""
        return (self.pred == labels) & self.is_digit


class NearestNeighbourJudge:
    """k-NN class vote against the reference split, with a non-digit threshold fitted on the calibration split."""

    def __init__(self, k: int = NN_K, percentile: float = NONDIGIT_PERCENTILE,
                 references: tuple[Tensor, Tensor] | None = None, calibration: Tensor | None = None):
        """References and the threshold's calibration digits default to the held-out reference and
        calibration splits (the reported judge); a development judge passes train digits instead."""
        ref_images, self.ref_labels = references if references is not None else heldout_split("reference")
        self.k = k
        self.ref, _ = normalise_digits(ref_images)
        cal_images = calibration if calibration is not None else heldout_split("calibration")[0]
        d = self._nearest(cal_images)[0][:, 0]
        self.threshold = float(torch.quantile(d, percentile / 100.0))
        self.percentile = percentile

    def _nearest(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        v, has_ink = normalise_digits(images)
        dist = torch.cdist(v, self.ref)
        d, idx = dist.topk(self.k, dim=1, largest=False)
        d[~has_ink] = 2.0
        return d, idx, has_ink

    def judge(self, images: Tensor) -> NNVerdict:
        """k-NN vote, nearest distance and the digit / non-digit call for each image.

        An image with any non-finite pixel is not a digit (vote -1, distance 2.0): it is never counted correct."""
        finite = torch.isfinite(images.detach()).flatten(1).all(1).cpu()
        d, idx, has_ink = self._nearest(torch.where(finite.to(images.device)[:, None, None, None], images.detach(), -1.0))
        votes = torch.zeros(len(d), 10, dtype=torch.float64)
        # one vote per neighbour, plus a tie-breaker of 1e-3 (k - rank + 1): a tied vote goes to the lower sum of ranks
        weight = 1.0 + 1e-3 * torch.arange(self.k, 0, -1, dtype=torch.float64)
        votes.scatter_add_(1, self.ref_labels[idx], weight.expand(len(d), -1).contiguous())
        pred = torch.where(finite, votes.argmax(1), -1)
        dist = torch.where(finite, d[:, 0], 2.0)
        return NNVerdict(pred, dist, finite & has_ink & (dist <= self.threshold))

    def ceiling(self) -> dict[str, float]:
        """The judge on the real test split: accuracy (non-digits counted wrong) and non-digit share."""
        images, labels = heldout_split("test")
        v = self.judge(images)
        return dict(accuracy=float(v.correct(labels).float().mean()), vote_accuracy=float((v.pred == labels).float().mean()),
                    nondigit=float((~v.is_digit).float().mean()), threshold=self.threshold, k=self.k,
                    percentile=self.percentile, n=len(labels))


@lru_cache(maxsize=1)
def _train_canvases() -> tuple[Tensor, Tensor]:
    from .data import place, random_placement, to_model_space
    from .targets import cached_digits

    d = cached_digits("train")
    g = torch.Generator().manual_seed(DEV_PLACEMENT_SEED)
    return to_model_space(place(d.images, random_placement(len(d.labels), g))), d.labels


def development_canvases(part: str = "calibration") -> tuple[Tensor, Tensor]:
    """(canvases, labels) of one part of the development judge's train digits (``data.DEV_JUDGE_SETS``)."""
    images, labels = _train_canvases()
    lo, hi = DEV_JUDGE_SETS[part]
    return images[lo:hi], labels[lo:hi]


@lru_cache(maxsize=1)
def development_judge() -> NearestNeighbourJudge:
    """The NN judge's algorithm on train digits only (what tuning and pilots may use; never a reported judge):
    references = train digits 0-2999, non-digit threshold = the 99th percentile of train digits 3000-3999's
    nearest distances, at placements seeded by ``DEV_PLACEMENT_SEED``. It reads no held-out digit."""
    return NearestNeighbourJudge(references=development_canvases("reference"), calibration=development_canvases("calibration")[0])


__all__ = [
    "SPLITS",
    "development_canvases",
    "development_judge",
    "NearestNeighbourJudge",
    "NNVerdict",
    "calibration_report",
    "deskew",
    "expected_calibration_error",
    "fit_temperature",
    "heldout_split",
    "normalise_digits",
]
