"""Documented promises of the guides an artist runs on Stable Diffusion (CLIP, face, style, detection, segmentation),
of ugd-kit's weight and image helpers, and of the example brightness guide, not already held by
tests/test_guide_plugin_promises.py: the CLIP input pipeline and the sign and per-sample shape of each loss,
target parsing and its refusals, and where weight files are looked for.

Each test cites the docs (docs/guides/<guide>.md, README.md) or the docstring that states the promise. Tiny
random-weight networks (a CLIPModel from a small CLIPConfig, torchvision and ultralytics models built without
weights) and stand-in modules; offline, seconds on a CPU.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from ugd_core import UgdError, guide_loss
from ugd_kit.testing import calibrate_bn, photos, save_png, tiny_clip

ROOT = Path(__file__).resolve().parents[1]
CLIP_MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
CLIP_STD = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)


# ---------------------------------------------------------------------------- CLIP


def _unit(out) -> torch.Tensor:  # type: ignore[no-untyped-def]
    out = out if isinstance(out, torch.Tensor) else out.pooler_output  # transformers 5 returns a ModelOutput
    return F.normalize(out, dim=-1)


def test_clip_input_is_unit_range_then_the_clip_statistics() -> None:
    """docs/guides/clip.md, "Loss": preprocess maps [-1, 1] to [0, 1], then applies the mean/std (OpenAI CLIP's
    statistics by default): at the model's own size nothing else changes."""
    from ugd_clip import ClipGuide

    model, tok = tiny_clip()
    guide = ClipGuide(model, tok, prompt="a rocket")
    x = photos(32, ("astronaut", "coffee"))  # the tiny model's 32 px: no resize
    assert torch.allclose(guide.preprocess(x), ((x + 1) / 2 - CLIP_MEAN) / CLIP_STD, atol=1e-5)


def test_clip_resizes_the_shortest_side_bicubic_then_crops_the_centre() -> None:
    """docs/guides/clip.md, "Loss": the shortest side is resized to the input size (bicubic, antialiased), then the
    central crop is taken; on a 48 x 80 image: 32 x 53, columns 10..41."""
    from ugd_clip import ClipGuide

    model, tok = tiny_clip()
    guide = ClipGuide(model, tok, prompt="a rocket")
    x = photos(80, ("astronaut", "coffee"))[..., 16:64, :]  # H = 48, W = 80
    resized = F.interpolate((x + 1) / 2, size=(32, 53), mode="bicubic", align_corners=False, antialias=True)
    expected = (resized[..., :, 10:42] - CLIP_MEAN) / CLIP_STD
    out = guide.preprocess(x)
    assert out.shape == (2, 3, 32, 32) and torch.allclose(out, expected, atol=1e-5)


def test_clip_loss_is_one_minus_cosine_to_the_unit_mean_text_embedding() -> None:
    """docs/guides/clip.md, "Loss": ``l = 1 - cos(E_img(preprocess(x)), c)`` with ``c`` the unit text embedding; for
    several prompts (ClipGuide accepts a sequence) c is the unit direction of their mean embedding."""
    from ugd_clip import ClipGuide

    model, tok = tiny_clip()
    prompts = ["a rocket", "a cup of coffee"]
    guide = ClipGuide(model, tok, prompt=prompts)
    x = photos(32, ("astronaut", "chelsea"))
    with torch.no_grad():
        ids = tok(prompts, padding="max_length", max_length=16, truncation=True, return_tensors="pt")
        text = _unit(model.get_text_features(input_ids=ids["input_ids"], attention_mask=ids["attention_mask"]))
        img = model.get_image_features(pixel_values=((x + 1) / 2 - CLIP_MEAN) / CLIP_STD)
        img = img if isinstance(img, torch.Tensor) else img.pooler_output
        expected = 1 - F.cosine_similarity(img, text.mean(0, keepdim=True), dim=-1)
        assert torch.allclose(guide_loss(guide, x), expected, atol=1e-5)


