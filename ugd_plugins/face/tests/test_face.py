"""ugd-face on a small random-weight IResNet (the real ArcFace architecture, fewer/narrower layers) and real photos."""

from __future__ import annotations

import re

import pytest
import torch

from ugd_core import SamplerConfig, UgdError, guide_loss, load_registry
from ugd_kit.testing import photos, save_png


def tiny_iresnet() -> torch.nn.Module:
    """IResNet with one block per stage and narrow widths; BatchNorm statistics estimated on real faces/photos."""
    from ugd_face import IResNet
    from ugd_face.guide import DEFAULT_BOX, crop_resize

    torch.manual_seed(0)
    net = IResNet((1, 1, 1, 1), num_features=32, widths=(8, 16, 32, 64))
    for m in net.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = None
    net.train()
    with torch.no_grad():
        net(crop_resize(photos(64, ("astronaut", "coffee", "chelsea", "rocket")), DEFAULT_BOX))
    return net.eval()


@pytest.mark.parametrize("kind", ["cosine", "l1"])
def test_loss_gradient_and_descent(kind: str, tmp_path, descend) -> None:  # type: ignore[no-untyped-def]
    from ugd_face import FaceGuide

    net = tiny_iresnet()
    guide = FaceGuide(net, image=save_png(photos(80, ("astronaut",)), tmp_path / "face.png"), loss=kind)
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    imgs = photos(64, ("coffee", "chelsea"))
    assert guide.preprocess(imgs).shape == (2, 3, 112, 112)
    loss = guide_loss(guide, imgs)
    assert loss.shape == (2,) and torch.isfinite(loss).all() and (loss > 0).all()
    first, last = descend(guide, imgs)
    assert (last < first).all(), (first, last)
    # the gradient only reaches pixels inside the crop box
    x = imgs.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(guide_loss(guide, x).sum(), x)
    assert g[..., :8, :].abs().sum() == 0 and g[..., 20:40, 20:40].abs().sum() > 0


def test_reference_scores_zero_and_rerank_puts_it_first() -> None:
    from ugd_face import FaceGuide, rerank

    ref = photos(64, ("astronaut",))
    guide = FaceGuide(tiny_iresnet(), image=ref)
    assert guide.score(ref).abs().max() < 1e-5
    pool = torch.cat([photos(64, ("coffee",)), ref, photos(64, ("rocket",))])
    idx, scores = rerank(guide, pool, k=2)
    assert idx[0].item() == 1 and scores.shape == (2,) and scores[0] <= scores[1]
    assert torch.equal(guide.rerank(pool, 5)[0], rerank(guide, pool, 3)[0])  # k is capped at the pool size


def test_loads_insightface_style_weights_and_reports_missing(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from ugd_face import build_face_guide

    net = tiny_iresnet()
    torch.save({"module." + k: v for k, v in net.state_dict().items()}, tmp_path / "backbone.pth")  # DataParallel-style keys
    ref = save_png(photos(64, ("astronaut",)), tmp_path / "ref.png")
    guide = build_face_guide(image=ref, arch="iresnet50", weights=str(tmp_path / "backbone.pth"), box="0.2,0.1,0.8,0.9")
    assert guide.box == (0.2, 0.1, 0.8, 0.9) and guide.ref_box == guide.box
    x = photos(64, ("coffee", "chelsea"))
    with torch.no_grad():
        assert torch.allclose(guide.model(guide.preprocess(x)), net(guide.preprocess(x)), atol=1e-5)

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(UgdError, match=r"weights for 'ArcFace iresnet100.*not found.*hub.*face:weights="):
        build_face_guide(image=ref)
    with pytest.raises(UgdError, match="not found"):
        build_face_guide(image=ref, weights=str(tmp_path / "none.pth"))
    with pytest.raises(UgdError, match="0 <= x0 < x1"):
        build_face_guide(image=ref, box="0.5,0.5,0.2,0.9")


def test_released_architectures_have_insightface_keys() -> None:
    from ugd_face import iresnet50, iresnet100

    with torch.device("meta"):
        r50, r100 = iresnet50(), iresnet100()
    keys = r100.state_dict()
    for k in ("conv1.weight", "prelu.weight", "layer2.12.bn3.running_var", "layer3.29.conv2.weight", "layer1.0.downsample.1.weight", "features.running_mean"):
        assert k in keys, k
    assert keys["fc.weight"].shape == (512, 512 * 7 * 7)
    assert sum(p.numel() for p in r50.parameters()) > 40e6


def test_registered_through_the_entry_point(assert_fast_derives) -> None:  # type: ignore[no-untyped-def]
    reg = load_registry()
    assert reg.plugins["face"].version == "0.1.0" and not reg.plugins["face"].error
    assert reg.get("guide", "face").plugin == "face"
    for name in ("sd-face", "sd-face-fast"):
        preset = reg.get("preset", name)
        assert preset.plugin == "face" and "Universal-Guided-Diffusion" in preset.source
        cited = re.search(r"\.(md|py):\d+", preset.source) or "not in the official code" in preset.source
        assert cited, "a preset cites the official file:line of its values or says they are not in the official code"
        SamplerConfig.from_dict(preset.settings)
    s = reg.get("preset", "sd-face").settings
    assert (s["num_steps"], s["forward_strength"], s["recurrence"]) == (500, 20000.0, 2)  # README.md
    assert_fast_derives(reg, "sd-face")
