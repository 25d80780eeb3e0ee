"""ugd-clip on a tiny random-weight CLIPModel (real architecture, small config) and real photos, offline."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
import torch.nn.functional as F

from ugd_core import SamplerConfig, UgdError, guide_loss, load_registry
from ugd_core.testing import photos as _photos, save_png

torch.set_num_threads(1)


def photos(size: int = 32, names: tuple[str, ...] = ('astronaut', 'coffee')) -> torch.Tensor:
    return _photos(size, names)




def tiny_clip():  # type: ignore[no-untyped-def]
    from transformers import CLIPConfig, CLIPModel

    from ugd_core.testing import tiny_clip_tokenizer

    tok = tiny_clip_tokenizer(16)
    torch.manual_seed(0)
    cfg = CLIPConfig(
        text_config=dict(
            vocab_size=len(tok.get_vocab()), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
            num_attention_heads=4, max_position_embeddings=16, bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        ),
        vision_config=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, image_size=32, patch_size=8),
        projection_dim=16,
    )
    return CLIPModel(cfg), tok


def descend(guide, x: torch.Tensor, steps: int = 5, lr: float = 0.05):  # type: ignore[no-untyped-def]
    """Plain gradient steps on the image (largest pixel change lr per step); returns (first, last) losses."""
    x = x.clone().requires_grad_(True)
    first = None
    for _ in range(steps):
        loss = guide_loss(guide, x)
        (g,) = torch.autograd.grad(loss.sum(), x)
        if first is None:
            first = loss.detach()
            assert torch.isfinite(g).all() and g.abs().sum() > 0, "the gradient does not reach the image"
        with torch.no_grad():
            x -= lr * g / g.abs().amax().clamp(min=1e-12)
    return first, guide_loss(guide, x.detach()).detach()


@pytest.mark.parametrize("target", ["prompt", "image"])
def test_loss_shape_gradient_and_descent(target: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from ugd_clip import ClipGuide

    model, tok = tiny_clip()
    imgs = photos(48)  # not the model's 32: preprocess resizes
    kw = dict(prompt="a cup of coffee") if target == "prompt" else dict(image=save_png(photos(40, ("chelsea",)), tmp_path / "ref.png"))
    guide = ClipGuide(model, tok, **kw)
    assert not any(p.requires_grad for p in model.parameters()) and not model.training
    loss = guide_loss(guide, imgs)
    assert loss.shape == (2,) and torch.isfinite(loss).all()
    first, last = descend(guide, imgs)
    assert (last < first).all(), (first, last)


def test_image_target_of_itself_is_zero_loss() -> None:
    from ugd_clip import ClipGuide

    model, tok = tiny_clip()
    ref = photos(32, ("rocket",))
    guide = ClipGuide(model, tok, image=ref)
    assert guide_loss(guide, ref).abs().max() < 1e-5


def test_loads_a_local_folder_through_the_factory(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from transformers import CLIPImageProcessor

    from ugd_clip import build_clip_guide

    model, tok = tiny_clip()
    model.save_pretrained(tmp_path / "clip")
    tok.save_pretrained(tmp_path / "clip")
    CLIPImageProcessor(crop_size={"height": 32, "width": 32}, image_mean=[0.5] * 3, image_std=[0.25] * 3).save_pretrained(tmp_path / "clip")
    guide = build_clip_guide(prompt="a rocket", model=str(tmp_path / "clip"))
    assert guide.image_size == 32 and guide.std.flatten().tolist() == [0.25] * 3
    assert guide_loss(guide, photos(32)).shape == (2,)


def test_missing_weights_offline_is_a_ugd_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from ugd_clip import build_clip_guide

    with pytest.raises(UgdError, match=r"weights for 'ugd-tests/no-such-clip' not found.*model="):
        build_clip_guide(prompt="a dog", model="ugd-tests/no-such-clip")
    missing = str(tmp_path / "nowhere")
    with pytest.raises(UgdError, match="not found"):
        build_clip_guide(prompt="a dog", model=missing)


def test_needs_exactly_one_target() -> None:
    from ugd_clip import build_clip_guide

    with pytest.raises(UgdError, match="exactly one"):
        build_clip_guide()
    with pytest.raises(UgdError, match="does not exist"):
        build_clip_guide(image="/no/such/picture.png")


def test_registered_through_the_entry_point() -> None:
    reg = load_registry()
    assert reg.plugins["clip"].version == "0.1.0" and not reg.plugins["clip"].error
    entry = reg.get("guide", "clip")
    assert entry.plugin == "clip" and {p.name for p in entry.params} == {"prompt", "image", "model"}
    for name in ("sd-clip", "sd-clip-fast", "imagenet-clip", "imagenet-clip-fast"):
        preset = reg.get("preset", name)
        assert preset.plugin == "clip" and "Universal-Guided-Diffusion" in preset.source
        SamplerConfig.from_dict(preset.settings)  # every knob is a real SamplerConfig field
    with pytest.raises(UgdError, match="exactly one"):
        reg.build("guide", "clip", {})
