"""The CLIP guide: ``l = 1 - cos(E_img(D(x0_hat)), c)`` with c a text or image embedding.

Bansal et al. 2023 guide Stable Diffusion and an unconditional ImageNet model
with CLIP (their code: OpenAI CLIP RN50, loss ``-logit_scale * cos``; here the
loss is ``1 - cos``, so a strength s there is ``100 * s`` here, since the trained
logit scale is 100). The network is any Hugging Face ``CLIPModel``; the default
``openai/clip-vit-base-patch16`` is the model the paper names.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ugd_core.backbones import missing_weights_message
from ugd_core.errors import UgdError, UgdWarning
from ugd_kit.images import load_image
from ugd_core.guidance import freeze

DEFAULT_MODEL = "openai/clip-vit-base-patch16"
# OpenAI CLIP's pixel statistics (used when a model folder has no preprocessor config)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
OPTION = "--guide clip:model=/path/to/clip-folder"


def resize_center_crop(x: Tensor, size: int) -> Tensor:
    """Differentiable CLIP-style resize: shortest side to ``size`` (bicubic, antialiased), then a central crop."""
    h, w = x.shape[-2:]
    if (h, w) != (size, size):
        scale = size / min(h, w)
        nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
        x = F.interpolate(x, size=(nh, nw), mode="bicubic", align_corners=False, antialias=True)
        top, left = (nh - size) // 2, (nw - size) // 2
        x = x[..., top : top + size, left : left + size]
    return x


class ClipGuide:
    """CLIP guidance towards a prompt or a reference image (loss ``1 - cos`` per sample).

    ``model`` is a ``transformers.CLIPModel`` (injected directly in tests, or from
    :func:`load_clip`); ``tokenizer`` is needed only for a text target. Exactly one
    of ``prompt`` and ``image`` (a path or a [1, 3, H, W] tensor in [-1, 1]) is given.
    """

    differentiable = True

    def __init__(
        self,
        model: Any,
        tokenizer: Any = None,
        *,
        prompt: str | Sequence[str] = "",
        image: str | Path | Tensor | None = None,
        image_size: int | None = None,
        mean: Sequence[float] = CLIP_MEAN,
        std: Sequence[float] = CLIP_STD,
        name: str = "clip",
        device: str | torch.device = "cpu",
    ):
        has_image = image is not None and not (isinstance(image, str) and not image)
        if bool(prompt) == has_image:
            raise UgdError(f"{name}: give exactly one target, prompt=TEXT or image=PATH (e.g. {name}:prompt='a red car')")
        self.name = name
        self.model = model
        freeze(model)
        self.device = torch.device(device)
        self.model.to(self.device)
        self.tokenizer = tokenizer
        self.image_size = int(image_size or model.config.vision_config.image_size)
        self.mean = torch.tensor(list(mean), dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(list(std), dtype=torch.float32).view(1, 3, 1, 1)
        self.prompt = prompt
        with torch.no_grad():
            if prompt:
                self.target: Tensor = self.embed_text(prompt).mean(0, keepdim=True)
            else:
                ref = load_image(image, name) if not isinstance(image, Tensor) else image  # type: ignore[arg-type]
                self.target = self.f(self.preprocess(ref.to(self.device)))
            self.target = F.normalize(self.target, dim=-1)

    def preprocess(self, images: Tensor) -> Tensor:
        """[-1, 1] -> CLIP input: resize + central crop to the model's size, CLIP mean/std."""
        x = resize_center_crop((images + 1) / 2, self.image_size)
        return (x - self.mean.to(x)) / self.std.to(x)

    def f(self, x: Tensor) -> Tensor:
        """Unit-norm CLIP image embeddings [N, D]."""
        return F.normalize(_features(self.model.get_image_features(pixel_values=x)), dim=-1)

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        """``1 - cos`` per sample, shape [N]."""
        return 1.0 - (output * target.to(output)).sum(-1)

    def embed_text(self, prompt: str | Sequence[str]) -> Tensor:
        """Unit-norm CLIP text embeddings, one per prompt."""
        if self.tokenizer is None:
            raise UgdError(f"{self.name}: a text target needs the model's tokenizer; pass tokenizer= or use load_clip()")
        texts = [prompt] if isinstance(prompt, str) else list(prompt)
        max_len = min(int(getattr(self.tokenizer, "model_max_length", 77) or 77), 77)
        ids = self.tokenizer(texts, padding="max_length", max_length=max_len, truncation=True, return_tensors="pt")
        ids = {k: v.to(self.device) for k, v in ids.items() if k in ("input_ids", "attention_mask")}
        return F.normalize(_features(self.model.get_text_features(**ids)), dim=-1)

    def to(self, device: str | torch.device) -> "ClipGuide":
        """Move the network and the target to ``device``."""
        self.device = torch.device(device)
        self.model.to(self.device)
        self.target = self.target.to(self.device)
        return self


