"""The adm backbone and classifier guide on random weights of guided-diffusion's real classes.

Tiny configs keep every flag of each release family (learned sigma, resblock_updown,
scale-shift norm, head layout, attention order, class conditioning, schedule) and
shrink only the width and image size, so a CPU runs them in seconds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from ugd_adm.backbone import AdmBackbone, adm_scheduler, build_unet
from ugd_adm.classifier import build_classifier, make_classifier_guide
from ugd_adm.configs import BY_FILE, RELEASES, URL, Resolved, model_kwargs
from ugd_adm.plugin import PRESETS
from ugd_core import SamplerConfig, make_guide, sample
from ugd_core.errors import UgdError
from ugd_core.registry import load_registry

SIZE = 16


def tiny_flags(release: str, **extra: Any) -> dict[str, Any]:
    """A release's README flags at 16x16 with 32 base channels (head width 16 where the release fixes it)."""
    flags = dict(RELEASES[release].flags, image_size=SIZE, num_channels=32, channel_mult="1,2,2", **extra)
    if flags.get("num_head_channels", -1) != -1:
        flags["num_head_channels"] = 16
    return flags


FAMILIES = {
    "256-uncond": tiny_flags("256-uncond"),  # learned sigma, unconditional, linear schedule
    "256": tiny_flags("256"),  # class-conditional
    "128": tiny_flags("128"),  # num_heads=4 instead of a head width
    "64": tiny_flags("64"),  # cosine schedule, 3 res blocks, new attention order, dropout
    "lsun": tiny_flags("lsun"),  # unconditional with dropout 0.1
}


def tiny_backbone(release: str, seed: int = 0) -> AdmBackbone:
    """A release's architecture at 16x16, every weight random: guided-diffusion zero-initialises its output
    convolutions, so a freshly built network returns zeros (and zero gradients) whatever its input."""
    torch.manual_seed(seed)
    net, diffusion = build_unet(Resolved(f"tiny-{release}", "model", FAMILIES[release]))
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0.0, 0.05)
    return AdmBackbone(net, adm_scheduler(**diffusion), name=f"tiny {release}")


def mse_guide(target: torch.Tensor) -> Any:
    return make_guide("mse", lambda x: x, lambda x, c: (x - c).pow(2).flatten(1).mean(1), target)


def test_release_flags_follow_the_readme() -> None:
    # guided-diffusion README, "Classifier guidance" / "LSUN models" MODEL_FLAGS lines
    kw, diff = model_kwargs(RELEASES["256-uncond"].flags)
    assert kw == dict(kw, image_size=256, num_channels=256, num_res_blocks=2, learn_sigma=True, class_cond=False,
                      attention_resolutions="32,16,8", num_head_channels=64, resblock_updown=True, use_fp16=True,
                      use_scale_shift_norm=True, channel_mult="", dropout=0.0, use_new_attention_order=False)
    assert diff == dict(steps=1000, schedule="linear")
    kw64, diff64 = model_kwargs(RELEASES["64"].flags)
    assert (kw64["num_channels"], kw64["num_res_blocks"], kw64["use_new_attention_order"], diff64["schedule"]) == (192, 3, True, "cosine")
    kw128, _ = model_kwargs(RELEASES["128"].flags)
    assert (kw128["num_heads"], kw128["num_head_channels"]) == (4, -1)
    assert model_kwargs(RELEASES["512"].flags)[0]["use_fp16"] is False
    assert RELEASES["lsun"].flags["dropout"] == 0.1 and RELEASES["lsun-nodropout"].flags["dropout"] == 0.0
    assert RELEASES["64-classifier"].flags["classifier_depth"] == 4
    assert BY_FILE["256x256_diffusion_uncond.pt"] == "256-uncond" and BY_FILE["lsun_cat.pt"] == "lsun"


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_scheduler_is_the_checkpoints_schedule(schedule: str) -> None:
    import numpy as np
    from guided_diffusion.gaussian_diffusion import get_named_beta_schedule

    ref = np.cumprod(1 - get_named_beta_schedule(schedule, 1000))
    ours = adm_scheduler(1000, schedule).alphas_cumprod.double().numpy()
    assert np.abs(ours - ref).max() < 1e-6


