"""Where a diffusers pixel UNet's config.json lives, read without torch or diffusers (a spec is checked before either
loads: ``cli.spec.validate_spec``). The folder rule is the one ``DiffusersPixelBackbone.from_pretrained`` loads by."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def unet_subfolder(path: str) -> str | None:
    """A pipeline folder's ``unet/``, else None (a UNet folder or a Hub id)."""
    return "unet" if (Path(path) / "unet").is_dir() else None


def unet_config(path: str) -> dict[str, Any] | None:
    """The config.json of the ``UNet2DModel`` that ``DiffusersPixelBackbone.from_pretrained`` would load from ``path``
    (a local folder, or a Hub id in the local cache: never downloads); None where there is none or it is no JSON
    object (loading the model then says why)."""
    sub = unet_subfolder(path)
    local = Path(path) / (sub or "") / "config.json"
    if local.is_file():
        found: Any = local
    elif Path(path).exists():
        return None
    else:  # a Hub id: the cached snapshot's file, if any (huggingface_hub needs no torch)
        from huggingface_hub import try_to_load_from_cache

        try:
            found = try_to_load_from_cache(path, "config.json")
        except ValueError:  # not a valid repo id
            return None
        if not isinstance(found, str):
            return None
    try:
        config = json.loads(Path(found).read_text())
    except (OSError, ValueError):
        return None
    return config if isinstance(config, dict) else None
