"""ugd-style on random-weight VGG-16 features and real photos, offline; plus a two-guide run.

These tests import only ugd_core and ugd_style; another plugin is reached through the registry or replaced by a stand-in.
"""

from __future__ import annotations

import re

import pytest
import torch
from torchvision.transforms import InterpolationMode

from ugd_core import SamplerConfig, UgdError, guide_loss, load_registry
from ugd_kit.testing import photos, save_png


def vgg_head() -> torch.nn.Sequential:
    """The first two blocks of a random-weight torchvision VGG-16 ``features`` (all that relu1_1 + relu2_1 need)."""
    from ugd_style.guide import vgg_features

    torch.manual_seed(0)
    return torch.nn.Sequential(*list(vgg_features("vgg16"))[:10])


def test_gram_loss_gradient_and_descent(tmp_path, descend) -> None:  # type: ignore[no-untyped-def]
    from ugd_style import GramStyleGuide

    guide = GramStyleGuide(vgg_head(), image=save_png(photos(64, ("chelsea",)), tmp_path / "style.png"), layers="relu1_1;relu2_1", size=48)
    assert guide.index == [1, 6] and len(guide.features) == 7  # only the layers up to relu2_1 run
    assert not any(p.requires_grad for p in guide.features.parameters())
    loss = guide_loss(guide, photos())
    assert loss.shape == (2,) and torch.isfinite(loss).all() and (loss > 0).all()
    first, last = descend(guide, photos())
    assert (last < first).all(), (first, last)


def test_style_of_itself_is_zero_and_layer_names() -> None:
    from ugd_style import GramStyleGuide, layer_names
    from ugd_style.guide import vgg_features

    ref = photos(48, ("rocket",))
    guide = GramStyleGuide(vgg_head(), image=ref, layers=["relu1_2", "relu2_2"], size=0)
    assert guide_loss(guide, ref).abs().max() < 1e-12
    names = layer_names(vgg_features("vgg19"))
    assert names[:5] == ["conv1_1", "relu1_1", "conv1_2", "relu1_2", "pool1"] and "relu5_4" in names
    with pytest.raises(UgdError, match="unknown layer"):
        GramStyleGuide(vgg_head(), image=ref, layers="relu9_9")


def test_resize_is_torchvisions_antialiased_bilinear_resize() -> None:
    """docs/guides/style.md: both images are resized to size x size by a bilinear resize, antialiased as
    torchvision's `resize` does on tensors (the VGG pipelines' own transform), then ImageNet mean/std."""
    from torchvision.transforms.v2.functional import resize

    from ugd_style import GramStyleGuide
    from ugd_style.guide import IMAGENET_MEAN, IMAGENET_STD

    images = photos(96, ("chelsea", "rocket"))
    guide = GramStyleGuide(vgg_head(), image=images[:1], layers="relu1_1", size=40)
    want = resize((images + 1) / 2, [40, 40], interpolation=InterpolationMode.BILINEAR, antialias=True)
    want = (want - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    assert torch.allclose(guide.preprocess(images), want, atol=1e-5)


def test_loads_partial_vgg_weights_and_reports_missing(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from ugd_style import build_style_guide

    head = vgg_head()
    torch.save({f"features.{k}": v for k, v in head.state_dict().items()}, tmp_path / "vgg16_head.pth")
    style = save_png(photos(48, ("chelsea",)), tmp_path / "style.png")
    guide = build_style_guide(style, layers="relu1_1,relu2_1", weights=str(tmp_path / "vgg16_head.pth"), size=32)
    assert torch.equal(guide.features[0].weight, head[0].weight)
    with pytest.raises(UgdError, match="lacks vgg16 feature weights"):
        build_style_guide(style, layers="relu3_1", weights=str(tmp_path / "vgg16_head.pth"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(UgdError, match=r"weights for 'torchvision vgg16.*not found.*hub.*style:weights="):
        build_style_guide(style)
    with pytest.raises(UgdError, match="does not exist"):
        build_style_guide(str(tmp_path / "nope.png"))


def test_clip_variant(tmp_path, descend) -> None:  # type: ignore[no-untyped-def]
    """variant=clip builds the registered ``clip`` guide (another plugin, reached only through the registry)."""
    from ugd_core.registry import get_registry

    if "clip" not in get_registry().entries["guide"]:
        pytest.skip("variant=clip needs the clip guide of the ugd-clip plugin")
    from ugd_kit.testing import tiny_clip
    from ugd_style import build_style_guide

    model, tok = tiny_clip(text_layers=1, vision_layers=2)
    model.save_pretrained(tmp_path / "clip")
    tok.save_pretrained(tmp_path / "clip")
    guide = build_style_guide(save_png(photos(48, ("chelsea",)), tmp_path / "s.png"), variant="clip", model=str(tmp_path / "clip"))
    assert guide.name == "style"
    first, last = descend(guide, photos())
    assert first.shape == (2,) and (last < first).all()


def test_registered_through_the_entry_point(assert_fast_derives) -> None:  # type: ignore[no-untyped-def]
    reg = load_registry()
    assert reg.plugins["style"].version == "0.1.0" and not reg.plugins["style"].error
    assert reg.get("guide", "style").plugin == "style"
    for name in ("sd-style", "sd-style-fast"):
        preset = reg.get("preset", name)
        assert preset.plugin == "style" and "Universal-Guided-Diffusion" in preset.source
        cited = re.search(r"\.(md|py):\d+", preset.source) or "not in the official code" in preset.source
        assert cited, "a preset cites the official file:line of its values or says they are not in the official code"
        SamplerConfig.from_dict(preset.settings)
    s = reg.get("preset", "sd-style").settings
    assert (s["num_steps"], s["cfg_scale"], s["recurrence"]) == (500, 3.0, 6)  # README.md
    assert_fast_derives(reg, "sd-style")


def test_style_composes_with_another_guide_in_one_run() -> None:
    """Style + a second guide (a stand-in identity guide built with make_guide) in one universal-guidance run, 2 DDIM
    steps on the closed-form Gaussian backbone (the Stable Diffusion path is ugd-sd's to test)."""
    from ugd_core import make_guide, sample
    from ugd_core.testing import gaussian_backbone
    from ugd_style import GramStyleGuide

    torch.manual_seed(0)
    embed = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    with torch.no_grad():
        ref = torch.nn.functional.normalize(embed(photos(32, ("astronaut",))), dim=-1)
    identity = make_guide(
        "identity", lambda x: torch.nn.functional.normalize(embed(x), dim=-1), lambda e, t: 1 - (e * t).sum(-1), ref, modules=[embed]
    )
    style = GramStyleGuide(vgg_head(), image=photos(32, ("chelsea",)), layers="relu1_1,relu2_1", size=32)
    backbone = gaussian_backbone(0.0, 0.5, (3, 32, 32))
    cfg = SamplerConfig(num_steps=2, forward_strength=1.0, backward_steps=1, backward_lr=0.1, recurrence=2)
    guided = sample(backbone, [(style, 1.0), (identity, 0.5)], cfg, num_images=2, seed=0)
    plain = sample(backbone, None, cfg, num_images=2, seed=0)
    assert guided.images.shape == (2, 3, 32, 32) and torch.isfinite(guided.images).all()
    stats = guided.stats.to_dict()
    assert stats["guide_forward"] > 0 and stats["denoiser_backward"] > 0 and stats["nonfinite_skipped"] == 0
    assert not torch.allclose(guided.latents, plain.latents), "the guides must change the sample"