@pytest.mark.parametrize("release", list(FAMILIES))
def test_tiny_release_family_samples_with_guidance(release: str) -> None:
    bb = tiny_backbone(release)
    assert bb.unet.out_channels == 6 and bb.sample_shape == (3, SIZE, SIZE)
    z = torch.randn(2, 3, SIZE, SIZE)
    t = torch.tensor([999, 10])
    unconditional = release in ("256-uncond", "lsun")
    if unconditional:  # a class index would be ignored: refused in one line
        with pytest.raises(UgdError, match="is unconditional: it takes no prompt"):
            bb.condition(5, None, 2, 1.0)
    cond = bb.condition(None if unconditional else 5, None, 2, 1.0)
    assert (cond is None) == unconditional
    with torch.no_grad():
        raw = bb.unet(z, t, y=cond)
        eps = bb.eps(z, t, cond)
    assert raw[:, :3].abs().max() > 1e-3 and not torch.allclose(raw[:, :3], raw[:, 3:])  # halves that differ
    torch.testing.assert_close(eps, raw[:, :3])  # learned variance split off by to_epsilon

    guide = mse_guide(torch.full((1, 3, SIZE, SIZE), 0.5))
    cfg = SamplerConfig(num_steps=2, forward_strength=1.0, backward_steps=1, backward_lr=0.1, recurrence=2)
    prompt = None if cond is None else 5
    guided = sample(bb, guide, cfg, num_images=2, seed=0, prompt=prompt)
    plain = sample(bb, None, cfg, num_images=2, seed=0, prompt=prompt)
    assert guided.images.shape == (2, 3, SIZE, SIZE) and torch.isfinite(guided.images).all()
    assert guided.stats.denoiser_forward == 4 and guided.stats.denoiser_backward == 4  # 2 steps x recurrence 2
    assert guided.stats.guidance.guide_backward > 0
    assert not torch.allclose(guided.latents, plain.latents)


def test_gradient_checkpointing_gives_the_same_gradient() -> None:
    bb = tiny_backbone("256-uncond")
    z = torch.randn(1, 3, SIZE, SIZE, requires_grad=True)
    t = torch.tensor([500])
    grads = []
    for on in (False, True):
        bb.configure(SamplerConfig(grad_checkpointing=on))
        (g,) = torch.autograd.grad(bb.eps(z, t, None).square().sum(), z)
        grads.append(g)
    assert grads[0].abs().max() > 1e-3  # a gradient to compare
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-6)


def test_fp16_configure_casts_the_convolutions_only() -> None:
    bb = tiny_backbone("256-uncond")
    bb.configure(SamplerConfig(dtype="bf16"))
    assert bb.unet.dtype == torch.bfloat16 and bb.unet.input_blocks[0][0].weight.dtype == torch.bfloat16
    assert bb.unet.time_embed[0].weight.dtype == torch.float32
    z = torch.randn(1, 3, SIZE, SIZE)
    with torch.no_grad():
        assert bb.eps(z, torch.tensor([500]), None).dtype == torch.float32
    bb.configure(SamplerConfig(dtype="auto"))  # CPU: the release's fp16 flag does not apply
    assert bb.unet.input_blocks[0][0].weight.dtype == torch.float32


def _save_tiny(tmp_path: Path, release: str) -> tuple[AdmBackbone, Path, Path]:
    bb = tiny_backbone(release, seed=1)
    ckpt, cfg = tmp_path / "tiny.pt", tmp_path / "tiny.json"
    torch.save(bb.unet.state_dict(), ckpt)
    cfg.write_text(json.dumps(FAMILIES[release]))
    return bb, ckpt, cfg


def test_saved_tiny_checkpoint_loads_through_the_registry(tmp_path: Path) -> None:
    bb, ckpt, cfg = _save_tiny(tmp_path, "256")
    loaded = load_registry().build_from_spec("backbone", f"adm:model={ckpt},config={cfg}")
    assert isinstance(loaded, AdmBackbone) and loaded.num_classes == 1000
    z, t = torch.randn(2, 3, SIZE, SIZE), torch.tensor([700, 3])
    y = loaded.condition("207", None, 2, 1.0)
    assert y.tolist() == [207, 207]
    with torch.no_grad():
        torch.testing.assert_close(loaded.eps(z, t, y), bb.eps(z, t, y))


def test_class_conditional_release_needs_a_class(tmp_path: Path) -> None:
    bb = tiny_backbone("256")
    with pytest.raises(UgdError, match="class-conditional"):
        sample(bb, None, SamplerConfig(num_steps=1), num_images=1, seed=0)
    with pytest.raises(UgdError, match="0..999"):
        bb.condition(1000, None, 1, 1.0)
    with pytest.raises(UgdError, match="not a class index"):
        bb.condition("a cat", None, 1, 1.0)


def test_missing_checkpoint_is_one_line_with_the_download_url(tmp_path: Path) -> None:
    reg = load_registry()
    missing = tmp_path / "256x256_diffusion_uncond.pt"
    with pytest.raises(UgdError) as err:
        reg.build_from_spec("backbone", f"adm:model={missing}")
    msg = str(err.value)
    assert "\n" not in msg and "256x256_diffusion_uncond.pt" in msg and URL + "256x256_diffusion_uncond.pt" in msg
    with pytest.raises(UgdError, match="classifier_sample|128x128_classifier.pt"):
        reg.build_from_spec("guide", f"classifier:label=1,model={tmp_path / '128x128_classifier.pt'}")
    # a missing file whose name tells no release: the missing file is said, not the name
    for kind, spec in (("backbone", f"adm:model={tmp_path / 'typo.pt'}"), ("guide", f"classifier:label=1,model={tmp_path / 'typo.pt'}")):
        with pytest.raises(UgdError, match=r"weights for 'typo.pt' not found .*model=/path/to/checkpoint.pt"):
            reg.build_from_spec(kind, spec)