def test_clip_loss_is_lowest_for_the_image_it_should_match() -> None:
    """docs/guides/clip.md, "Loss": ``1 - cos`` lies in [0, 2] and is 0 for the reference itself, so every other
    image scores higher (the loss must fall as the image matches its target)."""
    from ugd_clip import ClipGuide

    model, tok = tiny_clip()
    x = photos(32, ("rocket", "astronaut", "coffee", "chelsea"))
    guide = ClipGuide(model, tok, image=x[:1])
    loss = guide_loss(guide, x)
    assert ((loss >= -1e-6) & (loss <= 2)).all(), loss
    assert loss[0].abs() < 1e-5 and (loss[1:] > loss[0] + 1e-4).all(), loss


def test_clip_guide_takes_exactly_one_target() -> None:
    """ugd_clip.guide.ClipGuide: exactly one of ``prompt`` and ``image`` is given (docs/guides/clip.md: give prompt or
    image)."""
    from ugd_clip import ClipGuide

    model, tok = tiny_clip()
    with pytest.raises(UgdError, match="give exactly one target"):
        ClipGuide(model, tok, prompt="a rocket", image=photos(32, ("rocket",)))
    with pytest.raises(UgdError, match="give exactly one target"):
        ClipGuide(model, tok)


def test_clip_loss_is_per_sample() -> None:
    """docs/guides/clip.md, "Loss": one value per sample: each image's loss is what it scores alone."""
    from ugd_clip import ClipGuide

    model, tok = tiny_clip()
    guide = ClipGuide(model, tok, prompt="a cup of coffee")
    x = photos(32, ("astronaut", "coffee", "rocket"))
    batch = guide_loss(guide, x)
    alone = torch.cat([guide_loss(guide, x[i : i + 1]) for i in range(3)])
    assert batch.shape == (3,) and torch.allclose(batch, alone, atol=1e-6)
    assert (batch.max() - batch.min()) > 1e-4


# ---------------------------------------------------------------------------- face


def _tiny_embedder() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 5, stride=4), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten())


def test_face_refuses_an_empty_box_and_an_unknown_loss() -> None:
    """docs/guides/face.md, "Parameters": ``box`` is x0,y0,x1,y1 (ugd_face.guide.parse_box: 0 <= x0 < x1 <= 1,
    0 <= y0 < y1 <= 1), and ``loss`` is cosine or l1."""
    from ugd_face import FaceGuide
    from ugd_face.guide import parse_box

    with pytest.raises(UgdError, match="x0 < x1"):
        parse_box("0.5,0.1,0.5,0.9")
    with pytest.raises(UgdError, match="y0 < y1"):
        parse_box("0.1,0.4,0.5,0.4")
    with pytest.raises(UgdError, match="loss='l2' is not one of cosine, l1"):
        FaceGuide(_tiny_embedder(), image=photos(64, ("astronaut",)), loss="l2")
    for key in ("box", "ref_box"):  # given from Python as four numbers: checked as the text is (they were taken as given)
        with pytest.raises(UgdError, match=r"face: box \(0.5, 0.1, 0.2, 0.9\) must be x0,y0,x1,y1 with 0 <= x0 < x1 <= 1"):
            FaceGuide(_tiny_embedder(), image=photos(64, ("astronaut",)), **{key: (0.5, 0.1, 0.2, 0.9)})
    assert FaceGuide(_tiny_embedder(), image=photos(64, ("astronaut",)), box=(0.1, 0.2, 0.6, 0.8)).box == (0.1, 0.2, 0.6, 0.8)
    for bad in ((0.1, 0.1, 0.9, None), 5, [[0.1, 0.1], [0.9, 0.9]]):  # from Python: one line, not a TypeError
        with pytest.raises(UgdError, match="face: box .* is not four numbers"):
            parse_box(bad)


