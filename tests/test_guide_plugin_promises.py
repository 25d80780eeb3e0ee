"""Documented promises of the guide plugins' losses and preprocessing (style, face, detection, segmentation, kit).

Each test checks a formula, constant or input rule stated in docs/guides/<guide>.md (or the plugin's
docstrings) on tiny random-weight networks or stand-in modules: offline, seconds on a CPU.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from ugd_core import UgdError, guide_loss
from ugd_kit.testing import photos, save_png

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


# ---------------------------------------------------------------------------- style


def _vgg_head() -> torch.nn.Sequential:
    from ugd_style.guide import vgg_features

    torch.manual_seed(0)
    return torch.nn.Sequential(*list(vgg_features("vgg16"))[:10])


def test_gram_matrix_is_normalised_by_channels_times_pixels() -> None:
    """docs/guides/style.md: ``G_l = F_l F_lᵀ / (C_l H_l W_l)``."""
    from ugd_style.guide import gram

    torch.manual_seed(0)
    feat = torch.randn(2, 5, 3, 4)
    f = feat.reshape(2, 5, 12)
    expected = torch.einsum("nci,ndi->ncd", f, f) / (5 * 3 * 4)
    assert torch.allclose(gram(feat), expected, atol=1e-6)


def test_style_input_is_unit_range_then_imagenet_normalised() -> None:
    """docs/guides/style.md: input [-1,1] -> [0,1], then ImageNet mean/std (0.485,0.456,0.406 / 0.229,0.224,0.225)."""
    from ugd_style import GramStyleGuide

    x = photos(32, ("astronaut", "coffee"))
    guide = GramStyleGuide(_vgg_head(), image=x[:1], layers="relu1_1", size=0)
    assert torch.allclose(guide.preprocess(x), ((x + 1) / 2 - IMAGENET_MEAN) / IMAGENET_STD, atol=1e-6)


def test_style_loss_is_sum_over_layers_of_mean_squared_gram_difference() -> None:
    """docs/guides/style.md: ``l = Σ_l mean((G_l(x) − G_l(style))²)`` per sample."""
    from ugd_style import GramStyleGuide

    guide = GramStyleGuide(_vgg_head(), image=photos(32, ("chelsea",)), layers="relu1_1;relu2_1", size=0)
    x = photos(32, ("astronaut", "coffee"))
    grams = guide.f(guide.preprocess(x))
    expected = sum(((g - t) ** 2).mean(dim=(1, 2)) for g, t in zip(grams, guide.target))
    assert torch.allclose(guide_loss(guide, x), expected, rtol=1e-5, atol=0)


def test_conv_layers_can_be_chosen_and_stay_differentiable() -> None:
    """docs/guides/style.md: layer names ``conv{b}_{i}``, ``relu{b}_{i}``, ``pool{b}`` are all valid choices and the
    loss is differentiable; torchvision's VGG uses in-place ReLUs, which must not overwrite a kept conv output."""
    from ugd_style import GramStyleGuide
    from ugd_style.guide import vgg_features

    torch.manual_seed(0)
    head = torch.nn.Sequential(*list(vgg_features("vgg16"))[:4])
    assert any(isinstance(m, torch.nn.ReLU) and m.inplace for m in head)
    guide = GramStyleGuide(head, image=photos(32, ("chelsea",)), layers="conv1_1;relu1_2", size=0)
    x = photos(32).requires_grad_(True)
    (g,) = torch.autograd.grad(guide_loss(guide, x).sum(), x)
    assert torch.isfinite(g).all() and g.abs().sum() > 0


# ---------------------------------------------------------------------------- face


def _tiny_embedder() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 5, stride=4), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten())


