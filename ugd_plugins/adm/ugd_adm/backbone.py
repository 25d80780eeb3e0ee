"""The ``adm`` backbone: OpenAI's guided-diffusion UNet (ADM, Dhariwal & Nichol 2021) as a ugd pixel backbone.

The network is the guided-diffusion package's own ``UNetModel`` built by
``script_util.create_model`` from the release's README flags, so the released
state dicts load strictly. Learned-variance outputs (6 channels) keep their
first 3 (epsilon) through ``ugd_core.backbones.to_epsilon``; the noise schedule is
the release's (``noise_schedule``/``diffusion_steps`` flags) as a diffusers
``DDIMScheduler``; the model sees the training timestep t (0..999) unscaled
(``rescale_timesteps=False`` in every release).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ugd_core.backbones import class_labels, refuse_prompt, set_channels_last, to_epsilon
from ugd_core.errors import UgdError

from .checkpoints import load_into, resolve_checkpoint
from .configs import RELEASES, Resolved, import_script_util, model_kwargs

DEFAULT_MODEL = RELEASES["256-uncond"].files[0]
# diffusers' names for guided-diffusion's schedules: linear betas 1e-4 .. 2e-2 (times 1000/steps), and
# improved-diffusion's cosine (alpha_bar = cos^2((t/T + 0.008)/1.008 * pi/2), betas capped at 0.999).
_SCHEDULES = {"linear": "linear", "cosine": "squaredcos_cap_v2"}


def adm_scheduler(steps: int = 1000, schedule: str = "linear") -> Any:
    """A diffusers ``DDIMScheduler`` with guided-diffusion's ``get_named_beta_schedule(schedule, steps)``."""
    from diffusers import DDIMScheduler

    if schedule not in _SCHEDULES:
        raise UgdError(f"adm: noise_schedule={schedule!r} is not one of {', '.join(_SCHEDULES)}")
    scale = 1000 / steps
    return DDIMScheduler(num_train_timesteps=steps, beta_schedule=_SCHEDULES[schedule], beta_start=scale * 1e-4,
                         beta_end=scale * 0.02, clip_sample=False, prediction_type="epsilon")


def set_precision(net: nn.Module, dtype: torch.dtype) -> None:
    """guided-diffusion's mixed precision with any dtype: the convolutions of the input, middle and output
    blocks in ``dtype`` (normalisation, embeddings and the output head stay fp32), as ``convert_to_fp16`` does
    (``UNetModel`` and the classifier's ``EncoderUNetModel``, which has no output blocks)."""
    for part in ("input_blocks", "middle_block", "output_blocks"):
        for m in getattr(net, part).modules() if hasattr(net, part) else ():
            if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
                m.to(dtype)
    net.dtype = dtype


def set_checkpointing(net: nn.Module, on: bool) -> None:
    """Turn the package's per-block activation checkpointing (``use_checkpoint``) on or off."""
    for m in net.modules():
        if hasattr(m, "use_checkpoint"):
            m.use_checkpoint = on


class AdmBackbone:
    """A guided-diffusion ``UNetModel`` seen as an epsilon-predictor (the ``Backbone`` protocol)."""

    is_latent = False

    def __init__(self, unet: nn.Module, scheduler: Any = None, device: torch.device | str = "cpu",
                 use_fp16: bool = False, name: str = "adm"):
        self.unet = unet
        self.scheduler = scheduler if scheduler is not None else adm_scheduler()
        self.device = torch.device(device)
        self.name = name
        self.native_fp16 = use_fp16  # the release's own flag: fp16 on GPU under dtype=auto
        self.unet.to(self.device).eval().requires_grad_(False)
        set_precision(self.unet, torch.float32)
        size = int(unet.image_size)
        self.sample_shape = (int(unet.in_channels), size, size)
        self.num_classes: int | None = unet.num_classes

    def configure(self, config: Any) -> None:
        """Precision (``dtype``; auto = fp16 on CUDA for releases with ``use_fp16``), ``grad_checkpointing`` and ``channels_last``."""
        choice = getattr(config, "dtype", "auto")
        if choice == "auto":
            dtype = torch.float16 if self.native_fp16 and self.device.type == "cuda" else torch.float32
        else:
            dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[choice]
        set_precision(self.unet, dtype)
        set_checkpointing(self.unet, bool(getattr(config, "grad_checkpointing", False)))
        set_channels_last(bool(getattr(config, "channels_last", False)), self.unet)

    def condition(self, prompt: Any, negative_prompt: Any, batch_size: int, cfg_scale: float) -> Any:
        """The class label(s) of a class-conditional release (``prompt`` = class index, one or one per image)."""
        if self.num_classes is None:
            refuse_prompt(f"adm {self.name}", prompt, negative_prompt)
            return None
        return class_labels(f"adm {self.name}", prompt, negative_prompt, batch_size, self.num_classes, self.device)

    def eps(self, z_t: Tensor, t: Tensor, cond: Any) -> Tensor:
        out = self.unet(z_t, t.to(self.device), y=cond)
        acp = self.scheduler.alphas_cumprod.to(z_t.device)
        return to_epsilon(out.to(z_t.dtype), z_t, acp[t.long()], "epsilon")

    def decode(self, z: Tensor) -> Tensor:
        return z


def build_unet(resolved: Resolved) -> tuple[nn.Module, dict[str, Any]]:
    """A random-weight ``UNetModel`` of a resolved config, and its diffusion settings."""
    su = import_script_util()
    kwargs, diffusion = model_kwargs(resolved.flags)
    kwargs = dict(kwargs, use_fp16=False)  # built in fp32; precision is the sampler's dtype knob
    try:
        net = su.create_model(**kwargs)
    except (ValueError, AssertionError) as exc:
        raise UgdError(f"adm: config {resolved.name!r} does not build a UNet ({type(exc).__name__}: {exc}); "
                       "check image_size, channel_mult and the head flags") from None
    return net, diffusion


def load_adm(model: str = DEFAULT_MODEL, config: str = "", device: str = "cpu") -> AdmBackbone:
    """Build the release's UNet from its README flags and load the checkpoint ``model`` into it."""
    resolved, path = resolve_checkpoint(config, model, "model")
    net, diffusion = build_unet(resolved)
    load_into(net, path, resolved)
    fp16 = bool(model_kwargs(resolved.flags)[0]["use_fp16"])
    return AdmBackbone(net, adm_scheduler(**diffusion), device, use_fp16=fp16, name=f"adm {resolved.name}")
