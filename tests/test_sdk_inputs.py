"""The Python API's bad inputs are one UgdError naming the fix, before any sampling; and ``sample(backbone,
guides)`` without a config guides with the default preset (``auto``), as every backbone's CLI default does,
instead of quietly sampling unguided with SamplerConfig()'s zero strengths."""

import pytest
import torch

from ugd_core import SamplerConfig, make_guide, sample, testing
from ugd_core.backbones import default_scheduler
from ugd_core.errors import UgdError
from ugd_core.presets import PRESETS


def backbone():
    return testing.gaussian_backbone(0.2, 0.5, (1, 4, 4), default_scheduler())


def bright():
    return make_guide("bright", f=lambda x: x.mean(dim=(1, 2, 3)), loss=lambda m, c: (m - c) ** 2, target=0.9)


def test_no_config_with_guides_is_the_default_preset():
    implicit = sample(backbone(), bright(), num_images=2, seed=4)
    explicit = sample(backbone(), bright(), SamplerConfig(**PRESETS["auto"][1]), num_images=2, seed=4)
    unguided = sample(backbone(), None, SamplerConfig(**PRESETS["auto"][1]), num_images=2, seed=4)
    assert torch.equal(implicit.images, explicit.images) and implicit.stats.guidance.guided_steps > 0
    assert not torch.equal(implicit.images, unguided.images)


@pytest.mark.parametrize("call, message", [
    (lambda: sample(backbone(), bright(), num_images=0, seed=0), "num_images must be a whole number >= 1"),
    (lambda: sample(backbone(), bright(), {"num_steps": 3}, seed=0), "config must be a SamplerConfig"),
    (lambda: sample(backbone(), [42], seed=0), "42 \\(int\\) is not a guide"),
    (lambda: sample(backbone(), [(bright(), float("nan"))], seed=0), "weight nan is not a finite number"),
    (lambda: sample(backbone(), [(bright(), "heavy")], seed=0), "weight 'heavy' is not a finite number"),
    (lambda: sample(backbone(), None, num_images=2, seed=0, latents=torch.zeros(3, 1, 4, 4)), "pass latents of shape \\(2, 1, 4, 4\\)"),
    (lambda: sample(backbone(), None, num_images=2, seed=0, latents=torch.full((2, 1, 4, 4), float("nan"))), "latents hold NaN or inf"),
    (lambda: sample(backbone(), None, num_images=2, seed=[1, 2, 3]), "3 seeds for 2 images: pass one seed per image"),
    (lambda: sample(backbone(), None, num_images=2, generator=[torch.Generator()] * 3), "3 generators for 2 images"),
    (lambda: SamplerConfig(num_steps=2.5), "num_steps must be a whole number, got 2.5"),
    (lambda: SamplerConfig(forward_strength="big"), "forward_strength must be a finite number"),
    (lambda: SamplerConfig(eta=float("nan")), "eta must be a finite number"),
    (lambda: SamplerConfig(clip_x0=1), "clip_x0 must be true or false"),
])
def test_bad_api_input_is_one_error_naming_the_fix(call, message):
    with pytest.raises(UgdError, match=message):
        call()


def test_a_prompt_for_an_unconditional_backbone_is_refused():
    from ugd_core.backbones import DiffusersPixelBackbone
    from diffusers import UNet2DModel

    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8,), layers_per_block=1,
                       down_block_types=("DownBlock2D",), up_block_types=("UpBlock2D",), norm_num_groups=4)
    bb = DiffusersPixelBackbone(unet, default_scheduler())
    with pytest.raises(UgdError, match="is unconditional: it takes no prompt"):
        sample(bb, None, SamplerConfig(num_steps=2), num_images=1, seed=0, prompt="a cat")
    assert sample(bb, None, SamplerConfig(num_steps=2), num_images=1, seed=0, prompt="").images.shape == (1, 1, 8, 8)
