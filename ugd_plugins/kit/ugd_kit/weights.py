"""Local weight files for guides and backbones: find them (never download) and read them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import urlparse

import torch

from ugd_core.backbones import missing_weights_message
from ugd_core.errors import UgdError


def hub_checkpoint(url_or_name: str) -> Path:
    """torch.hub's cache file for a download URL or file name: ``<torch hub dir>/checkpoints/<file>``.

    A torchvision weights enum member's file is ``hub_checkpoint(member.url)``.
    """
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url_or_name).path)


def find_weights(what: str, option: str, given: str | Path = "", default: Path | None = None, search: Sequence[Path] = ()) -> Path:
    """The weight file to load: ``given`` (a path, else its file name in each ``search`` folder), or ``default``.

    A missing file is a UgdError naming ``what``, every place looked in, and ``option``.
    """
    if given:
        places = [Path(given).expanduser()] + [Path(d) / Path(given).name for d in search]
    elif default is not None:
        places = [Path(default)]
    else:
        raise UgdError(f"no weights given for {what!r}; point to a local copy with {option}")
    for path in places:
        if path.is_file():
            return path
    raise UgdError(missing_weights_message(what, " and ".join(str(p.absolute()) for p in places), option))


def ultralytics_weights(weights: str, option: str) -> str:
    """An ultralytics model file, never downloaded: the path, or its name in ultralytics' weights folder.

    A ``.yaml`` is returned as it is: ultralytics builds that architecture with random weights.
    """
    if Path(weights).suffix in (".yaml", ".yml"):
        return weights
    from ultralytics.utils import SETTINGS

    return str(find_weights(weights, option, weights, search=[Path(SETTINGS.get("weights_dir", "weights"))]))


def read_state_dict(path: Path, owner: str) -> dict[str, Any]:
    """``torch.load(path, weights_only=True)``; an unreadable file is a UgdError naming ``owner`` and the path."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UgdError(f"{owner}: {str(path)!r} is not a readable state dict ({type(exc).__name__}: {exc})") from None
