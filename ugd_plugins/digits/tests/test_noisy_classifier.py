"""The noise-aware digit classifier and the classifier-guidance guide ``digit-noisy``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ugd_core import SamplerConfig, sample
from ugd_core.errors import UgdError
from ugd_core.guidance import guide_loss
from ugd_core.registry import load_registry
from ugd_core.testing import gaussian_backbone
from ugd_digits.models import backbone_scheduler
from ugd_digits.noisy_classifier import ARCH, PRESET, WEIGHTS, NoisyDigitClassifier, load_noisy_classifier


def _random_weights(path: Path) -> NoisyDigitClassifier:
    from safetensors.torch import save_file

    torch.manual_seed(0)
    net = NoisyDigitClassifier(**ARCH)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path),
              metadata={"arch": json.dumps({"class": "NoisyDigitClassifier", "kwargs": ARCH})})
    return net.eval()


def test_logits_depend_on_the_timestep() -> None:
    torch.manual_seed(0)
    net = NoisyDigitClassifier(**ARCH).eval()
    x = torch.randn(3, 1, 32, 32)
    with torch.no_grad():
        a, b = net(x, torch.tensor([0, 0, 0])), net(x, torch.tensor([900, 900, 900]))
    assert a.shape == (3, 10) and not torch.allclose(a, b)
    with torch.no_grad():  # a scalar t broadcasts over the batch
        torch.testing.assert_close(net(x, torch.tensor(900)), b)


def test_guide_is_timestep_aware_and_reaches_the_image(tmp_path: Path) -> None:
    path = tmp_path / "noisy.safetensors"
    net = _random_weights(path)
    guide = load_registry().build_from_spec("guide", f"digit-noisy:label=7,weights={path}")
    assert guide.timestep_aware
    x = torch.randn(2, 1, 32, 32, requires_grad=True)
    t = torch.tensor([100, 800])
    loss = guide_loss(guide, x, t)
    with torch.no_grad():
        expected = torch.nn.functional.cross_entropy(net(x, t), torch.tensor([7, 7]), reduction="none")
    torch.testing.assert_close(loss, expected)
    (g,) = torch.autograd.grad(loss.sum(), x)
    assert torch.isfinite(g).all() and g.abs().sum() > 0


def test_sampler_passes_the_training_timesteps_to_the_guide(tmp_path: Path) -> None:
    path = tmp_path / "noisy.safetensors"
    _random_weights(path)
    guide = load_registry().build_from_spec("guide", f"digit-noisy:label=3,weights={path}")
    seen: list[list[int]] = []
    inner = guide.f_fn
    guide.f_fn = lambda x, t: (seen.append(t.tolist()), inner(x, t))[1]
    sched = backbone_scheduler()
    bb = gaussian_backbone(-0.5, 0.5, (1, 32, 32), scheduler=sched)
    out = sample(bb, guide, SamplerConfig(num_steps=3, **PRESET[1]), num_images=2, seed=0)
    sched.set_timesteps(3)
    assert seen == [[int(t)] * 2 for t in sched.timesteps]
    assert out.stats.denoiser_backward == 0 and torch.isfinite(out.images).all()


def test_missing_weights_name_the_file_and_the_training_command(tmp_path: Path) -> None:
    with pytest.raises(UgdError, match="train_noisy_classifier"):
        load_noisy_classifier(tmp_path / "absent.safetensors")
    with pytest.raises(UgdError, match="not a digit class"):
        load_registry().build_from_spec("guide", "digit-noisy:label=12")


def test_preset_is_classifier_guidance() -> None:
    entry = load_registry().get("preset", "digits-classifier-guidance")
    assert entry.settings["forward_input"] == "zt" and entry.settings["forward_schedule"] == "sqrt_1m_abar"
    assert entry.settings.get("backward_steps", 0) == 0 and entry.settings.get("recurrence", 1) == 1


@pytest.mark.skipif(not WEIGHTS.is_file(), reason="noisy classifier not trained")
def test_shipped_weights_classify_noisy_heldout_digits() -> None:
    """Measured here on the 1,000 held-out digits (not read back from the weights' metadata): high accuracy on
    nearly clean inputs, falling with the noise level, near chance at t = 900 (metadata: 0.982 / 0.854 / 0.132)."""
    from ugd_digits.train_noisy_classifier import heldout_accuracy

    torch.set_num_threads(1)
    acc = heldout_accuracy(load_noisy_classifier(), backbone_scheduler().alphas_cumprod.float())
    assert acc["accuracy_t0"] >= 0.95 and acc["accuracy_t500"] >= 0.75
    assert acc["accuracy_t0"] > acc["accuracy_t500"] > acc["accuracy_t900"] and acc["accuracy_t900"] < 0.3


def test_comparison_rows_name_their_label_guide() -> None:
    from ugd_digits.bench import task_cases
    from ugd_digits.compare_classifier_guidance import ROWS

    assert ROWS["classifier guidance (noise-aware)"] == ("digit-noisy", PRESET[1])
    assert ROWS["universal (digits-full)"][0] == "digit"  # the comparison as documented: the clean guide
    assert task_cases("label", 0, 1, label_guide="digit-noisy")[3].guides == ["digit-noisy:label=3,weight=1.0"]
