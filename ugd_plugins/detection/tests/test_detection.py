"""ugd-detection on random-weight Faster R-CNN MobileNetV3-FPN and YOLOv8n (real architectures), real photos, offline."""

from __future__ import annotations

import json
import re

import pytest
import torch

from ugd_core import SamplerConfig, UgdError, guide_loss, load_registry
from ugd_kit.testing import photos

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


@pytest.fixture(scope="module")
def frcnn(calibrate_bn):  # type: ignore[no-untyped-def]
    from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_fpn

    torch.manual_seed(0)
    net = fasterrcnn_mobilenet_v3_large_fpn(weights=None, weights_backbone=None, min_size=64, max_size=64)
    calibrate_bn(net.backbone, ((photos(64, ("astronaut", "coffee", "chelsea", "rocket")) + 1) / 2 - MEAN) / STD)
    return net


def target():  # type: ignore[no-untyped-def]
    from ugd_detection import coco_categories, parse_targets

    return parse_targets("0.1,0.2,0.6,0.9;0.5,0.1,0.95,0.5", "dog;person", coco_categories())


def test_faster_rcnn_training_loss_gradient_and_descent(frcnn, descend) -> None:  # type: ignore[no-untyped-def]
    from torchvision.ops.misc import FrozenBatchNorm2d

    from ugd_detection import FasterRCNNGuide

    guide = FasterRCNNGuide(frcnn, target())
    assert guide.target.labels.tolist() == [18, 1]  # torchvision COCO ids of dog, person
    assert frcnn.training and not any(p.requires_grad for p in frcnn.parameters())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in frcnn.modules())
    assert any(isinstance(m, FrozenBatchNorm2d) for m in frcnn.modules())
    loss = guide_loss(guide, photos(64))
    assert loss.shape == (2,) and torch.isfinite(loss).all()
    assert torch.equal(loss, guide_loss(guide, photos(64))), "seeded proposal sampling: same image, same loss"
    first, last = descend(guide, photos(64), steps=4, lr=0.002, per_sample=True)  # detector losses are piecewise smooth: small steps
    assert (last < first).all(), (first, last)
    official = FasterRCNNGuide(frcnn, target(), terms="official")
    assert (guide_loss(official, photos(64)) < loss).all()  # drops the ROI box term


def test_reference_without_confident_boxes_is_a_clear_error(frcnn) -> None:  # type: ignore[no-untyped-def]
    from ugd_detection import FasterRCNNGuide

    with pytest.raises(UgdError, match="finds nothing"):
        FasterRCNNGuide(frcnn, ref=photos(64, ("chelsea",)), ref_score=0.99)