def test_face_l1_loss_is_the_mean_absolute_difference_of_unit_embeddings() -> None:
    """docs/guides/face.md: ``loss=l1`` = mean |e − e_ref| of unit embeddings (the official form)."""
    from ugd_face import FaceGuide

    guide = FaceGuide(_tiny_embedder(), image=photos(64, ("astronaut",)), loss="l1")
    e = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    t = torch.tensor([[0.0, 1.0, 0.0, 0.0]])
    assert torch.allclose(guide.loss(e, t), torch.tensor([0.5]))  # (1 + 1) / 4
    cos = FaceGuide(_tiny_embedder(), image=photos(64, ("astronaut",)))
    assert torch.allclose(cos.loss(e, t), torch.tensor([1.0]))  # 1 - cos of orthogonal unit vectors


def test_face_crop_box_is_x0_y0_x1_y1_fractions_of_width_and_height() -> None:
    """docs/guides/face.md: ``box`` = x0,y0,x1,y1 as fractions of width/height, cropped then resized to 112 x 112
    (bilinear, antialiased); checked on a non-square image with a non-square box."""
    from ugd_face import FaceGuide

    x = photos(80, ("astronaut", "coffee"))[..., :40, :]  # H = 40, W = 80
    box = (0.1, 0.2, 0.5, 0.9)
    guide = FaceGuide(_tiny_embedder(), image=x[:1], box=box)
    crop = x[..., 8:36, 8:40]  # rows 0.2*40..0.9*40, columns 0.1*80..0.5*80
    expected = F.interpolate(crop, size=(112, 112), mode="bilinear", align_corners=False, antialias=True)
    out = guide.preprocess(x)
    assert out.shape == (2, 3, 112, 112) and torch.allclose(out, expected, atol=1e-6)


def test_face_reference_is_cropped_with_ref_box() -> None:
    """docs/guides/face.md: ``ref_box`` is the crop of the reference (``0,0,1,1`` for an already aligned face)."""
    from ugd_face import FaceGuide
    from ugd_face.guide import crop_resize

    ref = photos(64, ("astronaut",))
    net = _tiny_embedder()
    guide = FaceGuide(net, image=ref, ref_box="0,0,1,1")
    with torch.no_grad():
        expected = F.normalize(net(crop_resize(ref, (0, 0, 1, 1))), dim=-1)
    assert torch.allclose(guide.target, expected, atol=1e-6)
    assert guide.box == (0.1875, 0.1875, 0.8125, 0.8125)


# ---------------------------------------------------------------------------- detection


@pytest.fixture(scope="module")
def frcnn() -> torch.nn.Module:
    from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_fpn

    torch.manual_seed(0)
    return fasterrcnn_mobilenet_v3_large_fpn(weights=None, weights_backbone=None, min_size=64, max_size=64)


def _targets():  # type: ignore[no-untyped-def]
    from ugd_detection import coco_categories, parse_targets

    return parse_targets("0.1,0.2,0.6,0.9;0.5,0.1,0.95,0.5", "dog;person", coco_categories())


def test_boxes_with_every_value_at_most_one_are_fractions() -> None:
    """docs/guides/detection.md: boxes are fractions of the image when every value ≤ 1 (1.0 included)."""
    from ugd_detection import coco_categories, parse_targets

    t = parse_targets("0.5,0.5,1.0,1.0", "dog", coco_categories())
    assert t.relative and t.absolute(100, 200, "cpu")[0].tolist() == pytest.approx([100, 50, 200, 100])


def test_a_box_with_a_negative_coordinate_is_refused() -> None:
    """ugd_detection.make_target: a box must be x0,y0,x1,y1 with x0 < x1, y0 < y1, all >= 0."""
    from ugd_detection import coco_categories, parse_targets

    with pytest.raises(UgdError, match="all >= 0"):
        parse_targets("-0.1,0.1,0.5,0.5", "dog", coco_categories())


