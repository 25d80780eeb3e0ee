"""Reading guided-diffusion checkpoints: the one-line errors for a missing or mismatched file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ugd_core.backbones import missing_weights_message
from ugd_core.errors import UgdError

from .configs import URL, Resolved, resolve


def resolve_checkpoint(config: str, model: str, kind: str) -> tuple[Resolved, Path]:
    """The release of ``model`` (or ``config``) and the checkpoint's path; a missing file is said first, even where
    its name tells no release (the missing file is then the thing to fix, not the name)."""
    try:
        resolved = resolve(config, model, kind)
    except UgdError:
        p = Path(model).expanduser()
        if not p.is_file():
            raise UgdError(missing_weights_message(p.name or str(p), repr(str(p)), "model=/path/to/checkpoint.pt")) from None
        raise
    return resolved, check_exists(model, resolved)


def check_exists(path: str, resolved: Resolved) -> Path:
    """``path`` as a Path, or the one-line UgdError naming the file and its download URL."""
    p = Path(path).expanduser()
    if p.is_file():
        return p
    rel = resolved.release
    if rel is not None:
        name = p.name if p.name in rel.files else rel.files[0]
        option = f"model=/path/to/{name} (download {URL}{name}, guided-diffusion README 'Download pre-trained models')"
    else:
        option = "model=/path/to/checkpoint.pt"
    raise UgdError(missing_weights_message(p.name or str(p), repr(str(p)), option))


def load_into(module: nn.Module, path: Path, resolved: Resolved) -> None:
    """Load a checkpoint (a plain state dict saved with ``torch.save``, or a .safetensors file) strictly."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path))
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any read failure is one user-facing line
        raise UgdError(f"adm: cannot read checkpoint {str(path)!r} ({type(exc).__name__}: {exc}); re-download it") from None
    if not isinstance(state, dict):
        raise UgdError(f"adm: {str(path)!r} is not a state dict; guided-diffusion checkpoints are saved model.state_dict()s")
    missing, unexpected = _diff(module, state)
    if missing or unexpected:
        shown = ", ".join((missing + unexpected)[:3])
        raise UgdError(
            f"adm: {path.name!r} does not match config {resolved.name!r} ({len(missing)} missing, {len(unexpected)} "
            f"unexpected keys, e.g. {shown}); pass the config of its release (`ugd info adm`)"
        )
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).split("\n")[1].strip() if "\n" in str(exc) else str(exc)
        raise UgdError(f"adm: {path.name!r} does not match config {resolved.name!r} ({first}); "
                       "pass the config of its release (`ugd info adm`)") from None


def _diff(module: nn.Module, state: dict[str, Any]) -> tuple[list[str], list[str]]:
    own = set(module.state_dict())
    return sorted(own - set(state)), sorted(set(state) - own)