def test_bad_configs_are_one_line_errors(tmp_path: Path) -> None:
    reg = load_registry()
    _, ckpt, _ = _save_tiny(tmp_path, "256-uncond")
    with pytest.raises(UgdError, match="cannot tell the release"):
        reg.build_from_spec("backbone", f"adm:model={ckpt}")
    with pytest.raises(UgdError, match="did you mean|not a release"):
        reg.build_from_spec("backbone", f"adm:model={ckpt},config=256-uncnd")
    other = tmp_path / "64.json"
    other.write_text(json.dumps(FAMILIES["64"]))  # 3 res blocks per level, not 2
    with pytest.raises(UgdError, match="does not match config '64.json'"):
        reg.build_from_spec("backbone", f"adm:model={ckpt},config={other}")


# ---------------------------------------------------------------------------------------- classifier guidance

TINY_CLASSIFIER = dict(image_size=SIZE, classifier_width=32, classifier_depth=1, classifier_channel_mult="1,2,2",
                       classifier_num_head_channels=16)


class _FixedStep:
    """A schedule of one step at t: the sampler reads alphas_cumprod and set_timesteps only."""

    def __init__(self, t: int) -> None:
        self.alphas_cumprod = adm_scheduler().alphas_cumprod
        self.t = t

    def set_timesteps(self, n: int) -> None:
        self.timesteps = torch.tensor([self.t])


def test_classifier_guidance_is_dhariwal_nichol_eq14(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net, size = build_classifier(Resolved("tiny", "classifier", TINY_CLASSIFIER))
    ckpt, cfg = tmp_path / "tiny_classifier.pt", tmp_path / "tiny_classifier.json"
    torch.save(net.state_dict(), ckpt)
    cfg.write_text(json.dumps(TINY_CLASSIFIER))
    guide = load_registry().build_from_spec("guide", f"classifier:label=3,model={ckpt},config={cfg}")
    assert guide.timestep_aware and size == SIZE

    bb = tiny_backbone("256-uncond")
    t_int = 400
    bb.scheduler = _FixedStep(t_int)
    a = float(bb.scheduler.alphas_cumprod[t_int])
    s = 10.0
    settings = dict(PRESETS["classifier-guidance"][1], num_steps=1, forward_strength=s)
    z = torch.randn(2, 3, SIZE, SIZE)
    out = sample(bb, guide, SamplerConfig(**settings), num_images=2, seed=0, latents=z)
    # one step to a_prev = 1 (eta has no effect there): z_out = x0 = (z - sqrt(1 - a) eps_hat) / sqrt(a)
    eps_hat = (z - a**0.5 * out.latents) / (1 - a) ** 0.5
    t = torch.full((2,), t_int)
    zr = z.clone().requires_grad_(True)
    log_p = torch.log_softmax(net.eval()(zr, t), dim=1)[:, 3]
    (grad,) = torch.autograd.grad(log_p.sum(), zr)
    with torch.no_grad():
        expected = bb.eps(z, t, None) - s * (1 - a) ** 0.5 * grad  # Dhariwal & Nichol 2021, eq. 14
    torch.testing.assert_close(eps_hat, expected, rtol=1e-3, atol=1e-4)
    assert out.stats.denoiser_backward == 0  # the classifier is differentiated, never the denoiser


def test_classifier_guide_resizes_to_the_classifier_size_and_checks_the_label() -> None:
    net, size = build_classifier(Resolved("tiny", "classifier", TINY_CLASSIFIER))
    guide = make_classifier_guide(net, size, 7)
    from ugd_core.guidance import guide_loss

    loss = guide_loss(guide, torch.zeros(2, 3, 64, 64), torch.tensor([10, 10]))
    assert loss.shape == (2,) and torch.isfinite(loss).all()
    with pytest.raises(UgdError, match="ImageNet class"):
        load_registry().build_from_spec("guide", "classifier:label=1000")


def test_classifier_guidance_preset_is_registered() -> None:
    entry = load_registry().get("preset", "classifier-guidance")
    assert entry.settings["forward_input"] == "zt" and entry.settings["forward_schedule"] == "sqrt_1m_abar"
    assert entry.settings["forward_strength"] == 10.0


@pytest.mark.slow
def test_real_256_uncond_config_builds_and_runs_one_step() -> None:
    from ugd_adm.configs import resolve

    net, diffusion = build_unet(resolve("", "256x256_diffusion_uncond.pt", "model"))
    keys = net.state_dict()
    assert keys["out.2.weight"].shape == (6, 256, 3, 3)  # learned sigma: 6 output channels
    assert keys["input_blocks.0.0.weight"].shape == (256, 3, 3, 3)
    assert sum(p.numel() for p in net.parameters()) > 5e8  # ADM-256: over half a billion parameters
    bb = AdmBackbone(net, adm_scheduler(**diffusion))
    out = sample(bb, None, SamplerConfig(num_steps=1), num_images=1, seed=0)  # one denoiser pass on a CPU
    assert out.images.shape == (1, 3, 256, 256) and torch.isfinite(out.images).all()
