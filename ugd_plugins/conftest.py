"""Shared set-up and fixtures of the plugins' tests: offline, one thread, and small helpers on real photos.

Photos come from :func:`ugd_kit.testing.photos` (scikit-image's astronaut, coffee, chelsea, rocket).
"""

from __future__ import annotations

import os

for _var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "YOLO_OFFLINE"):
    os.environ.setdefault(_var, "1")  # nothing downloads in tests

from typing import Any, Callable  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from ugd_core.guidance import guide_loss  # noqa: E402

torch.set_num_threads(1)

Descend = Callable[..., tuple[torch.Tensor, torch.Tensor]]


def _descend(
    guide: Any, x: torch.Tensor, steps: int = 5, lr: float = 0.05, per_sample: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain gradient steps on the images; returns (first, last) losses.

    The largest pixel change of a step is ``lr`` over the batch (``per_sample``: in each image).
    Fails if the first gradient is not finite or does not reach the image.
    """
    x = x.clone().requires_grad_(True)
    first = None
    for _ in range(steps):
        loss = guide_loss(guide, x)
        (g,) = torch.autograd.grad(loss.sum(), x)
        if first is None:
            first = loss.detach()
            assert torch.isfinite(g).all() and g.abs().sum() > 0, "the gradient does not reach the image"
        with torch.no_grad():
            top = g.flatten(1).abs().amax(1) if per_sample else g.abs().amax().expand(g.shape[0])
            x -= lr * g / top.clamp(min=1e-12).view(-1, *([1] * (g.dim() - 1)))
    assert first is not None
    return first, guide_loss(guide, x.detach()).detach()


def _assert_fast_derives(registry: Any, base: str) -> None:
    """``BASE-fast`` is ``BASE``'s settings with fewer steps (and perhaps another recurrence), nothing else changed."""
    slow, fast = registry.get("preset", base).settings, registry.get("preset", f"{base}-fast").settings
    changed = {k for k in slow.keys() | fast.keys() if slow.get(k) != fast.get(k)}
    assert changed <= {"num_steps", "recurrence"} and fast["num_steps"] < slow["num_steps"], (base, changed)


@pytest.fixture(scope="session")
def assert_fast_derives() -> Callable[[Any, str], None]:
    """``assert_fast_derives(registry, "sd-x")``: ``sd-x-fast`` differs from ``sd-x`` only in steps and recurrence."""
    return _assert_fast_derives


@pytest.fixture(scope="session")
def descend() -> Descend:
    """``descend(guide, images, steps=5, lr=0.05, per_sample=False) -> (first losses, last losses)``."""
    return _descend


@pytest.fixture(scope="session")
def calibrate_bn() -> Callable[[torch.nn.Module, torch.Tensor], torch.nn.Module]:
    """``calibrate_bn(module, images) -> module`` in eval mode with BatchNorm statistics of ``images``."""
    from ugd_kit.testing import calibrate_bn as calibrate

    return calibrate
