"""Faster execution paths of a sampling pass (issue 22, "Cheaper passes"): each either reproduces the plain
path bit for bit or is named in the run's record, and a run on one path never leaks its layout into the next."""

from __future__ import annotations

import pytest
import torch

from ugd_core import SamplerConfig, sample
from ugd_core.registry import get_registry
from ugd_digits.presets import DIGITS

STEPS = 3  # enough passes to cross every guided branch (forward, backward, DDIM); timing is never asserted


@pytest.fixture(scope="module")
def parts():  # type: ignore[no-untyped-def]
    reg = get_registry()
    backbone = reg.build("backbone", "digits", {})
    guide = reg.build("guide", "digit-robust", {"label": 7})
    return backbone, guide


def _run(parts, **knobs):  # type: ignore[no-untyped-def]
    backbone, guide = parts
    cfg = SamplerConfig.from_dict(dict(DIGITS, num_steps=STEPS, **knobs))
    return sample(backbone, guide, cfg, num_images=2, seed=[3, 4]).images


def _conv_weights(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p for p in module.parameters() if p.dim() == 4]


def test_channels_last_is_reproducible_close_to_nchw_and_does_not_leak(parts):  # type: ignore[no-untyped-def]
    backbone, guide = parts
    plain = _run(parts)
    cl = _run(parts, channels_last=True)
    assert all(w.is_contiguous(memory_format=torch.channels_last) for w in _conv_weights(backbone.unet))
    assert all(w.is_contiguous(memory_format=torch.channels_last) for m in guide.modules for w in _conv_weights(m))
    assert torch.equal(cl, _run(parts, channels_last=True)), "the channels-last path must reproduce itself"
    # not bit-identical to NCHW (oneDNN sums in another order), which is why the record names the layout
    assert (cl - plain).abs().max() < 1e-2
    again = _run(parts)  # back to NCHW: the layout of the previous run must not leak into this one
    assert all(w.is_contiguous() for w in _conv_weights(backbone.unet))
    assert torch.equal(again, plain)


def test_a_layout_change_under_inference_mode_leaves_weights_that_autograd_can_use(parts):  # type: ignore[no-untyped-def]
    """A caller's ``torch.inference_mode`` around an unguided run that switches the layout must not turn the
    networks' weights into inference tensors (a later guided run differentiates through them)."""
    backbone, _ = parts
    with torch.inference_mode():
        sample(backbone, None, SamplerConfig(num_steps=1, channels_last=True), num_images=1, seed=0)
        sample(backbone, None, SamplerConfig(num_steps=1), num_images=1, seed=0)
    assert not any(p.is_inference() for p in backbone.unet.parameters())
    _run(parts)  # a guided run: would raise "Inference tensors cannot be saved for backward"


def test_importing_ugd_core_makes_openmp_threads_wait_passively_unless_the_caller_chose():
    """Spinning OpenMP threads made a 2-thread run ~11x slower on a busy machine (docs/benchmarks.md, Speed);
    the policy must be in the environment before torch loads libgomp, and a caller's choice wins."""
    import os
    import subprocess
    import sys

    code = "import os, ugd_core; print(os.environ['OMP_WAIT_POLICY'])"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "PASSIVE"
    out = subprocess.run([sys.executable, "-c", code], env=dict(env, OMP_WAIT_POLICY="ACTIVE"), capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ACTIVE"
