"""Face-identity guidance: ``l = 1 - cos(A(crop(D(x0_hat))), A(crop(reference)))``.

Bansal et al. 2023 guide Stable Diffusion with a face recogniser (their code:
facenet-pytorch InceptionResnetV1 with MTCNN crops, loss = mean |e - e_ref|). Here
the recogniser is ArcFace (insightface IResNet-50/100); the loss is ``1 - cos``
(``loss=l1`` reproduces the official form on unit embeddings).

The crop is a fixed box in relative coordinates, by default the central square the
official code uses when it does not run a detector (``--center_face``: pixels
48..208 of a 256 image, i.e. 0.1875..0.8125). A fixed box keeps the loss
differentiable and deterministic at every step: a face detector on a noisy
``x0_hat`` early in the chain finds nothing or jumps around, and its box is not
differentiable anyway. Prompt for a headshot so the face lands in the box.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ugd_core.errors import UgdError
from ugd_core.guidance import freeze
from ugd_kit.images import load_image
from ugd_kit.weights import find_weights, hub_checkpoint, read_state_dict

from .iresnet import LAYERS, from_state_dict

DEFAULT_BOX = (0.1875, 0.1875, 0.8125, 0.8125)
INPUT_SIZE = 112
OPTION = "--guide face:weights=/path/backbone.pth"


def parse_box(text: str | Sequence[float], owner: str = "face") -> tuple[float, float, float, float]:
    """``"x0,y0,x1,y1"`` (fractions of width / height) -> a checked tuple."""
    try:
        vals = [float(v) for v in text.replace(";", ",").split(",")] if isinstance(text, str) else [float(v) for v in text]
    except (TypeError, ValueError):  # from Python: None, a bare number or nested lists are no four numbers either
        raise UgdError(f"{owner}: box {text!r} is not four numbers; write box=\"x0,y0,x1,y1\" with fractions in [0, 1]") from None
    if len(vals) != 4 or not (0 <= vals[0] < vals[2] <= 1 and 0 <= vals[1] < vals[3] <= 1):
        raise UgdError(f"{owner}: box {text!r} must be x0,y0,x1,y1 with 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1")
    return (vals[0], vals[1], vals[2], vals[3])


def crop_resize(images: Tensor, box: Sequence[float], size: int = INPUT_SIZE) -> Tensor:
    """Differentiable crop of a relative box, resized to size x size (bilinear, antialiased)."""
    h, w = images.shape[-2:]
    x0, y0 = int(round(box[0] * w)), int(round(box[1] * h))
    x1, y1 = max(x0 + 1, int(round(box[2] * w))), max(y0 + 1, int(round(box[3] * h)))
    face = images[..., y0:y1, x0:x1]
    if face.shape[-2:] != (size, size):
        face = F.interpolate(face, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return face


class FaceGuide:
    """Identity loss between a crop of each image and a reference face.

    ``model`` maps [N, 3, 112, 112] faces in [-1, 1] to embeddings (an :class:`IResNet`).
    ``image`` is a path or a [1, 3, H, W] tensor in [-1, 1]; ``ref_box`` (default:
    ``box``) is the crop taken from it. ``loss`` is ``cosine`` (1 - cos) or ``l1``.
    """

    differentiable = True

    def __init__(
        self,
        model: nn.Module,
        *,
        image: str | Path | Tensor,
        box: Sequence[float] | str = DEFAULT_BOX,
        ref_box: Sequence[float] | str | None = None,
        loss: str = "cosine",
        name: str = "face",
        device: str | torch.device = "cpu",
    ):
        if loss not in ("cosine", "l1"):
            raise UgdError(f"{name}: loss={loss!r} is not one of cosine, l1")
        self.name = name
        self.model = model
        freeze(model)
        self.device = torch.device(device)
        self.model.to(self.device)
        self.box = parse_box(box, name)  # a text or four numbers, checked either way
        self.ref_box = self.box if ref_box is None or ref_box == "" else parse_box(ref_box, name)
        self.kind = loss
        ref = image if isinstance(image, Tensor) else load_image(image, name)
        with torch.no_grad():
            self.target: Tensor = self.f(crop_resize(ref.to(self.device), self.ref_box))

    def preprocess(self, images: Tensor) -> Tensor:
        """Crop ``box`` and resize to 112 x 112; images in [-1, 1] already equal ArcFace's (x - 0.5) / 0.5."""
        return crop_resize(images, self.box)

    def f(self, x: Tensor) -> Tensor:
        """Unit-norm identity embeddings [N, D]."""
        return F.normalize(self.model(x), dim=-1)

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        """``1 - cos`` (or the mean absolute difference for ``loss=l1``) per sample: shape [N]."""
        t = target.to(output)
        if self.kind == "l1":
            return (output - t).abs().mean(-1)
        return 1.0 - (output * t).sum(-1)

    def score(self, images: Tensor) -> Tensor:
        """The identity loss of each image (no gradient); lower = closer to the reference."""
        with torch.no_grad():
            return self.loss(self.f(self.preprocess(images.to(self.device))), self.target)

    def rerank(self, images: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """Indices of the ``k`` images closest to the reference identity (best first) and their losses."""
        return rerank(self, images, k)

    def to(self, device: str | torch.device) -> "FaceGuide":
        """Move the network and the reference embedding to ``device``."""
        self.device = torch.device(device)
        self.model.to(self.device)
        self.target = self.target.to(self.device)
        return self


def rerank(guide: FaceGuide, images: Tensor, k: int, batch_size: int = 16) -> tuple[Tensor, Tensor]:
    """Top-k re-ranking by identity (the paper generates several samples and keeps the best k).

    Returns (indices [k], losses [k]) sorted best first; ``images[indices]`` are the picks.
    """
    if k < 1:
        raise UgdError(f"{guide.name}: rerank needs k >= 1, got {k}")
    scores = torch.cat([guide.score(images[i : i + batch_size]) for i in range(0, images.shape[0], batch_size)])
    k = min(k, scores.numel())
    best = torch.argsort(scores)[:k]
    return best, scores[best]


def default_weights_path(arch: str) -> Path:
    """Where the face plugin looks for insightface weights when ``weights=`` is not given."""
    return hub_checkpoint(f"arcface_{arch}_backbone.pth")


def load_arcface(arch: str = "iresnet100", weights: str = "", device: str | torch.device = "cpu") -> nn.Module:
    """An ArcFace IResNet from an insightface-style ``backbone.pth`` (never downloads).

    Depth, widths and embedding size are read from the state dict, so any released
    IResNet (18 .. 200) loads whatever ``arch`` says; ``arch`` names the default file.
    """
    if arch not in LAYERS:
        raise UgdError(f"face: unknown arch {arch!r}; choose one of {', '.join(LAYERS)}")
    path = find_weights(f"ArcFace {arch} (insightface backbone.pth)", OPTION, weights, default_weights_path(arch))
    state = read_state_dict(path, "face")
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    state = {k.removeprefix("module."): v.float() if v.is_floating_point() else v for k, v in state.items()}
    try:
        model = from_state_dict(state)
        model.load_state_dict(state)
    except (KeyError, RuntimeError) as exc:
        raise UgdError(f"face: {str(path)!r} is not an insightface IResNet state dict ({type(exc).__name__}: {str(exc)[:120]})") from None
    freeze(model)
    return model.to(device)


def build_face_guide(
    image: str,
    arch: str = "iresnet100",
    weights: str = "",
    box: str = "",
    ref_box: str = "",
    loss: str = "cosine",
    device: str = "cpu",
) -> FaceGuide:
    """Factory behind ``--guide face:image=PATH,...``."""
    the_box = parse_box(box) if box else DEFAULT_BOX
    the_ref_box = parse_box(ref_box) if ref_box else None
    ref = load_image(image, "face")  # fail on a bad path before loading weights
    model = load_arcface(arch, weights, device)
    return FaceGuide(model, image=ref, box=the_box, ref_box=the_ref_box, loss=loss, device=device)
