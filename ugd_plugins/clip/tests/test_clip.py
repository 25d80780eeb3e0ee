"""ugd-clip on a tiny random-weight CLIPModel (real architecture, small config) and real photos, offline."""

from __future__ import annotations

import re
import warnings

import pytest
import torch

from ugd_core import SamplerConfig, UgdError, guide_loss, load_registry
from ugd_kit.testing import photos, save_png, tiny_clip


@pytest.mark.parametrize("target", ["prompt", "image"])
def test_loss_shape_gradient_and_descent(target: str, tmp_path, descend) -> None:  # type: ignore[no-untyped-def]
    from ugd_clip import ClipGuide

    model, tok = tiny_clip(text_layers=2, vision_layers=2)
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

    model, tok = tiny_clip(text_layers=2, vision_layers=2)
    ref = photos(32, ("rocket",))
    guide = ClipGuide(model, tok, image=ref)
    assert guide_loss(guide, ref).abs().max() < 1e-5


def test_loads_a_local_folder_through_the_factory(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from transformers import CLIPImageProcessor

    from ugd_clip import build_clip_guide

    model, tok = tiny_clip(text_layers=2, vision_layers=2)
    model.save_pretrained(tmp_path / "clip")
    tok.save_pretrained(tmp_path / "clip")
    CLIPImageProcessor(crop_size={"height": 32, "width": 32}, image_mean=[0.5] * 3, image_std=[0.25] * 3).save_pretrained(tmp_path / "clip")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a folder with its image processor: no fallback warning
        guide = build_clip_guide(prompt="a rocket", model=str(tmp_path / "clip"))
    assert guide.image_size == 32 and guide.std.flatten().tolist() == [0.25] * 3
    assert guide_loss(guide, photos(32)).shape == (2,)


def test_a_folder_without_an_image_processor_warns_and_names_the_statistics_it_uses(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """No preprocessor_config.json: OpenAI CLIP's mean/std, with a UgdWarning that says so (never silently)."""
    from ugd_clip import build_clip_guide
    from ugd_clip.guide import CLIP_MEAN, CLIP_STD
    from ugd_core.errors import UgdWarning

    model, tok = tiny_clip(text_layers=2, vision_layers=2)
    model.save_pretrained(tmp_path / "clip")
    tok.save_pretrained(tmp_path / "clip")
    with pytest.warns(UgdWarning, match=r"clip: no image processor config for .*OpenAI CLIP's pixel statistics"):
        guide = build_clip_guide(prompt="a rocket", model=str(tmp_path / "clip"))
    assert guide.mean.flatten().tolist() == pytest.approx(list(CLIP_MEAN))
    assert guide.std.flatten().tolist() == pytest.approx(list(CLIP_STD))


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


def test_registered_through_the_entry_point(assert_fast_derives) -> None:  # type: ignore[no-untyped-def]
    reg = load_registry()
    assert reg.plugins["clip"].version == "0.1.0" and not reg.plugins["clip"].error
    entry = reg.get("guide", "clip")
    assert entry.plugin == "clip" and {p.name for p in entry.params} == {"prompt", "image", "model"}
    for name in ("sd-clip", "sd-clip-fast", "imagenet-clip", "imagenet-clip-fast"):
        preset = reg.get("preset", name)
        assert preset.plugin == "clip" and "Universal-Guided-Diffusion" in preset.source
        cited = re.search(r"\.(md|py):\d+", preset.source) or "not in the official code" in preset.source
        assert cited, "a preset cites the official file:line of its values or says they are not in the official code"
        SamplerConfig.from_dict(preset.settings)  # every knob is a real SamplerConfig field
    # the official values (README.md:116,118; scripts/clip_guided.py:340,347), strengths x100 for 1 - cos
    sd, imagenet = reg.get("preset", "sd-clip").settings, reg.get("preset", "imagenet-clip").settings
    assert (sd["num_steps"], sd["cfg_scale"], sd["forward_strength"], sd["recurrence"]) == (1000, 1.0, 500.0, 1)
    assert (imagenet["num_steps"], imagenet["forward_strength"], imagenet["recurrence"]) == (1000, 200.0, 10)
    assert imagenet.get("backward_steps", 0) == 0
    for base in ("sd-clip", "imagenet-clip"):
        assert_fast_derives(reg, base)
    with pytest.raises(UgdError, match="exactly one"):
        reg.build("guide", "clip", {})
