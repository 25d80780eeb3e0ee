"""Reading target images for guides (reference photos, masks, style images)."""

from __future__ import annotations

from pathlib import Path

import torch

from ugd_core.errors import UgdError


def load_image(path: str | Path, owner: str = "", size: tuple[int, int] | None = None, mode: str = "RGB") -> torch.Tensor:
    """An image file as a [1, C, H, W] float tensor in [-1, 1] (``mode`` 'RGB' or 'L').

    ``owner`` (a guide name) prefixes the error; ``size`` = (height, width) resizes
    with bicubic filtering. A missing or unreadable path is a UgdError.
    """
    from PIL import Image

    who = f"{owner}: " if owner else ""
    p = Path(path).expanduser()
    try:
        with Image.open(p) as im:
            im = im.convert(mode)
            if size is not None:
                im = im.resize((size[1], size[0]), Image.BICUBIC)
            data = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8)
            h, w = im.height, im.width
    except FileNotFoundError:
        raise UgdError(f"{who}image {str(p)!r} does not exist; check the path") from None
    except Exception as exc:  # PIL errors, and the ImportError of a library that patched Image.open (ultralytics)
        raise UgdError(f"{who}cannot read image {str(p)!r} ({type(exc).__name__}); pass a PNG or JPEG file") from None
    c = 1 if mode == "L" else 3
    return (data.view(h, w, c).permute(2, 0, 1).unsqueeze(0).float() / 127.5 - 1).contiguous()


def load_mask(path: str | Path, size: tuple[int, int] | None = None) -> torch.Tensor:
    """A class-index or palette PNG as a [H, W] long tensor (nearest-neighbour resize)."""
    from PIL import Image

    p = Path(path).expanduser()
    try:
        with Image.open(p) as im:
            if im.mode not in ("P", "L", "I", "I;16"):
                im = im.convert("L")
            if size is not None:
                im = im.resize((size[1], size[0]), Image.NEAREST)
            import numpy as np

            arr = np.array(im, dtype=np.int64)
    except FileNotFoundError:
        raise UgdError(f"mask {str(p)!r} does not exist; check the path") from None
    except Exception as exc:  # PIL errors, and the ImportError of a library that patched Image.open (ultralytics)
        raise UgdError(f"cannot read mask {str(p)!r} ({type(exc).__name__}); pass a class-index or palette PNG") from None
    return torch.from_numpy(arr)
