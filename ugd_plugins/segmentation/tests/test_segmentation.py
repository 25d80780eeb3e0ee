"""ugd-segmentation on random-weight torchvision DeepLabV3 / LR-ASPP and YOLOv8n-seg, real photos, offline."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from PIL import Image

from ugd_core import SamplerConfig, UgdError, guide_loss, load_registry
from ugd_kit.testing import photos, save_png


def palette_map(path, size: int = 24, cls: int = 8) -> str:  # type: ignore[no-untyped-def]
    """A palette PNG: background with a central square of class ``cls`` (VOC 8 = cat)."""
    from ugd_segmentation import voc_colormap

    arr = np.zeros((size, size), dtype=np.uint8)
    arr[size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = cls
    im = Image.fromarray(arr, mode="P")
    im.putpalette([v for rgb in voc_colormap() for v in rgb])
    im.save(path)
    return str(path)


@pytest.fixture(scope="module")
def deeplab(calibrate_bn):  # type: ignore[no-untyped-def]
    from torchvision.models.segmentation import deeplabv3_mobilenet_v3_large

    torch.manual_seed(0)
    net = deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=21, aux_loss=False)
    return calibrate_bn(net, photos(64, ("astronaut", "coffee", "chelsea", "rocket")))


def test_deeplab_loss_gradient_and_descent(deeplab, tmp_path, descend) -> None:  # type: ignore[no-untyped-def]
    from ugd_segmentation import SegmentationGuide

    guide = SegmentationGuide(deeplab, target=palette_map(tmp_path / "map.png"), size=64)
    assert guide.num_classes == 21 and guide.target.shape == (1, 24, 24)
    assert not deeplab.training and not any(p.requires_grad for p in deeplab.parameters())
    loss = guide_loss(guide, photos())
    assert loss.shape == (2,) and torch.isfinite(loss).all()
    first, last = descend(guide, photos(), steps=4)
    assert (last < first).all(), (first, last)


def test_reference_image_target_is_the_networks_argmax(deeplab, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from ugd_segmentation import SegmentationGuide
    from ugd_segmentation.guide import load_image

    path = save_png(photos(40, ("chelsea",)), tmp_path / "cat.png")
    guide = SegmentationGuide(deeplab, ref=path, size=64)
    assert guide.target.shape == (1, 64, 64)
    assert torch.equal(guide.target, guide.segment(load_image(path))), "ref= must be the network's argmax on the reference"
    with pytest.raises(UgdError, match="exactly one"):
        SegmentationGuide(deeplab, size=64)


def test_label_maps(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from ugd_segmentation import read_label_map, voc_colormap

    m = read_label_map(palette_map(tmp_path / "p.png"), 21)
    assert set(m.unique().tolist()) == {0, 8}
    rgb = np.zeros((8, 8, 3), dtype=np.uint8)
    rgb[2:6, 2:6] = voc_colormap()[12]  # VOC 12 = dog
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    assert set(read_label_map(tmp_path / "rgb.png", 21).unique().tolist()) == {0, 12}
    Image.fromarray(np.full((8, 8), 40, dtype=np.uint8)).save(tmp_path / "bad.png")
    with pytest.raises(UgdError, match="outside 0..20"):
        read_label_map(tmp_path / "bad.png", 21)
    rgb[0, 0] = (1, 2, 3)
    Image.fromarray(rgb).save(tmp_path / "odd.png")
    with pytest.raises(UgdError, match="VOC palette"):
        read_label_map(tmp_path / "odd.png", 21)


def test_loads_a_local_state_dict_and_reports_missing_weights(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from torchvision.models.segmentation import lraspp_mobilenet_v3_large

    from ugd_segmentation import build_segmentation_guide, load_torchvision_segmenter

    torch.save(lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=21).state_dict(), tmp_path / "lraspp.pth")
    model, cats = load_torchvision_segmenter("lraspp_mobilenet_v3_large", str(tmp_path / "lraspp.pth"))
    assert not model.training and len(cats) == 21 and cats[0] == "__background__"
    with pytest.raises(UgdError, match="not a deeplabv3_mobilenet_v3_large state dict"):
        load_torchvision_segmenter("deeplabv3_mobilenet_v3_large", str(tmp_path / "lraspp.pth"))

    target = palette_map(tmp_path / "map.png")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(UgdError, match=r"weights for 'torchvision deeplabv3_mobilenet_v3_large.*not found.*hub.*segmentation:weights="):
        build_segmentation_guide(target=target)
    with pytest.raises(UgdError, match="not found"):
        build_segmentation_guide(target=target, weights=str(tmp_path / "nope.pth"))
    (tmp_path / "junk.pth").write_text("not a checkpoint")
    with pytest.raises(UgdError, match="segmentation: .*junk.pth.* is not a readable state dict"):
        build_segmentation_guide(target=target, weights=str(tmp_path / "junk.pth"))


def test_yolo_seg_backend(tmp_path, monkeypatch, descend, calibrate_bn) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("ultralytics", reason="ultralytics is not installed (pip install ultralytics)")
    from ultralytics import YOLO

    from ugd_segmentation import YoloSegGuide, build_segmentation_guide

    torch.manual_seed(0)
    net = YOLO("yolov8n-seg.yaml").model  # the real architecture, random weights, built offline
    calibrate_bn(net, (photos(64, ("astronaut", "coffee", "chelsea", "rocket")) + 1) / 2)
    arr = np.zeros((16, 16), dtype=np.uint8)
    arr[4:12, 4:12] = 1 + 15  # COCO 15 = cat
    Image.fromarray(arr).save(tmp_path / "map.png")
    guide = YoloSegGuide(net, target=str(tmp_path / "map.png"), size=64, topk=20)
    assert guide.classes == [15] and not net.training
    loss = guide_loss(guide, photos())
    assert loss.shape == (2,) and torch.isfinite(loss).all()
    # small per-image steps: the loss of a random-weight YOLO (its top-k instances picked anew each call) is far from
    # smooth, and larger steps raised it on ultralytics 8.4's initialisation
    first, last = descend(guide, photos(), steps=4, lr=0.001, per_sample=True)
    assert (last < first).all(), (first, last)
    ref = YoloSegGuide(net, ref=photos(48, ("chelsea",)), size=64, topk=20)
    assert ref.target.shape == (1, 16, 16)

    monkeypatch.chdir(tmp_path)
    with pytest.raises(UgdError, match=r"weights for 'yolov8n-seg.pt' not found.*backend=yolo,weights="):
        build_segmentation_guide(target=str(tmp_path / "map.png"), backend="yolo")


def test_inpaint_guide(tmp_path, descend) -> None:  # type: ignore[no-untyped-def]
    from ugd_segmentation import InpaintGuide, build_inpaint_guide

    ref = photos(32, ("rocket",))
    keep = torch.zeros(1, 1, 32, 32)
    keep[..., :, :16] = 1
    guide = InpaintGuide(ref, keep)
    assert guide_loss(guide, ref).abs().max() < 1e-7
    first, last = descend(guide, photos(32), steps=4)
    assert (last < first).all()
    seg = lambda x: (torch.arange(32)[None, None, :] >= 16).long().expand(1, 32, 32)  # noqa: E731  right half = object
    built = build_inpaint_guide(save_png(ref, tmp_path / "r.png"), mask="background", segmenter=seg)
    assert torch.equal(built.target[1][..., :16], torch.ones(1, 1, 32, 16)) and built.target[1][..., 16:].sum() == 0


def test_registered_through_the_entry_point(assert_fast_derives) -> None:  # type: ignore[no-untyped-def]
    reg = load_registry()
    assert reg.plugins["segmentation"].version == "0.1.0" and not reg.plugins["segmentation"].error
    assert reg.get("guide", "segmentation").plugin == "segmentation"
    assert reg.get("guide", "seg-inpaint").plugin == "segmentation"
    for name in ("sd-segmentation", "sd-segmentation-fast", "imagenet-inpaint", "imagenet-inpaint-fast"):
        preset = reg.get("preset", name)
        assert preset.plugin == "segmentation" and "Universal-Guided-Diffusion" in preset.source
        cited = re.search(r"\.(md|py):\d+", preset.source) or "not in the official code" in preset.source
        assert cited, "a preset cites the official file:line of its values or says they are not in the official code"
        SamplerConfig.from_dict(preset.settings)
    s = reg.get("preset", "sd-segmentation").settings  # README.md:68
    assert (s["num_steps"], s["cfg_scale"], s["forward_strength"], s["recurrence"]) == (500, 2.0, 400.0, 10)
    s = reg.get("preset", "imagenet-inpaint").settings  # Segmentation_guided_inpainting.py:80-91 defaults
    assert (s["num_steps"], s["forward_strength"], s["backward_steps"], s["backward_lr"], s["backward_optimizer"]) == (1000, 2.0, 1, 0.01, "adam")
    for base in ("sd-segmentation", "imagenet-inpaint"):
        assert_fast_derives(reg, base)
