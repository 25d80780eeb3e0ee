"""The digits guides, targets and networks do what docs/digits-guides.md, docs/backbones/digits.md and their
docstrings promise: the losses' reductions and formulas, the targets' box order and scale, masks' thresholds and
halves, the refusals of bad parameters, the registered defaults and choices, the weights loaders' checks.
Offline, with the shipped weights or random-weight networks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from ugd_core.errors import UgdError
from ugd_core.guidance import guide_loss
from ugd_core.params import resolve_params
from ugd_core.registry import load_registry
from ugd_digits import guides as G
from ugd_digits.data import CANVAS, foreground_mask, place, random_placement, to_model_space
from ugd_digits.models import BoxNet
from ugd_digits.noisy_classifier import ARCH, NoisyDigitClassifier, load_noisy_classifier
from ugd_digits.targets import REF_SEED, cached_digits, half_mask, parse_box, ref_canvas
from ugd_digits.train_guides import detection_loss, load_network, weights_path

torch.set_num_threads(1)


def _build(name: str, **given):
    reg = {r["name"]: r for r in G.REGISTRATIONS}[name]
    resolved = resolve_params(name, reg["params"], {k: str(v) for k, v in given.items()})
    return reg["factory"](**resolved, device="cpu")


def _png(path: Path, pixels: torch.Tensor) -> Path:
    from PIL import Image

    Image.fromarray(pixels.to(torch.uint8).numpy()).save(path)
    return path


# ----------------------------------------------------------------------------------------------- input


def test_three_channel_images_are_averaged_to_one():
    """3 channels are averaged (guides.preprocess docstring; docs/digits-guides.md, "Using the guides")."""
    g = _build("digit", label=4)
    x = ref_canvas(21)
    rgb = torch.cat([x, -torch.ones_like(x), torch.ones_like(x)], dim=1)  # channel mean == x / 3
    torch.testing.assert_close(guide_loss(g, rgb), guide_loss(g, x / 3))


def test_other_sizes_are_resized_bilinearly():
    """Other sizes are resized bilinearly to 32x32 (guides.preprocess docstring; docs/digits-guides.md)."""
    g = _build("digit", label=4)
    big = torch.rand(2, 1, 48, 48, generator=torch.Generator().manual_seed(0)) * 2 - 1
    small = F.interpolate(big, size=(CANVAS, CANVAS), mode="bilinear", align_corners=False)
    torch.testing.assert_close(guide_loss(g, big), guide_loss(g, small))


def test_heldout_canvases_refuse_an_empty_request():
    """heldout_canvases(n) takes n in 1..1000; 0 is a UgdError (targets.heldout_canvases)."""
    from ugd_digits.targets import heldout_canvases

    with pytest.raises(UgdError, match="out of range"):
        heldout_canvases(0)


def test_a_boolean_is_not_a_digit_label():
    """label is an int 0-9 (docs/digits-guides.md, `digit`): True is refused, not read as class 1."""
    with pytest.raises(UgdError, match="not a digit class"):
        G.digit_guide(True)


# ----------------------------------------------------------------------------------------------- losses


def test_hard_guide_is_half_argmax_miss_plus_half_one_minus_probability():
    """digit-hard loss = 0.5 (1 - [argmax = label]) + 0.5 (1 - p(label)) (docs/digits-guides.md, `digit-hard`)."""
    g = _build("digit-hard", label=3)
    x = torch.cat([ref_canvas(i) for i in range(12)])
    with torch.no_grad():
        logits = load_network("digit_classifier")(x)
    hit = (logits.argmax(1) == 3).float()
    assert 0 < hit.sum() < len(hit)  # both branches of the step are exercised
    expected = 0.5 * (1 - hit) + 0.5 * (1 - logits.softmax(1)[:, 3])
    torch.testing.assert_close(guide_loss(g, x), expected)


def test_mask_loss_is_the_mean_per_pixel_cross_entropy():
    """digit-mask: per-pixel 2-class CE, mean over the 32x32 pixels (docs/digits-guides.md, `digit-mask`)."""
    g = _build("digit-mask", ref=5)
    x = torch.cat([ref_canvas(i) for i in range(4)])
    with torch.no_grad():
        logits = load_network("digit_segmenter")(x)
    target = foreground_mask(ref_canvas(5)).long().expand(4, -1, -1)
    expected = torch.stack([F.cross_entropy(logits[i : i + 1], target[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(guide_loss(g, x), expected)


def test_identity_loss_is_one_minus_cosine():
    """digit-id: 1 - cosine of the digit_id embeddings of x and of the reference (docs/digits-guides.md)."""
    g = _build("digit-id", ref=8)
    net = load_network("digit_id")
    x = torch.cat([ref_canvas(i) for i in range(3)])
    with torch.no_grad():
        expected = 1 - F.cosine_similarity(net(x), net(ref_canvas(8)), dim=1)
    torch.testing.assert_close(guide_loss(g, x), expected, atol=1e-5, rtol=1e-5)


def test_gram_matrix_is_normalised_by_channels_and_pixels():
    """gram = F F^T / (C H W) (guides.gram docstring; docs/digits-guides.md, `digit-style`)."""
    fmap = torch.ones(1, 2, 3, 4)  # each entry of F F^T is H*W = 12; C*H*W = 24
    torch.testing.assert_close(G.gram(fmap), torch.full((1, 2, 2), 0.5))


def test_gram_distance_sums_relative_errors_over_layers():
    """Sum over layers of mean((G - G_t)^2) / mean(G_t^2) (guides.gram_distance; docs/digits-guides.md)."""
    t = [torch.rand(1, 4, 4, generator=torch.Generator().manual_seed(i)) + 0.1 for i in range(2)]
    doubled = [2 * ti for ti in t]  # relative error 1 per layer, whatever the scale: the sum over 2 layers is 2
    torch.testing.assert_close(G.gram_distance(doubled, t), torch.tensor([2.0]))
    torch.testing.assert_close(G.gram_distance([3 * t[0]], [t[0]]), torch.tensor([4.0]))


def test_style_blocks_are_counted_from_one():
    """layers are conv blocks 1..6 of the ConvNet (guides.convnet_block_outputs; docs/digits-guides.md)."""
    net = load_network("digit_classifier")
    x = ref_canvas(2)
    with torch.no_grad():
        out = G.convnet_block_outputs(net, x, [1, 3, 6])
        first = net.features[0](x)
    w = first.shape[1]
    assert [tuple(o.shape) for o in out] == [(1, w, 32, 32), (1, 2 * w, 16, 16), (1, 4 * w, 8, 8)]
    torch.testing.assert_close(out[0], first)


@pytest.mark.parametrize("layers", ["6", "1,6"])
def test_style_layer_six_is_accepted(layers):
    """layers may name any conv block 1..6 (docs/digits-guides.md, `digit-style`)."""
    assert _build("digit-style", ref=1, layers=layers).target


@pytest.mark.parametrize("layers", ["0", "0,1", "7"])
def test_style_layers_outside_one_to_six_are_refused(layers):
    """Conv blocks are numbered 1..6 (docs/digits-guides.md, `digit-style`): 0 and 7 are refused."""
    with pytest.raises(UgdError, match="layers"):
        _build("digit-style", ref=1, layers=layers)


# ----------------------------------------------------------------------------------------------- box


def test_box_target_is_x0_y0_x1_y1_over_32():
    """digit-box compares the detector's box with `box / 32`, order x0,y0,x1,y1 (docs/digits-guides.md)."""
    torch.testing.assert_close(parse_box("6,4,22,28"), torch.tensor([[6.0, 4.0, 22.0, 28.0]]))
    g = _build("digit-box", box="6,4,22,28")
    torch.testing.assert_close(g.target["box"], torch.tensor([[6.0, 4.0, 22.0, 28.0]]) / 32)
    x = torch.cat([ref_canvas(i) for i in range(3)])
    with torch.no_grad():
        box, logits = load_network("digit_detector")(x)
    expected = detection_loss(box, logits, torch.tensor([[6.0, 4.0, 22.0, 28.0]]).expand(3, 4) / 32, None)
    torch.testing.assert_close(guide_loss(g, x), expected)