def test_official_terms_are_objectness_rpn_box_and_classifier(frcnn) -> None:  # type: ignore[no-untyped-def]
    """docs/guides/detection.md: ``terms=official`` = loss_classifier + loss_objectness + loss_rpn_box_reg
    (the official ``cal_loss``), i.e. ``all`` without the ROI box term."""
    from ugd_detection import FasterRCNNGuide

    x = photos(64)
    full = FasterRCNNGuide(frcnn, _targets())
    parts = full.f(full.preprocess(x))  # columns in the order of TERMS["all"]
    official = FasterRCNNGuide(frcnn, _targets(), terms="official")
    from ugd_detection.guide import TERMS

    assert TERMS["all"][:3] == ("loss_objectness", "loss_rpn_box_reg", "loss_classifier")
    assert torch.allclose(guide_loss(official, x), parts[:, :3].sum(-1), rtol=1e-5)


def test_detection_loss_depends_on_its_seed_not_on_the_global_rng(frcnn) -> None:  # type: ignore[no-untyped-def]
    """docs/guides/detection.md: each call runs under a forked RNG seeded with ``seed``: one image, one loss,
    whatever the caller's random state."""
    from ugd_detection import FasterRCNNGuide

    from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_fpn

    torch.manual_seed(0)  # small sampling budgets so that proposal sampling really draws a subset
    net = fasterrcnn_mobilenet_v3_large_fpn(
        weights=None, weights_backbone=None, min_size=64, max_size=64, rpn_batch_size_per_image=8, box_batch_size_per_image=8
    )
    guide = FasterRCNNGuide(net, _targets())
    x = photos(64)
    torch.manual_seed(1)
    a = guide_loss(guide, x)
    torch.manual_seed(12345)
    b = guide_loss(guide, x)
    assert torch.equal(a, b)


def test_frozen_batchnorm_keeps_each_batchnorms_eps() -> None:
    """docs/guides/detection.md: every BatchNorm is replaced by FrozenBatchNorm2d with the same statistics
    (MobileNetV3 uses eps=0.001), so the frozen layer computes what the eval-mode BatchNorm did."""
    from ugd_detection.guide import freeze_batchnorm

    torch.manual_seed(0)
    bn = torch.nn.BatchNorm2d(4, eps=0.001)
    with torch.no_grad():
        bn.running_var.copy_(torch.tensor([1e-3, 2e-3, 0.5, 3.0]))
        bn.running_mean.normal_()
        bn.weight.normal_()
        bn.bias.normal_()
    net = torch.nn.Sequential(bn).eval()
    x = torch.randn(2, 4, 3, 3)
    with torch.no_grad():
        expected = net(x)
        got = freeze_batchnorm(net)(x)
    assert torch.allclose(got, expected, atol=1e-5)


class _FixedDetector(torch.nn.Module):
    """A stand-in torchvision detector: in eval mode it returns one box (pixels) with score 0.95, label 18."""

    def forward(self, images, targets=None):  # type: ignore[no-untyped-def]
        return [{"boxes": torch.tensor([[10.0, 20.0, 30.0, 40.0]]), "scores": torch.tensor([0.95]), "labels": torch.tensor([18])}]


def test_reference_boxes_become_fractions_of_width_and_height() -> None:
    """docs/guides/detection.md: ``ref`` = the detector's boxes with score ≥ ref_score are the target; boxes are
    (x0, y0, x1, y1), so x divides by the width and y by the height (non-square reference)."""
    from ugd_detection import FasterRCNNGuide

    ref = torch.zeros(1, 3, 50, 100)  # H = 50, W = 100
    guide = FasterRCNNGuide(_FixedDetector(), ref=ref, ref_score=0.9)
    assert guide.target.relative
    assert guide.target.boxes[0].tolist() == pytest.approx([0.1, 0.4, 0.3, 0.8])
    assert guide.target.labels.tolist() == [18]


# ---------------------------------------------------------------------------- segmentation


def _conv_segmenter(classes: int = 21) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Conv2d(3, classes, 1)


def test_segmentation_input_is_unit_range_then_imagenet_normalised() -> None:
    """docs/guides/segmentation.md: preprocess = [-1,1] -> [0,1], resize, ImageNet mean/std (as the official code)."""
    from ugd_segmentation import SegmentationGuide

    guide = SegmentationGuide(_conv_segmenter(), target=torch.zeros(1, 8, 8, dtype=torch.long), size=0)
    x = photos(16)
    assert torch.allclose(guide.preprocess(x), ((x + 1) / 2 - IMAGENET_MEAN) / IMAGENET_STD, atol=1e-6)


