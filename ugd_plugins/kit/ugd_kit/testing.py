"""Fixtures for testing guides offline (no download, seconds on a CPU): real photos shipped with
scikit-image and a byte-level CLIP tokenizer built in memory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


def tiny_clip_tokenizer(max_length: int = 16) -> Any:
    """A CLIP BPE tokenizer over single bytes (no merges): every character is a token."""
    from transformers import CLIPTokenizer

    chars = _byte_level_alphabet()
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    tok = CLIPTokenizer(vocab=vocab, merges=[])
    tok.model_max_length = max_length
    return tok


def tiny_clip(text_layers: int = 1, vision_layers: int = 1) -> tuple[Any, Any]:
    """A random-weight ``CLIPModel`` (width 32, 32-px images in 8-px patches, a 16-d projection; seeded 0) and its
    :func:`tiny_clip_tokenizer`, built from a config: no download."""
    from transformers import CLIPConfig, CLIPModel

    tok = tiny_clip_tokenizer(16)
    torch.manual_seed(0)
    text = dict(vocab_size=len(tok.get_vocab()), hidden_size=32, intermediate_size=37, num_hidden_layers=text_layers, num_attention_heads=4,
                max_position_embeddings=16, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    vision = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=vision_layers, num_attention_heads=4, image_size=32, patch_size=8)
    return CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)), tok


def _byte_level_alphabet() -> list[str]:
    # GPT-2/CLIP byte-level BPE: printable bytes map to themselves, the others to U+0100 onwards.
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("\xa1"), ord("\xac") + 1), *range(ord("\xae"), ord("\xff") + 1)]
    out, extra = [], 0
    for b in range(256):
        if b in printable:
            out.append(chr(b))
        else:
            out.append(chr(256 + extra))
            extra += 1
    return out


def photos(size: int = 48, names: tuple[str, ...] = ("astronaut", "coffee")) -> torch.Tensor:
    """Real photos shipped with scikit-image (astronaut, coffee, chelsea, rocket), resized, NCHW in [-1, 1]."""
    import torch.nn.functional as F
    from skimage import data

    out = []
    for n in names:
        x = torch.from_numpy(getattr(data, n)()).float().permute(2, 0, 1)[None] / 127.5 - 1
        out.append(F.interpolate(x[:, :3], size=(size, size), mode="bilinear", antialias=True, align_corners=False))
    return torch.cat(out)


def save_png(x: torch.Tensor, path: str | Path) -> str:
    """The first image of an NCHW batch in [-1, 1] as an RGB PNG; returns the path."""
    from PIL import Image

    arr = ((x[0].permute(1, 2, 0).clamp(-1, 1) + 1) * 127.5).round().byte().numpy()
    Image.fromarray(arr).save(path)
    return str(path)


def calibrate_bn(module: torch.nn.Module, x: torch.Tensor) -> torch.nn.Module:
    """Set the BatchNorm statistics of a random-weight network to those of ``x`` (else its output is nearly constant);
    the module in eval mode."""
    for m in module.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = None  # cumulative average: after a reset, exactly this batch's statistics
            m.reset_running_stats()
    module.train()
    with torch.no_grad():
        module(x)
    return module.eval()