def test_box_guide_adds_the_class_cross_entropy_when_a_label_is_given():
    """digit-box: L1 + GIoU, plus cross-entropy to `label` when given (docs/digits-guides.md, `digit-box`)."""
    x = torch.cat([ref_canvas(i) for i in range(3)])
    with torch.no_grad():
        _, logits = load_network("digit_detector")(x)
    ce = F.cross_entropy(logits, torch.tensor([7, 7, 7]), reduction="none")
    plain, labelled = _build("digit-box", box="6,4,22,28"), _build("digit-box", box="6,4,22,28", label=7)
    torch.testing.assert_close(guide_loss(labelled, x), guide_loss(plain, x) + ce)


@pytest.mark.parametrize("box", ["4,4,4,20", "4,9,20,9"])
def test_an_empty_box_is_refused(box):
    """box needs x1 > x0 and y1 > y0 (docs/digits-guides.md, `digit-box`): a zero-width box is refused."""
    with pytest.raises(UgdError, match="box"):
        _build("digit-box", box=box)


def test_detector_boxes_are_always_valid():
    """BoxNet's box is a sigmoid centre and size, always valid (x1 > x0, y1 > y0; models.BoxNet docstring)."""
    torch.manual_seed(0)
    net = BoxNet().eval()
    x = 4 * torch.randn(16, 1, 32, 32)
    with torch.no_grad():
        box, _ = net(x)
    assert (box[:, 2] > box[:, 0]).all() and (box[:, 3] > box[:, 1]).all()
    assert ((box[:, 2] - box[:, 0]) < 1).all() and ((box[:, 3] - box[:, 1]) < 1).all()  # a sigmoid size