def test_target_map_is_resized_nearest_to_the_logits() -> None:
    """docs/guides/segmentation.md: the target map is resized (nearest) to the logits: no new class ids appear."""
    from ugd_segmentation import SegmentationGuide
    from ugd_segmentation.guide import _fit_map

    target = torch.zeros(1, 24, 24, dtype=torch.long)
    target[:, 6:18, 6:18] = 8
    fitted = _fit_map(target, torch.zeros(2, 21, 10, 10))
    assert fitted.shape == (2, 10, 10) and set(fitted.unique().tolist()) == {0, 8}
    guide = SegmentationGuide(_conv_segmenter(), target=target, size=0)
    logits = torch.zeros(1, 21, 10, 10)
    logits[:, 8] = 5.0
    expected = F.cross_entropy(logits, F.interpolate(target[:, None].float(), size=(10, 10), mode="nearest")[:, 0].long(), reduction="none")
    assert torch.allclose(guide.loss(logits, target), expected.mean(dim=(1, 2)))


def test_pixels_labelled_255_are_ignored() -> None:
    """docs/guides/segmentation.md: CE with background included and 255 ignored (``ignore_index=255``):
    a map with void pixels scores finitely and the logits at those pixels do not matter."""
    from ugd_segmentation import SegmentationGuide

    target = torch.zeros(1, 8, 8, dtype=torch.long)
    target[:, :, :4] = 255
    target[:, 2:6, 4:8] = 12
    guide = SegmentationGuide(_conv_segmenter(), target=target, size=0)
    torch.manual_seed(0)
    logits = torch.randn(1, 21, 8, 8)
    a = guide.loss(logits, guide.target)
    logits2 = logits.clone()
    logits2[..., :4] = torch.randn(1, 21, 8, 4) * 10
    b = guide.loss(logits2, guide.target)
    assert torch.isfinite(a).all() and torch.allclose(a, b)


def test_the_loss_is_the_official_cross_entropy_of_each_sample_with_void_pixels() -> None:
    """docs/guides/segmentation.md: exactly the official ``CrossEntropyLoss(ignore_index=255)``, averaged over the
    pixels it counts: with void pixels the mean is over the others (it once divided by every pixel, ignored ones too,
    shrinking the loss by the valid share: 1.83 against 3.66 here), per sample."""
    from ugd_segmentation import SegmentationGuide

    target = torch.zeros(2, 8, 8, dtype=torch.long)
    target[0, :, :4] = 255
    target[0, 2:6, 4:8] = 12
    target[1, :2] = 255
    guide = SegmentationGuide(_conv_segmenter(), target=target, size=0)
    torch.manual_seed(0)
    logits = torch.randn(2, 21, 8, 8)
    official = torch.stack([torch.nn.CrossEntropyLoss(ignore_index=255)(logits[i : i + 1], target[i : i + 1]) for i in range(2)])
    assert torch.allclose(guide.loss(logits, guide.target), official, atol=1e-6)


def test_voc_palette_colours() -> None:
    """docs/guides/segmentation.md: RGB maps are decoded through the PASCAL VOC colours
    (1 aeroplane = (128,0,0), 2 bicycle = (0,128,0), 8 cat = (64,0,0), 12 dog = (64,0,128), 15 person = (192,128,128))."""
    from ugd_segmentation import voc_colormap

    cmap = voc_colormap()
    assert (cmap[1], cmap[2], cmap[8], cmap[12], cmap[15]) == ((128, 0, 0), (0, 128, 0), (64, 0, 0), (64, 0, 128), (192, 128, 128))


