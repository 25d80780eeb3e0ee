"""No silent fallbacks: a missing noise schedule is an error (or, in Python without one, a named warning)."""

from __future__ import annotations

import warnings

import pytest
import torch

from ugd_core.backbones import DiffusersPixelBackbone
from ugd_core.errors import UgdError, UgdWarning
from ugd_core.registry import get_registry


def _tiny_unet():  # type: ignore[no-untyped-def]
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    return UNet2DModel(sample_size=8, in_channels=1, out_channels=1, layers_per_block=1, block_out_channels=(8, 8),
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       norm_num_groups=4)


def test_a_unet_folder_without_a_scheduler_config_is_an_error_not_a_linear_schedule(tmp_path):
    _tiny_unet().save_pretrained(tmp_path / "unet")
    with pytest.raises(UgdError, match=r"has no scheduler config .*does not guess the noise schedule"):
        DiffusersPixelBackbone.from_pretrained(str(tmp_path))
    with pytest.raises(UgdError, match="no scheduler config"):  # the registered backbone: the CLI's exit 2
        get_registry().build("backbone", "diffusers-pixel", {"model": str(tmp_path)})


@pytest.mark.parametrize("where", ["scheduler", "."])
def test_the_folders_own_schedule_is_used(tmp_path, where):
    from diffusers import DDIMScheduler

    _tiny_unet().save_pretrained(tmp_path / "unet")
    DDIMScheduler(num_train_timesteps=500, beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction").save_pretrained(tmp_path / where)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        bb = DiffusersPixelBackbone.from_pretrained(str(tmp_path))
    assert bb.scheduler.config.beta_schedule == "squaredcos_cap_v2" and bb.prediction_type == "v_prediction"
    assert len(bb.scheduler.alphas_cumprod) == 500


def test_a_backbone_built_without_a_scheduler_says_what_it_assumed():
    with pytest.warns(UgdWarning, match=r"no scheduler given; assuming a linear DDPM schedule \(1000 steps"):
        bb = DiffusersPixelBackbone(_tiny_unet())
    assert bb.scheduler.config.beta_schedule == "linear"