# ----------------------------------------------------------------------------------------------- masks and inpaint


def test_mask_file_threshold_is_half_grey(tmp_path):
    """mask=PATH: bright pixels (> 50 % grey) are ink (targets.load_mask; docs/digits-guides.md, `digit-mask`)."""
    px = torch.zeros(CANVAS, CANVAS)
    px[:, :8] = 100  # 39 % grey: background
    px[:, 8:16] = 160  # 63 % grey: ink
    g = _build("digit-mask", mask=_png(tmp_path / "m.png", px))
    expected = torch.zeros(1, CANVAS, CANVAS, dtype=torch.bool)
    expected[:, :, 8:16] = True
    assert torch.equal(g.target, expected)


@pytest.mark.parametrize("region,rows,cols", [("left", slice(None), slice(0, 16)), ("right", slice(None), slice(16, 32)),
                                              ("top", slice(0, 16), slice(None)), ("bottom", slice(16, 32), slice(None))])
def test_half_masks_mark_the_named_half(region, rows, cols):
    """region= is the KNOWN half of the canvas (targets.half_mask; docs/digits-guides.md, `inpaint`)."""
    expected = torch.zeros(1, CANVAS, CANVAS, dtype=torch.bool)
    expected[:, rows, cols] = True
    assert torch.equal(half_mask(region), expected)


def test_inpaint_loss_is_the_mean_over_known_pixels_only():
    """inpaint: mean over known pixels of the squared error to the reference (docs/digits-guides.md, `inpaint`)."""
    g = _build("inpaint", ref=13, region="left")
    ref = ref_canvas(13)
    torch.testing.assert_close(guide_loss(g, ref + 0.5), torch.tensor([0.25]))
    other = ref.clone()
    other[..., 16:] = 1 - other[..., 16:]  # the unknown right half changed
    assert guide_loss(g, other).item() == 0.0


def test_inpaint_refuses_a_mask_without_known_pixels(tmp_path):
    """known pixels must be bright; a mask marking none is a UgdError, not a NaN loss (guides.inpaint_guide)."""
    with pytest.raises(UgdError, match="no known pixel"):
        _build("inpaint", ref=1, mask=_png(tmp_path / "dark.png", torch.zeros(CANVAS, CANVAS)))


def test_inpaint_refuses_both_region_and_mask(tmp_path):
    """exactly one of region or mask=PATH (docs/digits-guides.md, `inpaint`)."""
    with pytest.raises(UgdError, match="exactly one"):
        _build("inpaint", ref=1, region="left", mask=_png(tmp_path / "k.png", torch.full((CANVAS, CANVAS), 255)))


@pytest.mark.parametrize("name", ["digit-id", "digit-style", "inpaint"])
def test_reference_guides_refuse_both_ref_and_image(name, tmp_path):
    """exactly one of ref=INT or image=PATH (docs/digits-guides.md, `digit-id`, `digit-style`, `inpaint`)."""
    path = _png(tmp_path / "r.png", ((ref_canvas(2)[0, 0] + 1) * 127.5).round())
    extra = {"region": "left"} if name == "inpaint" else {}
    with pytest.raises(UgdError, match="exactly one"):
        _build(name, ref=2, image=path, **extra)


def test_ref_canvas_is_placed_with_the_documented_seed():
    """ref=INT: held-out digit INT at a placement seeded with targets.REF_SEED + INT (docs/digits-guides.md)."""
    d = cached_digits("heldout")
    for i in (0, 7):
        placement = random_placement(1, torch.Generator().manual_seed(REF_SEED + i))
        torch.testing.assert_close(ref_canvas(i), to_model_space(place(d.images[i : i + 1], placement)))


# ----------------------------------------------------------------------------------------------- weights


def _save(path: Path, state: dict, meta: dict | None = None) -> Path:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in state.items()}, str(path), metadata=meta)
    return path