@pytest.mark.parametrize("kind", ["cosine", "l1"])
def test_face_loss_is_per_sample(kind: str) -> None:
    """docs/guides/face.md, "Verified here": the loss has shape [N]: each image's loss is what it scores alone."""
    from ugd_face import FaceGuide

    guide = FaceGuide(_tiny_embedder(), image=photos(64, ("astronaut",)), loss=kind)
    x = photos(64, ("astronaut", "coffee", "chelsea"))
    batch = guide_loss(guide, x)
    alone = torch.cat([guide_loss(guide, x[i : i + 1]) for i in range(3)])
    assert batch.shape == (3,) and torch.allclose(batch, alone, atol=1e-6)
    assert batch[0].abs() < 1e-5 and (batch[1:] > 1e-4).all()  # the reference itself scores 0, the others more


# ---------------------------------------------------------------------------- style


def test_style_relu_layer_is_the_gram_of_that_relus_output() -> None:
    """docs/guides/style.md, "Parameters": layer names ``conv{b}_{i}``, ``relu{b}_{i}``: ``relu1_2`` is the output of
    the second ReLU of block 1 (VGG-16 features[3]), not the conv before it."""
    from ugd_style import GramStyleGuide
    from ugd_style.guide import gram, vgg_features

    torch.manual_seed(0)
    head = torch.nn.Sequential(*list(vgg_features("vgg16"))[:5])
    guide = GramStyleGuide(head, image=photos(32, ("chelsea",)), layers="relu1_2", size=0)
    x = photos(32)
    with torch.no_grad():
        pre = guide.preprocess(x)
        relu12 = F.relu(head[2](F.relu(head[0](pre))))
        got = guide.f(pre)
    assert len(got) == 1 and torch.allclose(got[0], gram(relu12), atol=1e-6)


