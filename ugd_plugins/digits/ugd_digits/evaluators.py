"""Independent judges of digits-world results (family B: ResNetSmall, seed 2). Never used as guides.

- ``eval_classifier`` (ResNetSmall, 10 classes): class predictions, calibrated by temperature
  scaling fitted on the held-out *calibration* split (``judges.py``; it was trained with label
  smoothing 0.1, which caps raw confidence); its pooled
  penultimate features (global average of the last stage, 4*width = 64-d) are
  the FID feature extractor; its feature maps give the Gram style distance.
- ``eval_id`` (ResNetSmall, 64-d instance embedding, SimCLR-trained): identity cosine.
- Mask IoU and box IoU are model-free: the ink of a generated image is its
  pixels > 0 in [-1, 1] space and its box is the tight box of that ink
  (``data.foreground_mask`` / ``data.tight_boxes``), the same definition the
  training targets used.

Every method takes images NCHW float in [-1, 1] ([N, 1, 32, 32]; 3 channels are
averaged, other sizes resized), runs without gradients and returns CPU tensors.

A sample with any non-finite pixel (a diverged run) is always wrong: class -1 (never a target), mask and
box IoU 0, identity cosine -1 (the worst), style distance +inf, and FID nan (``nonfinite`` finds them).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .data import box_iou, foreground_mask, mask_iou, tight_boxes
from .guides import gram, gram_distance, preprocess
from .train_guides import load_network


def nonfinite(images: Tensor) -> Tensor:
    """[N] bool: the image has a NaN or infinite value anywhere."""
    return ~torch.isfinite(images.detach()).flatten(1).all(1).cpu()


def _broadcast(ref: Tensor, n: int, what: str) -> Tensor:
    if ref.shape[0] == n:
        return ref
    if ref.shape[0] == 1:
        return ref.expand(n, *ref.shape[1:])
    raise ValueError(f"{what} has {ref.shape[0]} items; give 1 (shared) or one per image ({n})")


class Evaluators:
    """Lazily loaded family-B networks plus model-free mask and box metrics.

    ``weights_dir`` points at a folder holding ``eval_classifier.safetensors``
    and ``eval_id.safetensors`` (default: the plugin's trained weights).
    """

    def __init__(self, device: str = "cpu", weights_dir: str | Path | None = None, batch_size: int = 256):
        self.device = device
        self.weights_dir = Path(weights_dir) if weights_dir else None
        self.batch_size = batch_size
        self._nets: dict[str, nn.Module] = {}
        self._temperature: float | None = None

    def _net(self, name: str) -> nn.Module:
        if name not in self._nets:
            path = self.weights_dir / f"{name}.safetensors" if self.weights_dir else None
            self._nets[name] = load_network(name, path, self.device)
        return self._nets[name]

    @property
    def classifier(self) -> nn.Module:
        """The frozen ``eval_classifier`` (ResNetSmall)."""
        return self._net("eval_classifier")

    @property
    def identity(self) -> nn.Module:
        """The frozen ``eval_id`` embedding network (ResNetSmall)."""
        return self._net("eval_id")

    @torch.no_grad()
    def _map(self, fn, images: Tensor) -> Tensor:
        x = preprocess(images.detach().float())
        outs = [fn(x[i : i + self.batch_size].to(self.device)).cpu() for i in range(0, len(x), self.batch_size)]
        return torch.cat(outs)

    # -- classes and FID ---------------------------------------------------------------------

    def logits(self, images: Tensor) -> Tensor:
        """Raw ``eval_classifier`` logits [N, 10]."""
        return self._map(self.classifier, images)

    @property
    def temperature(self) -> float:
        """T fitted on the held-out calibration split (never on generated samples); p = softmax(logits / T)."""
        if self._temperature is None:
            from .judges import fit_temperature, heldout_split

            images, labels = heldout_split("calibration")
            self._temperature = fit_temperature(self.logits(images), labels)
        return self._temperature

    def classify(self, images: Tensor, calibrated: bool = True) -> tuple[Tensor, Tensor]:
        """(predicted class [N] long, class probabilities [N, 10]) from ``eval_classifier``.

        ``calibrated`` divides the logits by :attr:`temperature` (argmax unchanged).
        """
        t = self.temperature if calibrated else 1.0
        prob = (self.logits(images) / t).softmax(1)
        bad = nonfinite(images)
        prob[bad] = float("nan")  # no probabilities for a diverged sample (never 'confident')
        return torch.where(bad, -1, prob.argmax(1)), prob  # and never a class: NaN logits would argmax to 0

    def features(self, images: Tensor) -> Tensor:
        """FID features [N, 64]: ``eval_classifier``'s globally pooled last-stage activations (before the head)."""
        feats = self._map(self.classifier.embed, images)
        feats[nonfinite(images)] = float("nan")  # a diverged sample makes the FID nan, never a finite number
        return feats

    @staticmethod
    def fid(feats_a: Tensor, feats_b: Tensor) -> float:
        """Fréchet distance between Gaussians fitted to two feature sets (Heusel et al. 2017), float64.

        ||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)), matrix root by
        symmetric eigendecompositions. Biased at small n: compare only equal sample counts.
        """
        a = np.asarray(feats_a.detach().cpu().double())
        b = np.asarray(feats_b.detach().cpu().double())
        if len(a) < 2 or len(b) < 2:
            raise ValueError("fid needs at least 2 samples in each set")
        if not (np.isfinite(a).all() and np.isfinite(b).all()):
            return math.nan  # a sample that diverged has no place in a Gaussian fit; the bench counts them
        mu_a, mu_b = a.mean(0), b.mean(0)
        s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
        # Tr((S_a S_b)^(1/2)) = sum of sqrt(eig(S_a^(1/2) S_b S_a^(1/2))): symmetric PSD eigenproblems,
        # stable even when a set of samples has collapsed and its covariance is singular.
        try:
            w, v = np.linalg.eigh(s_a)
            root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
            trace_covmean = np.sqrt(np.clip(np.linalg.eigvalsh(root_a @ s_b @ root_a), 0, None)).sum()
        except np.linalg.LinAlgError:  # features so extreme (finite, ~1e150) that LAPACK cannot converge
            return math.nan
        return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2 * trace_covmean)

    # -- identity and style ------------------------------------------------------------------

    def identity_cosine(self, images: Tensor, ref_images: Tensor) -> Tensor:
        """[N] cosine between ``eval_id`` embeddings of each image and its reference (one shared ref or one each)."""
        z = F.normalize(self._map(self.identity, images), dim=1)
        r = F.normalize(self._map(self.identity, ref_images), dim=1)
        cos = (z * _broadcast(r, len(z), "ref_images")).sum(1)
        return torch.where(nonfinite(images), -1.0, cos)  # a non-finite sample gets the worst cosine

    def style_distance(self, images: Tensor, style_images: Tensor) -> Tensor:
        """[N] Gram distance (relative squared error per layer, summed) over ``eval_classifier``'s 4 feature maps.

        Layers: stem and the 3 stages; per layer mean((G - G_s)^2) / mean(G_s^2)
        with G = F F^T / (C H W), as :func:`ugd_digits.guides.gram_distance`.
        """
        x = preprocess(images.detach().float())
        s = _broadcast(preprocess(style_images.detach().float()), len(x), "style_images")
        out = []
        with torch.no_grad():
            for i in range(0, len(x), self.batch_size):
                fa = self.classifier.feature_maps(x[i : i + self.batch_size].to(self.device))
                fb = self.classifier.feature_maps(s[i : i + self.batch_size].to(self.device))
                out.append(gram_distance([gram(a) for a in fa], [gram(b) for b in fb]).cpu())
        return torch.where(nonfinite(images), math.inf, torch.cat(out))  # a non-finite sample is the farthest

    # -- model-free mask and box -------------------------------------------------------------

    @staticmethod
    def ink_mask(images: Tensor) -> Tensor:
        """[N, 32, 32] bool ink mask of generated images (pixels > 0 in [-1, 1])."""
        return foreground_mask(preprocess(images.detach().float()).cpu())

    def mask_iou(self, images: Tensor, target_masks: Tensor) -> Tensor:
        """[N] IoU of each image's ink mask with the target mask ([N or 1, 32, 32] or [N or 1, 1, 32, 32], bool)."""
        ink = self.ink_mask(images)
        t = target_masks.detach().cpu()
        if t.dim() == 4:
            t = t[:, 0]
        iou = mask_iou(ink, _broadcast(t.bool(), len(ink), "target_masks"))
        return torch.where(nonfinite(images), 0.0, iou)  # NaN > 0 is no ink, inf is all ink: neither is a mask

    def box_metrics(self, images: Tensor, target_boxes: Tensor, labels: Tensor | int | None = None) -> dict[str, Tensor]:
        """Location metrics against target boxes in canvas pixels ([N or 1, 4], x0, y0, x1, y1).

        Returns ``iou`` [N] (tight ink box vs target box), ``boxes`` [N, 4] (the
        ink boxes) and, when ``labels`` are given, ``pred`` [N] and ``correct``
        [N] bool from ``eval_classifier``.
        """
        ink = self.ink_mask(images)
        boxes = tight_boxes(ink)
        tb = target_boxes.detach().cpu().float().reshape(-1, 4)
        iou = box_iou(boxes, _broadcast(tb, len(boxes), "target_boxes"))
        out = {"iou": torch.where(nonfinite(images), 0.0, iou), "boxes": boxes}
        if labels is not None:
            lab = torch.as_tensor(labels).reshape(-1)
            pred, _ = self.classify(images)
            out["pred"] = pred
            out["correct"] = pred == _broadcast(lab, len(pred), "labels")
        return out


__all__ = ["Evaluators", "nonfinite"]