def test_targets_parsing(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from ugd_detection import coco_categories, parse_targets, read_targets_file

    cats = coco_categories()
    t = parse_targets("10,20,200,300", "17", cats)
    assert not t.relative and t.absolute(512, 512, "cpu")[0].tolist() == [10, 20, 200, 300]
    assert t.absolute(512, 512, "cpu").shape == (1, 4)
    rel = parse_targets("0.1,0.1,0.5,0.5", "teddy_bear", cats)
    assert rel.absolute(100, 200, "cpu")[0].tolist() == pytest.approx([20, 10, 100, 50])
    (tmp_path / "t.json").write_text(json.dumps([{"box": [0.1, 0.1, 0.4, 0.4], "label": "cat"}, {"box": [0.5, 0.5, 0.9, 0.9], "label": 1}]))
    assert read_targets_file(tmp_path / "t.json", cats).labels.tolist() == [17, 1]
    with pytest.raises(UgdError, match="did you mean dog"):
        parse_targets("0.1,0.1,0.5,0.5", "dgo", cats)
    with pytest.raises(UgdError, match="2 boxes but 1 labels"):
        parse_targets("0.1,0.1,0.5,0.5;0.2,0.2,0.3,0.3", "dog", cats)
    with pytest.raises(UgdError, match="x0 < x1"):
        parse_targets("0.5,0.1,0.2,0.5", "dog", cats)


def test_loads_a_state_dict_and_reports_missing_weights(frcnn, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from ugd_detection import build_detection_guide, load_torchvision_detector

    torch.save(frcnn.state_dict(), tmp_path / "frcnn.pth")
    net = load_torchvision_detector("fasterrcnn_mobilenet_v3_large_fpn", str(tmp_path / "frcnn.pth"), min_size=64)
    assert net.transform.min_size == (64,)
    with pytest.raises(UgdError, match="does not fit fasterrcnn_resnet50_fpn"):
        load_torchvision_detector("fasterrcnn_resnet50_fpn", str(tmp_path / "frcnn.pth"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(UgdError, match=r"weights for 'torchvision fasterrcnn_resnet50_fpn_v2.*not found.*hub.*detection:weights="):
        build_detection_guide(boxes="0.1,0.1,0.5,0.5", labels="dog")
    with pytest.raises(UgdError, match="exactly|give boxes"):
        build_detection_guide()


def test_yolo_backend(tmp_path, monkeypatch, descend, calibrate_bn) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("ultralytics", reason="ultralytics is not installed (pip install ultralytics)")
    from ultralytics import YOLO

    from ugd_detection import YoloDetectionGuide, build_detection_guide, parse_targets
    from ugd_detection.guide import yolo_categories

    torch.manual_seed(0)
    net = YOLO("yolov8n.yaml").model  # the real architecture, random weights, built offline
    calibrate_bn(net, (photos(64, ("astronaut", "coffee", "chelsea", "rocket")) + 1) / 2)
    cats = yolo_categories(net)
    assert cats[16] == "dog"
    guide = YoloDetectionGuide(net, parse_targets("0.1,0.2,0.6,0.9;0.5,0.1,0.95,0.5", "dog;person", cats), size=64)
    assert guide.target.labels.tolist() == [16, 0]
    loss = guide_loss(guide, photos(64))
    assert loss.shape == (2,) and torch.isfinite(loss).all() and (loss > 0).all()
    first, last = descend(guide, photos(64), steps=4, lr=0.002, per_sample=True)  # detector losses are piecewise smooth: small steps
    assert (last < first).all(), (first, last)

    monkeypatch.chdir(tmp_path)
    with pytest.raises(UgdError, match=r"weights for 'yolov8n.pt' not found.*backend=yolo,weights="):
        build_detection_guide(boxes="0.1,0.1,0.5,0.5", labels="dog", backend="yolo")


def test_yolo_reads_pixel_boxes_in_the_image_it_is_given(calibrate_bn) -> None:  # type: ignore[no-untyped-def]
    """docs/guides/detection.md, `boxes`: pixels of the image the guide sees, for both backends. YOLO once read them
    as pixels of its resized network input (size x size), so a 128-px image's boxes landed elsewhere at size 64:
    pixel boxes now give the same loss as the same boxes written as fractions."""
    pytest.importorskip("ultralytics", reason="ultralytics is not installed (pip install ultralytics)")
    from ultralytics import YOLO

    from ugd_detection import YoloDetectionGuide, parse_targets
    from ugd_detection.guide import yolo_categories

    torch.manual_seed(0)
    net = YOLO("yolov8n.yaml").model
    calibrate_bn(net, (photos(64, ("astronaut", "coffee")) + 1) / 2)
    cats = yolo_categories(net)
    images = photos(128)
    fractions = YoloDetectionGuide(net, parse_targets("0.1,0.2,0.6,0.9;0.5,0.1,0.95,0.5", "dog;person", cats), size=64)
    pixels = YoloDetectionGuide(net, parse_targets("12.8,25.6,76.8,115.2;64,12.8,121.6,64", "dog;person", cats), size=64)
    assert not pixels.target.relative
    a, b = guide_loss(fractions, images), guide_loss(pixels, images)
    assert torch.isfinite(a).all()
    assert torch.allclose(a, b, rtol=1e-5, atol=1e-6), (a, b)


def test_registered_through_the_entry_point(assert_fast_derives) -> None:  # type: ignore[no-untyped-def]
    reg = load_registry()
    assert reg.plugins["detection"].version == "0.1.0" and not reg.plugins["detection"].error
    assert reg.get("guide", "detection").plugin == "detection"
    for name in ("sd-detection", "sd-detection-fast", "imagenet-detection", "imagenet-detection-fast"):
        preset = reg.get("preset", name)
        assert preset.plugin == "detection" and "Universal-Guided-Diffusion" in preset.source
        cited = re.search(r"\.(md|py):\d+", preset.source) or "not in the official code" in preset.source
        assert cited, "a preset cites the official file:line of its values or says they are not in the official code"
        SamplerConfig.from_dict(preset.settings)
    s = reg.get("preset", "sd-detection").settings  # README.md:82-83
    assert (s["num_steps"], s["cfg_scale"], s["forward_strength"], s["recurrence"]) == (250, 1.5, 100.0, 5)
    s = reg.get("preset", "imagenet-detection").settings  # Guided/Object_detection.py:66-76 defaults
    assert (s["num_steps"], s["forward_strength"], s["backward_steps"], s["backward_lr"], s["backward_optimizer"]) == (1000, 2.0, 1, 0.001, "adam")
    for base in ("sd-detection", "imagenet-detection"):
        assert_fast_derives(reg, base)


def test_coco_names_come_from_torchvision_metadata() -> None:
    from ugd_detection.guide import coco80, coco_categories

    names = coco80()
    assert len(coco_categories()) == 91 and len(names) == 80 and len(set(names)) == 80
    assert (names[0], names[16], names[79]) == ("person", "dog", "toothbrush")  # YOLO's COCO order
