"""ugd-segmentation on random-weight torchvision DeepLabV3 / LR-ASPP and YOLOv8n-seg, real photos, offline."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("YOLO_OFFLINE", "1")

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from ugd_core import SamplerConfig, UgdError, guide_loss, load_registry
from ugd_core.testing import photos as _photos, save_png

torch.set_num_threads(1)


def photos(size: int = 48, names: tuple[str, ...] = ('astronaut', 'coffee')) -> torch.Tensor:
    return _photos(size, names)




def palette_map(path, size: int = 24, cls: int = 8) -> str:  # type: ignore[no-untyped-def]
    """A palette PNG: background with a central square of class ``cls`` (VOC 8 = cat)."""
    from ugd_segmentation import voc_colormap

    arr = np.zeros((size, size), dtype=np.uint8)
    arr[size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = cls
    im = Image.fromarray(arr, mode="P")
    im.putpalette([v for rgb in voc_colormap() for v in rgb])
    im.save(path)
    return str(path)


def calibrate_bn(model: torch.nn.Module, x: torch.Tensor) -> torch.nn.Module:
    """Estimate BatchNorm statistics of a random-weight net on real photos (else its output is nearly constant)."""
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = None
            m.reset_running_stats()
    model.train()
    with torch.no_grad():
        model(x)
    return model.eval()


def descend(guide, x: torch.Tensor, steps: int = 4, lr: float = 0.05):  # type: ignore[no-untyped-def]
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


@pytest.fixture(scope="module")
def deeplab():  # type: ignore[no-untyped-def]
    from torchvision.models.segmentation import deeplabv3_mobilenet_v3_large

    torch.manual_seed(0)
    net = deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=21, aux_loss=False)
    return calibrate_bn(net, photos(64, ("astronaut", "coffee", "chelsea", "rocket")))


def test_deeplab_loss_gradient_and_descent(deeplab, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from ugd_segmentation import SegmentationGuide

    guide = SegmentationGuide(deeplab, target=palette_map(tmp_path / "map.png"), size=64)
    assert guide.num_classes == 21 and guide.target.shape == (1, 24, 24)
    assert not deeplab.training and not any(p.requires_grad for p in deeplab.parameters())
    loss = guide_loss(guide, photos())
    assert loss.shape == (2,) and torch.isfinite(loss).all()
    first, last = descend(guide, photos())
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


def test_yolo_seg_backend(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
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
    first, last = descend(guide, photos())
    assert (last < first).all(), (first, last)
    ref = YoloSegGuide(net, ref=photos(48, ("chelsea",)), size=64, topk=20)
    assert ref.target.shape == (1, 16, 16)

    monkeypatch.chdir(tmp_path)
    with pytest.raises(UgdError, match=r"weights for 'yolov8n-seg.pt' not found.*backend=yolo,weights="):
        build_segmentation_guide(target=str(tmp_path / "map.png"), backend="yolo")


def test_inpaint_guide(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from ugd_segmentation import InpaintGuide, build_inpaint_guide

    ref = photos(32, ("rocket",))
    keep = torch.zeros(1, 1, 32, 32)
    keep[..., :, :16] = 1
    guide = InpaintGuide(ref, keep)
    assert guide_loss(guide, ref).abs().max() < 1e-7
    first, last = descend(guide, photos(32))
    assert (last < first).all()
    seg = lambda x: (torch.arange(32)[None, None, :] >= 16).long().expand(1, 32, 32)  # noqa: E731  right half = object
    built = build_inpaint_guide(save_png(ref, tmp_path / "r.png"), mask="background", segmenter=seg)
    assert torch.equal(built.target[1][..., :16], torch.ones(1, 1, 32, 16)) and built.target[1][..., 16:].sum() == 0


def test_registered_through_the_entry_point() -> None:
    reg = load_registry()
    assert reg.plugins["segmentation"].version == "0.1.0" and not reg.plugins["segmentation"].error
    assert reg.get("guide", "segmentation").plugin == "segmentation"
    assert reg.get("guide", "seg-inpaint").plugin == "segmentation"
    for name in ("sd-segmentation", "sd-segmentation-fast", "imagenet-inpaint", "imagenet-inpaint-fast"):
        preset = reg.get("preset", name)
        assert preset.plugin == "segmentation" and "Universal-Guided-Diffusion" in preset.source
        SamplerConfig.from_dict(preset.settings)
    s = reg.get("preset", "sd-segmentation").settings
    assert (s["num_steps"], s["cfg_scale"], s["forward_strength"], s["recurrence"]) == (500, 2.0, 400.0, 10)