def test_style_per_sample_and_unknown_variant(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """docs/guides/style.md: the loss is per sample ([N]); ``variant`` is gram or clip, anything else is refused."""
    from ugd_style import GramStyleGuide, build_style_guide
    from ugd_style.guide import vgg_features

    torch.manual_seed(0)
    guide = GramStyleGuide(torch.nn.Sequential(*list(vgg_features("vgg16"))[:4]), image=photos(32, ("chelsea",)),
                           layers="relu1_1;relu1_2", size=0)
    x = photos(32, ("chelsea", "astronaut", "coffee"))
    batch = guide_loss(guide, x)
    alone = torch.cat([guide_loss(guide, x[i : i + 1]) for i in range(3)])
    assert torch.allclose(batch, alone, rtol=1e-5, atol=1e-9) and batch[0] < 1e-9 < batch[1:].min()
    with pytest.raises(UgdError, match="variant='vgg' is not one of gram, clip"):
        build_style_guide(save_png(photos(32, ("chelsea",)), tmp_path / "s.png"), variant="vgg")


# ---------------------------------------------------------------------------- detection


def test_detection_coco_names_resolve_to_torchvisions_indices() -> None:
    """docs/guides/detection.md, "Label indices": torchvision's 91-entry list, ``dog`` = 18, ``person`` = 1;
    names are case-insensitive with ``_`` = space; an index must lie inside the list."""
    from ugd_detection import coco_categories, parse_targets

    cats = coco_categories()
    t = parse_targets("0.1,0.1,0.5,0.5;0.2,0.2,0.6,0.6;0.3,0.3,0.9,0.9", "Dog;person;traffic_light", cats)
    assert t.labels.tolist() == [18, 1, 10]
    assert parse_targets("0.1,0.1,0.5,0.5", "90", cats).labels.tolist() == [90]
    with pytest.raises(UgdError, match="label index 91 is outside 0..90"):
        parse_targets("0.1,0.1,0.5,0.5", "91", cats)


def test_detection_refuses_inverted_boxes_and_a_label_count_mismatch() -> None:
    """ugd_detection.make_target: a box must be x0,y0,x1,y1 with x0 < x1, y0 < y1; one label per box."""
    from ugd_detection import coco_categories, parse_targets

    cats = coco_categories()
    with pytest.raises(UgdError, match="x0 < x1, y0 < y1"):
        parse_targets("0.6,0.1,0.4,0.9", "dog", cats)
    with pytest.raises(UgdError, match="x0 < x1, y0 < y1"):
        parse_targets("0.1,0.5,0.4,0.5", "dog", cats)
    with pytest.raises(UgdError, match="1 boxes but 2 labels; give one label per box"):
        parse_targets("0.1,0.1,0.4,0.9", "dog;cat", cats)


def test_detection_targets_file_in_both_documented_forms(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """docs/guides/detection.md, "Parameters": ``targets`` JSON is ``[{"box": [...], "label": "dog"}, ...]`` or
    ``{"boxes": [...], "labels": [...]}``."""
    import json

    from ugd_detection import coco_categories
    from ugd_detection.guide import read_targets_file

    cats = coco_categories()
    (tmp_path / "a.json").write_text(json.dumps([{"box": [0.1, 0.2, 0.5, 0.6], "label": "dog"}, {"box": [0.5, 0.1, 0.9, 0.4], "label": 1}]))
    (tmp_path / "b.json").write_text(json.dumps({"boxes": [[0.1, 0.2, 0.5, 0.6], [0.5, 0.1, 0.9, 0.4]], "labels": ["dog", "person"]}))
    for name in ("a.json", "b.json"):
        t = read_targets_file(tmp_path / name, cats)
        assert t.labels.tolist() == [18, 1] and t.boxes.tolist()[1] == pytest.approx([0.5, 0.1, 0.9, 0.4]), name


def test_detection_factory_takes_exactly_one_kind_of_target(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """docs/guides/detection.md, "Parameters": boxes+labels, targets=FILE.json or ref=IMAGE: one of them."""
    from ugd_detection import build_detection_guide

    ref = save_png(photos(32, ("chelsea",)), tmp_path / "ref.png")
    with pytest.raises(UgdError, match="or targets=FILE.json, or ref=IMAGE"):
        build_detection_guide(boxes="0.1,0.1,0.5,0.5", labels="dog", ref=ref)
    with pytest.raises(UgdError, match="ref= is supported with backend=torchvision only"):  # "Parameters", `ref`
        build_detection_guide(ref=ref, backend="yolo")


class _Detector(torch.nn.Module):
    """A stand-in torchvision detector: in eval mode, one box (pixels) with score 0.5, label 18."""

    def forward(self, images, targets=None):  # type: ignore[no-untyped-def]
        return [{"boxes": torch.tensor([[10.0, 20.0, 30.0, 40.0]]), "scores": torch.tensor([0.5]), "labels": torch.tensor([18])}]


def test_detection_reference_keeps_a_box_scoring_exactly_ref_score() -> None:
    """docs/guides/detection.md, "Parameters": ``ref`` = the detector's boxes with score ≥ ``ref_score``."""
    from ugd_detection import FasterRCNNGuide

    guide = FasterRCNNGuide(_Detector(), ref=torch.zeros(1, 3, 50, 100), ref_score=0.5)
    assert guide.target.labels.tolist() == [18]


def test_detectors_see_the_image_in_unit_range() -> None:
    """ugd_detection FasterRCNNGuide.preprocess / YoloDetectionGuide.preprocess: [-1, 1] -> [0, 1] (torchvision's
    detectors and ultralytics take [0, 1] images; the detector's transform normalises)."""
    from ugd_detection import FasterRCNNGuide, YoloDetectionGuide, coco_categories, parse_targets

    pytest.importorskip("ultralytics", reason="ultralytics is not installed")
    from ultralytics import YOLO

    x = photos(32)
    target = parse_targets("0.1,0.1,0.5,0.5", "dog", coco_categories())
    assert torch.allclose(FasterRCNNGuide(_Detector(), target).preprocess(x), (x + 1) / 2)
    torch.manual_seed(0)
    yolo = YoloDetectionGuide(YOLO("yolov8n.yaml").model, target, size=64)
    assert torch.allclose(yolo.preprocess(x), (x + 1) / 2)


class _Recorder(torch.nn.Module):
    """A stand-in torchvision detector in train mode: records the targets it is given; every loss term = mean pixel."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def forward(self, images, targets=None):  # type: ignore[no-untyped-def]
        self.seen.append(targets[0]["boxes"].clone())
        s = images[0].mean()
        return {k: s for k in ("loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg")}


def test_faster_rcnn_gets_fraction_boxes_in_pixels_of_a_non_square_image() -> None:
    """docs/guides/detection.md, "Parameters": boxes are x0,y0,x1,y1 fractions of the image the guide sees, so on a
    50 x 100 (H x W) image 0.1,0.2,0.5,0.6 is pixels 10,10,50,30; the loss is the sum of the terms, per sample."""
    from ugd_detection import FasterRCNNGuide, coco_categories, parse_targets

    rec = _Recorder()
    guide = FasterRCNNGuide(rec, parse_targets("0.1,0.2,0.5,0.6", "dog", coco_categories()))
    x = photos(100, ("astronaut", "coffee"))[..., 25:75, :]
    loss = guide_loss(guide, x)
    assert rec.seen[0].tolist() == [pytest.approx([10.0, 10.0, 50.0, 30.0])]
    assert torch.allclose(loss, 4 * ((x + 1) / 2).mean(dim=(1, 2, 3)), rtol=1e-5)


def test_yolo_pixel_boxes_on_a_non_square_image_equal_the_same_boxes_as_fractions() -> None:
    """docs/guides/detection.md, "Parameters": pixel boxes are pixels of the image the guide sees (x along the width,
    y along the height), before YOLO resizes it: on a 64 x 128 image they score as the same boxes as fractions."""
    pytest.importorskip("ultralytics", reason="ultralytics is not installed")
    from ultralytics import YOLO

    from ugd_detection import YoloDetectionGuide, parse_targets
    from ugd_detection.guide import yolo_categories

    torch.manual_seed(0)
    net = YOLO("yolov8n.yaml").model
    cats = yolo_categories(net)
    x = photos(128)[..., 32:96, :]  # H = 64, W = 128
    fractions = YoloDetectionGuide(net, parse_targets("0.1,0.2,0.6,0.9", "dog", cats), size=64)
    pixels = YoloDetectionGuide(net, parse_targets("12.8,12.8,76.8,57.6", "dog", cats), size=64)
    a, b = guide_loss(fractions, x), guide_loss(pixels, x)
    assert torch.isfinite(a).all() and torch.allclose(a, b, rtol=1e-5, atol=1e-6), (a, b)


def test_yolo_size_must_be_a_multiple_of_32() -> None:
    """docs/guides/detection.md, "Parameters": yolo ``size`` is a multiple of 32 (refused before the model is used)."""
    from ugd_detection import YoloDetectionGuide, coco_categories, parse_targets

    target = parse_targets("0.1,0.1,0.5,0.5", "dog", coco_categories())
    with pytest.raises(UgdError, match="size=100 must be a multiple of 32 for YOLO"):
        YoloDetectionGuide(None, target, size=100)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- segmentation


def test_segmentation_map_values_must_be_below_the_class_count(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """docs/guides/segmentation.md, "Parameters": the map's values are class ids (0..C-1) or 255 = ignore."""
    from ugd_segmentation.guide import read_label_map

    arr = np.zeros((4, 4), dtype=np.uint8)
    arr[0, 0] = 20
    Image.fromarray(arr).save(tmp_path / "ok.png")
    assert read_label_map(tmp_path / "ok.png", 21).max() == 20
    arr[0, 0] = 21
    Image.fromarray(arr).save(tmp_path / "bad.png")
    with pytest.raises(UgdError, match=r"class values \[21\] outside 0..20"):
        read_label_map(tmp_path / "bad.png", 21)


def test_a_missing_target_map_is_named_before_any_weights_load(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """ugd_segmentation.build_segmentation_guide: a target or ref path that does not exist is refused first (one line,
    naming it), not reported as missing network weights."""
    from ugd_segmentation import build_segmentation_guide

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(UgdError, match=r"'.*nope.png' does not exist; pass an existing file"):
        build_segmentation_guide(target=str(tmp_path / "nope.png"))


def test_inpaint_mask_is_resized_nearest_to_the_image() -> None:
    """docs/guides/segmentation.md, "seg-inpaint": squared error on the known pixels over 3 x their count; a mask of
    another size keeps its known pixels (no fractional weights at the border)."""
    from ugd_segmentation import InpaintGuide

    ref = photos(16, ("rocket",))
    keep = torch.zeros(1, 1, 8, 8)
    keep[..., :, :3] = 1  # left 3/8 known: columns 0..5 of the 16-px image
    guide = InpaintGuide(ref, keep)
    x = photos(16, ("coffee", "astronaut"))
    expected = ((x - ref)[..., :, :6] ** 2).sum(dim=(1, 2, 3)) / (3 * 16 * 6)
    assert torch.allclose(guide_loss(guide, x), expected, rtol=1e-5)


def test_yolo_seg_target_class_is_one_plus_its_coco_index() -> None:
    """docs/guides/segmentation.md: YOLO labels are 0 = background, ``1 + i`` for COCO class ``i`` (16 = cat): a map
    of 16 everywhere scores the mean -log p(cat) of each sample, per sample."""
    pytest.importorskip("ultralytics", reason="ultralytics is not installed")
    from ultralytics import YOLO

    from ugd_segmentation import YoloSegGuide

    torch.manual_seed(0)
    net = YOLO("yolov8n-seg.yaml").model
    calibrate_bn(net, (photos(64, ("astronaut", "coffee", "chelsea", "rocket")) + 1) / 2)
    guide = YoloSegGuide(net, target=torch.full((1, 16, 16), 16, dtype=torch.long), size=64, topk=10)
    assert guide.classes == [15]
    x = photos(64)
    with torch.no_grad():
        logp = guide.f(guide.preprocess(x))  # channels: background, cat, any other class
        loss = guide_loss(guide, x)
    assert logp.shape[1] == 3
    assert torch.allclose(loss, -logp[:, 1].mean(dim=(1, 2)), rtol=1e-5) and (loss > 0).all()
    assert (loss[0] - loss[1]).abs() > 1e-4 * loss.abs().max()  # two photos, two losses


class _OneClassYoloSeg(torch.nn.Module):
    """A stand-in YOLO-seg model (2 classes, 1 mask coefficient, 4 anchors): every anchor covers the whole image with a
    full mask and scores 0.9 for class 0 and 0 for class 1."""

    def __init__(self) -> None:
        super().__init__()
        head = torch.nn.Module()
        head.nc, head.nm = 2, 1
        self.model = torch.nn.ModuleList([head])

    def forward(self, x):  # type: ignore[no-untyped-def]
        n, (hh, ww) = x.shape[0], x.shape[-2:]
        y = torch.zeros(n, 4 + 2 + 1, 4)
        y[:, 0], y[:, 1], y[:, 2], y[:, 3] = ww / 2, hh / 2, 2 * ww, 2 * hh  # boxes (cx, cy, w, h) over everything
        y[:, 4] = 0.9  # class 0
        y[:, 6] = 30.0  # mask coefficient: sigmoid(30) = 1
        return (y, torch.ones(n, 1, hh // 4, ww // 4)), None


@pytest.mark.parametrize("label, p", [(1, 0.9), (0, 0.1)])
def test_yolo_seg_class_and_background_probabilities(label: int, p: float) -> None:
    """docs/guides/segmentation.md, "Loss": p(class c) = max_k score_k[c] m_k, p(background) = 1 - max over the
    foreground, renormalised over (background, the target's classes, any other class): with one anchor class
    scoring 0.9 under a full mask, a map of that class scores -log 0.9 and a background map -log 0.1."""
    from ugd_segmentation import YoloSegGuide

    guide = YoloSegGuide(_OneClassYoloSeg(), target=torch.full((1, 8, 8), label, dtype=torch.long), size=32)
    loss = guide_loss(guide, torch.zeros(2, 3, 32, 32))
    assert torch.allclose(loss, torch.full((2,), -np.log(p)), rtol=1e-4), loss


# ---------------------------------------------------------------------------- ugd-kit weights


def test_load_image_resizes_bicubic(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """ugd_kit.images.load_image: ``size`` = (height, width) resizes with bicubic filtering."""
    from ugd_kit.images import load_image

    rng = np.random.default_rng(0)
    im = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8))
    im.save(tmp_path / "noise.png")
    expected = np.asarray(im.resize((7, 5), Image.BICUBIC), dtype=np.float32) / 127.5 - 1
    got = load_image(tmp_path / "noise.png", size=(5, 7))
    assert got.shape == (1, 3, 5, 7) and torch.allclose(got[0].permute(1, 2, 0), torch.from_numpy(expected), atol=1e-6)


def test_find_weights_looks_for_the_file_name_in_the_search_folders(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """ugd_kit.weights.find_weights: ``given`` is a path, else its file name in each ``search`` folder (how a bare
    ``weights=yolov8n.pt`` is found in ultralytics' weights folder)."""
    from ugd_kit.weights import find_weights

    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "net.pt").write_bytes(b"x")
    assert find_weights("net", "--guide x:weights=PATH", "net.pt", search=[tmp_path / "w"]) == tmp_path / "w" / "net.pt"


def test_a_missing_weights_file_is_one_line_naming_every_place(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """README.md / ugd_kit.weights.find_weights: a missing file is one line naming what, every place looked in, and
    the option to pass."""
    from ugd_kit.weights import find_weights

    with pytest.raises(UgdError) as err:
        find_weights("net", "--guide x:weights=PATH", "net.pt", search=[tmp_path / "a", tmp_path / "b"])
    msg = str(err.value)
    assert "\n" not in msg and "--guide x:weights=PATH" in msg
    assert str(tmp_path / "a" / "net.pt") in msg and str(tmp_path / "b" / "net.pt") in msg


def test_hub_checkpoint_is_torch_hubs_checkpoints_folder() -> None:
    """ugd_kit.weights.hub_checkpoint: ``<torch hub dir>/checkpoints/<file>`` (where torchvision caches weights)."""
    from ugd_kit.weights import hub_checkpoint

    url = "https://download.pytorch.org/models/vgg16-397923af.pth"
    assert hub_checkpoint(url) == Path(torch.hub.get_dir()) / "checkpoints" / "vgg16-397923af.pth"


class _Pickled:
    """Not a tensor: a weights-only load refuses it."""


def test_read_state_dict_loads_weights_only(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """ugd_kit.weights.read_state_dict: ``torch.load(path, weights_only=True)``; a file holding other pickled
    objects is a UgdError naming the owner and the path (no arbitrary code runs)."""
    from ugd_kit.weights import read_state_dict

    torch.save({"w": torch.ones(1), "obj": _Pickled()}, tmp_path / "odd.pth")
    with pytest.raises(UgdError, match=r"style: .*odd.pth.* is not a readable state dict"):
        read_state_dict(tmp_path / "odd.pth", "style")


def test_a_yaml_or_yml_ultralytics_model_is_used_as_it_is() -> None:
    """ugd_kit.weights.ultralytics_weights: a ``.yaml`` (or ``.yml``) is returned as it is (random weights)."""
    from ugd_kit.weights import ultralytics_weights

    assert ultralytics_weights("yolov8n.yaml", "opt") == "yolov8n.yaml"
    assert ultralytics_weights("my-model.yml", "opt") == "my-model.yml"


# ---------------------------------------------------------------------------- the example brightness guide


def _brightness():  # type: ignore[no-untyped-def]
    path = ROOT / "docs" / "example-plugin" / "ugd_example_brightness" / "plugin.py"
    spec = importlib.util.spec_from_file_location("_ugd_example_brightness_plugin", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.brightness_guide


def test_brightness_loss_is_the_squared_distance_to_the_level() -> None:
    """docs/example-plugin (brightness_guide): loss = (mean pixel value - level)^2 per image, level in [-1, 1]."""
    guide = _brightness()(level=-0.5)
    x = torch.stack([torch.full((3, 4, 4), -0.5), torch.full((3, 4, 4), 0.5)])
    assert torch.allclose(guide_loss(guide, x), torch.tensor([0.0, 1.0]))
    _brightness()(level=-1.0)  # the whole documented range is accepted
    with pytest.raises(UgdError, match=r"level=1.5 is outside \[-1, 1\]"):
        _brightness()(level=1.5)


# ------------------------------------------------------------------ a bug the audit found, fixed


def test_yolo_seg_loss_averages_over_the_pixels_that_are_not_ignored() -> None:
    """docs/guides/segmentation.md, "Loss": the CE ignores 255 and is averaged over the pixels that are not 255
    (exactly the official CrossEntropyLoss(ignore_index=255)), and for YOLO-seg "the same CE applies"; a map
    whose right half is void must score the mean -log p(background) of its left half, not half of it (the void pixels
    stayed in the divisor before the fix)."""
    pytest.importorskip("ultralytics", reason="ultralytics is not installed")
    from ultralytics import YOLO

    from ugd_segmentation import YoloSegGuide

    torch.manual_seed(0)
    net = YOLO("yolov8n-seg.yaml").model
    target = torch.zeros(1, 16, 16, dtype=torch.long)
    target[..., 8:] = 255
    guide = YoloSegGuide(net, target=target, size=64, topk=10)
    x = photos(64)
    with torch.no_grad():
        logp = guide.f(guide.preprocess(x))
        loss = guide_loss(guide, x)
    expected = -logp[:, 0, :, :8].mean(dim=(1, 2))
    assert torch.allclose(loss, expected, rtol=1e-5), (loss, expected)


@pytest.mark.parametrize("spec, owner", [("face:image={p}", "face"), ("style:image={p}", "style"), ("detection:ref={p}", "detection")])
def test_a_missing_reference_image_is_one_line_naming_its_guide_before_any_weights_load(tmp_path, spec, owner) -> None:
    """README: bad input is one line naming the problem; with several guides the line says whose image is missing
    (face, style and detection checked the path before loading weights but did not name themselves; clip did)."""
    from cli.run import build_guide
    from ugd_core.registry import get_registry

    missing = tmp_path / "nope.png"
    with pytest.raises(UgdError, match=rf"^{owner}: image .*nope.png' does not exist; check the path") as err:
        build_guide(spec.format(p=missing), get_registry(), "cpu")
    assert "\n" not in str(err.value)


def test_torchvisions_placeholder_names_are_no_class_to_detect() -> None:
    """ugd_detection.label_index: "a COCO class name or index"; torchvision's category list holds "N/A" for COCO's unused
    ids and "__background__" for index 0: neither names a class (N/A was taken as the first unused slot)."""
    from ugd_detection import coco_categories
    from ugd_detection.guide import label_index

    cats = coco_categories()
    assert "N/A" in cats and label_index("dog", cats) == cats.index("dog")
    for name in ("N/A", "n/a", "__background__"):
        with pytest.raises(UgdError, match=f"detection: unknown label {name!r}.*use a COCO class name or index"):
            label_index(name, cats)
    assert label_index(str(cats.index("dog")), cats) == cats.index("dog")
    for idx in (0, cats.index("N/A")):  # the same slots by index: background and COCO's first unused id
        with pytest.raises(UgdError, match=f"detection: label index {idx} is the detector's '{cats[idx]}' slot, no class; "
                                           "use a COCO class name or index$"):
            label_index(str(idx), cats)