def test_noisy_classifier_reads_its_architecture_from_the_metadata(tmp_path):
    """load_noisy_classifier builds the architecture the weights' metadata names (a narrower net loads), frozen."""
    kwargs = dict(ARCH, width=8)
    torch.manual_seed(0)
    net = NoisyDigitClassifier(**kwargs)
    path = _save(tmp_path / "n.safetensors", net.state_dict(),
                 {"arch": json.dumps({"class": "NoisyDigitClassifier", "kwargs": kwargs})})
    loaded = load_noisy_classifier(path)
    assert loaded.head.in_features == 4 * 8 and not loaded.training
    assert not any(p.requires_grad for p in loaded.parameters())  # frozen (docs/digits-guides.md, "Using the guides")


def test_shipped_noisy_classifier_reproduces_its_documented_accuracies():
    """The noise-aware classifier's held-out accuracy at t = 0 and t = 750 (fixed noise) is the one in its metadata
    and in docs/backbones/digits.md ("Classifier guidance": t=0 0.982, t=750 0.386), to 5 digits in 1,000."""
    from ugd_digits.models import backbone_scheduler
    from ugd_digits.noisy_classifier import WEIGHTS
    from ugd_digits.targets import HELDOUT_SEED, heldout_canvases
    from ugd_digits.train_guides import weights_metadata
    from ugd_digits.train_noisy_classifier import noised

    documented = json.loads(weights_metadata("noisy_classifier", WEIGHTS)["heldout"])
    assert (documented["accuracy_t0"], documented["accuracy_t750"]) == (0.982, 0.386)
    net, alpha_bar = load_noisy_classifier(), backbone_scheduler().alphas_cumprod.float()
    x, y = heldout_canvases(1000)
    for t_int in (0, 750):
        t = torch.full((len(y),), t_int, dtype=torch.long)
        z = noised(x, t, alpha_bar, torch.Generator().manual_seed(HELDOUT_SEED + t_int))
        with torch.no_grad():
            pred = torch.cat([net(z[i : i + 250], t[i : i + 250]).argmax(1) for i in range(0, len(y), 250)])
        assert abs(float((pred == y).float().mean()) - documented[f"accuracy_t{t_int}"]) <= 0.005


def test_a_weights_file_of_another_recipe_is_one_ugderror(tmp_path):
    """A weights file that does not hold the network's tensors is a one-line UgdError (train_guides.load_network)."""
    path = _save(tmp_path / "w.safetensors", {"a": torch.zeros(2)})
    with pytest.raises(UgdError, match="does not hold") as info:
        load_network("digit_classifier", path)
    assert "\n" not in str(info.value)


def test_the_robust_guide_loads_the_noise_trained_classifier():
    """digit-robust uses digit_classifier_robust, not digit_classifier (docs/digits-guides.md, `digit-robust`)."""
    g = _build("digit-robust", label=2)
    x = torch.cat([ref_canvas(i) for i in range(3)])
    with torch.no_grad():
        expected = F.cross_entropy(load_network("digit_classifier_robust")(x), torch.tensor([2, 2, 2]), reduction="none")
    torch.testing.assert_close(guide_loss(g, x), expected)


# ----------------------------------------------------------------------------------------------- registrations


def test_registered_defaults_and_choices_are_the_documented_ones():
    """digit-style layers default "1,2,3,4"; inpaint region in {left, right, top, bottom}; digit-box's box and the
    label guides' label are required (docs/digits-guides.md, "Using the guides")."""
    params = {r["name"]: {p.name: p for p in r["params"]} for r in G.REGISTRATIONS}
    assert params["digit-style"]["layers"].default == "1,2,3,4"
    assert set(params["inpaint"]["region"].choices) == {"left", "right", "top", "bottom"}
    assert params["digit-box"]["box"].required and not params["digit-box"]["label"].required
    for name in ("digit", "digit-robust", "digit-hard"):
        assert params[name]["label"].required


def test_classifier_guidance_preset_uses_scale_ten():
    """digits-classifier-guidance: strength s = 10 (docs/backbones/digits.md, "Classifier guidance", table row)."""
    assert load_registry().get("preset", "digits-classifier-guidance").settings["forward_strength"] == 10.0


# ---------------------------------------------------------------------- a bug the audit found, fixed


@pytest.mark.parametrize("other", ["digit_segmenter", "digit_id"])
def test_another_networks_weights_file_is_refused_when_the_guide_is_built(other):
    """weights=PATH holding another network is a bad input: one-line UgdError (docs/digits-guides.md, "Tests":
    "every bad input raises a one-line UgdError"; train_guides.load_network's "does not hold ... weights" message),
    not a guide that computes a 64-way cross-entropy or fails at loss time with a bare RuntimeError."""
    with pytest.raises(UgdError) as info:
        g = G.digit_guide(3, weights=str(weights_path(other)))
        g.loss_fn(g.f_fn(ref_canvas(1)), g.target)
    assert "\n" not in str(info.value)