def test_voc_void_colour_is_ignored(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """docs/guides/segmentation.md: 255 = ignore; the VOC void border colour (224,224,192) decodes to 255."""
    from ugd_segmentation import read_label_map, voc_colormap

    rgb = np.zeros((6, 6, 3), dtype=np.uint8)
    rgb[0, :] = (224, 224, 192)
    rgb[2:4, 2:4] = voc_colormap()[8]
    Image.fromarray(rgb).save(tmp_path / "void.png")
    m = read_label_map(tmp_path / "void.png", 21)
    assert set(m.unique().tolist()) == {0, 8, 255} and (m[0, 0] == 255).all()


def test_inpaint_loss_is_squared_error_over_three_times_known_pixels() -> None:
    """docs/guides/segmentation.md: seg-inpaint loss = squared error on the known pixels divided by
    3 × the known pixel count (the official masked MSE)."""
    from ugd_segmentation import InpaintGuide

    ref = torch.zeros(1, 3, 4, 4)
    keep = torch.zeros(1, 1, 4, 4)
    keep[..., :2, :] = 1  # 8 known pixels
    guide = InpaintGuide(ref, keep)
    x = torch.full((1, 3, 4, 4), 0.5)
    assert torch.allclose(guide_loss(guide, x), torch.tensor([0.25]))  # 24 * 0.25 / (3 * 8)


def test_inpaint_mask_file_white_is_known(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """docs/guides/segmentation.md: ``mask`` = a keep-mask image, white = known."""
    from ugd_segmentation.guide import load_mask

    arr = np.zeros((4, 6), dtype=np.uint8)
    arr[:, :3] = 255
    Image.fromarray(arr).save(tmp_path / "keep.png")
    m = load_mask(tmp_path / "keep.png")
    assert m.shape == (1, 1, 4, 6) and m[..., :3].min() == 1 and m[..., 3:].max() == 0


# ---------------------------------------------------------------------------- kit


def test_load_image_maps_0_255_to_minus1_plus1_in_rgb_order(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """ugd_kit.images.load_image: a [1, C, H, W] tensor in [-1, 1], channels in RGB order."""
    from ugd_kit.images import load_image

    arr = np.zeros((4, 6, 3), dtype=np.uint8)
    arr[..., 0] = 255  # pure red
    arr[0, 0] = (255, 255, 255)
    Image.fromarray(arr).save(tmp_path / "red.png")
    x = load_image(tmp_path / "red.png")
    assert x.shape == (1, 3, 4, 6)
    assert x[0, 0].eq(1.0).all() and x[0, 1:, 1:, 1:].eq(-1.0).all() and x[0, :, 0, 0].eq(1.0).all()


def test_load_image_size_is_height_then_width(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """ugd_kit.images.load_image: ``size`` = (height, width)."""
    from ugd_kit.images import load_image

    path = save_png(photos(32, ("astronaut",)), tmp_path / "a.png")
    assert load_image(path, size=(10, 20)).shape == (1, 3, 10, 20)


def test_load_mask_resizes_nearest_keeping_class_ids(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """ugd_kit.images.load_mask: a class-index PNG, nearest-neighbour resize (no new class ids)."""
    from ugd_kit.images import load_mask

    arr = np.zeros((16, 16), dtype=np.uint8)
    arr[4:12, 4:12] = 15
    Image.fromarray(arr).save(tmp_path / "m.png")
    m = load_mask(tmp_path / "m.png", size=(7, 9))
    assert m.shape == (7, 9) and set(m.unique().tolist()) == {0, 15}


# ---------------------------------------------------------------------------- defaults and messages


def test_style_factory_resizes_to_256_by_default(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """docs/guides/style.md: ``size`` defaults to 256 (both images resized to size × size before VGG)."""
    from ugd_style import build_style_guide

    torch.save({f"features.{k}": v for k, v in _vgg_head().state_dict().items()}, tmp_path / "vgg16_head.pth")
    style = save_png(photos(48, ("chelsea",)), tmp_path / "style.png")
    guide = build_style_guide(style, layers="relu1_1", weights=str(tmp_path / "vgg16_head.pth"))
    assert guide.size == 256


def test_segmentation_factory_uses_520_for_torchvision_by_default(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """docs/guides/segmentation.md: ``size`` 0 = 520 for the torchvision backend (as the official code)."""
    from torchvision.models.segmentation import lraspp_mobilenet_v3_large

    from ugd_segmentation import build_segmentation_guide

    torch.manual_seed(0)
    torch.save(lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=21).state_dict(), tmp_path / "lraspp.pth")
    arr = np.zeros((8, 8), dtype=np.uint8)
    arr[2:6, 2:6] = 8
    Image.fromarray(arr).save(tmp_path / "map.png")
    guide = build_segmentation_guide(target=str(tmp_path / "map.png"), arch="lraspp_mobilenet_v3_large", weights=str(tmp_path / "lraspp.pth"))
    assert guide.size == 520


def test_a_reference_without_confident_boxes_says_to_lower_ref_score() -> None:
    """docs/guides/detection.md: ``ref_score`` is the score threshold; when nothing passes it the fix is to lower it."""
    from ugd_detection import FasterRCNNGuide

    with pytest.raises(UgdError, match="finds nothing with score >= 0.99.*lower ref_score="):
        FasterRCNNGuide(_FixedDetector(), ref=torch.zeros(1, 3, 50, 100), ref_score=0.99)


def test_a_missing_image_names_the_path_to_check(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """ugd_kit.images.load_image: a missing path is a UgdError saying the file does not exist and to check the path."""
    from ugd_kit.images import load_image

    with pytest.raises(UgdError, match=r"style: image .*nope.png' does not exist; check the path"):
        load_image(tmp_path / "nope.png", "style")


def test_yolo_seg_background_pixels_count_in_the_loss(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """docs/guides/segmentation.md: YOLO labels are 0 = background, and the CE covers background pixels
    (p(background) = 1 − max over the foreground): an all-background map scores mean(−log p_bg)."""
    pytest.importorskip("ultralytics", reason="ultralytics is not installed")
    from ultralytics import YOLO

    from ugd_segmentation import YoloSegGuide

    torch.manual_seed(0)
    net = YOLO("yolov8n-seg.yaml").model
    guide = YoloSegGuide(net, target=torch.zeros(1, 16, 16, dtype=torch.long), size=64, topk=10)
    x = photos(64)
    with torch.no_grad():
        logp = guide.f(guide.preprocess(x))
        loss = guide_loss(guide, x)
    assert torch.allclose(loss, -logp[:, 0].mean(dim=(1, 2)), rtol=1e-5) and (loss > 0).all()


def test_yolo_detection_targets_reach_ultralytics_loss_as_normalised_xywh() -> None:
    """docs/guides/detection.md: the YOLO backend feeds ultralytics' own ``v8DetectionLoss``; that loss takes
    dataset-format targets (class, centre x, centre y, width, height as fractions of the image)."""
    pytest.importorskip("ultralytics", reason="ultralytics is not installed")
    from ultralytics import YOLO

    from ugd_detection import YoloDetectionGuide, parse_targets
    from ugd_detection.guide import yolo_categories

    torch.manual_seed(0)
    net = YOLO("yolov8n.yaml").model
    cats = yolo_categories(net)
    guide = YoloDetectionGuide(net, parse_targets("0.1,0.2,0.6,0.9", "dog", cats), size=64)
    x = photos(64)
    with torch.no_grad():
        got = guide.f(guide.preprocess(x))
        preds = net(guide.preprocess(x))
        preds = preds[1] if isinstance(preds, tuple) else preds
        batch = {"batch_idx": torch.zeros(1), "cls": torch.tensor([[16.0]]), "bboxes": torch.tensor([[0.35, 0.55, 0.5, 0.7]])}
        from ugd_detection.guide import _slice

        expected = torch.stack([guide.criterion(_slice(preds, i), batch)[0].reshape(-1) for i in range(2)])
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-6)