def _features(out: Any) -> Tensor:
    # transformers 4.x returns the projected tensor; 5.x a ModelOutput whose pooler_output is projected
    return out if isinstance(out, Tensor) else out.pooler_output


def _looked_in(model_id: str) -> str:
    p = Path(model_id).expanduser()
    if p.is_absolute() or model_id.startswith((".", "~")) or p.exists():
        return str(p)
    return "the Hugging Face cache"


def load_clip(model_id: str = DEFAULT_MODEL, device: str | torch.device = "cpu", option: str = OPTION) -> dict[str, Any]:
    """Load a CLIP model, its tokenizer and its pixel statistics from a folder or the local Hugging Face cache (never downloads).

    The input size is the vision tower's (its position embeddings fix it); mean and std
    come from the folder's preprocessor config when there is one.

    Returns ``dict(model=, tokenizer=, mean=, std=, image_size=)``; a missing model is a
    UgdError naming the model, where it looked and ``option``.
    """
    from transformers import AutoTokenizer, CLIPModel

    try:
        model = CLIPModel.from_pretrained(model_id, local_files_only=True)  # never downloads
        tokenizer = AutoTokenizer.from_pretrained(model_id, local_files_only=True)
    except (OSError, ValueError):
        raise UgdError(missing_weights_message(model_id, _looked_in(model_id), option)) from None
    mean, std, size = CLIP_MEAN, CLIP_STD, int(model.config.vision_config.image_size)
    from transformers import CLIPImageProcessor

    try:
        proc = CLIPImageProcessor.from_pretrained(model_id, local_files_only=True)
    except (OSError, ValueError) as exc:  # no (readable) preprocessor config: say so, and which statistics are used
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        warnings.warn(f"clip: no image processor config for {model_id!r} ({detail}); normalising with OpenAI CLIP's pixel "
                      f"statistics mean={CLIP_MEAN}, std={CLIP_STD}; add the model's preprocessor_config.json if it was "
                      "trained with others", UgdWarning, stacklevel=2)
    else:
        mean, std = tuple(proc.image_mean), tuple(proc.image_std)
    model.to(device)
    return dict(model=model, tokenizer=tokenizer, mean=mean, std=std, image_size=size)


def build_clip_guide(prompt: str = "", image: str = "", model: str = DEFAULT_MODEL, device: str = "cpu") -> ClipGuide:
    """Factory behind ``--guide clip:prompt=...|image=...,model=...``."""
    if bool(prompt) == bool(image):  # check before loading any weights
        raise UgdError("clip: give exactly one target, prompt=TEXT or image=PATH (e.g. clip:prompt='a red car')")
    if image:
        load_image(image, "clip")  # fail on a bad path before loading the model
    parts = load_clip(model, device)
    return ClipGuide(
        parts["model"],
        parts["tokenizer"],
        prompt=prompt,
        image=image or None,
        image_size=parts["image_size"],
        mean=parts["mean"],
        std=parts["std"],
        device=device,
    )
