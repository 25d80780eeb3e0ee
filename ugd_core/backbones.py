"""Backbones: frozen diffusion models seen as epsilon-predictors.

Every adapter exposes the same :class:`Backbone` protocol; :class:`BackboneBase` holds what the
diffusers adapters share (alpha_bar lookup, output -> eps, precision and memory knobs), here and
in plugins (Stable Diffusion lives in ugd-sd). Conversion of v- and x0-prediction to epsilon,
and splitting off learned-variance channels, happen in :func:`to_epsilon` and nowhere else.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from .class_prompt import class_indices
from .errors import UgdError, UgdWarning
from .guidance import freeze
from .unet_files import unet_subfolder


@runtime_checkable
class Backbone(Protocol):
    """A frozen diffusion model the sampler can drive."""

    scheduler: Any  # a diffusers scheduler: alphas_cumprod and set_timesteps()
    sample_shape: tuple[int, ...]  # shape of one z_t (C, H, W)
    is_latent: bool
    device: torch.device

    def condition(self, prompt: Any, negative_prompt: Any, batch_size: int, cfg_scale: float) -> Any:
        """Encode the backbone's own conditioning (text, class) once per run."""
        ...

    def eps(self, z_t: Tensor, t: Tensor, cond: Any) -> Tensor:
        """Noise prediction eps(z_t, t, c), differentiable with respect to z_t."""
        ...

    def decode(self, z: Tensor) -> Tensor:
        """The image a guide sees, NCHW in [-1, 1]; differentiable (identity for pixel models)."""
        ...


def refuse_prompt(backbone: str, prompt: Any, negative_prompt: Any) -> None:
    """The one-line error of an unconditional backbone given a prompt (it would be ignored, and the record
    would name a prompt that did nothing)."""
    if prompt not in (None, "") or negative_prompt not in (None, ""):
        raise UgdError(f"{backbone} is unconditional: it takes no prompt or negative prompt; drop them, or use a "
                       "backbone that reads text (stable-diffusion, sd3, flux) or a class index (a class-conditional release)")


def class_labels(owner: str, prompt: Any, negative_prompt: Any, batch_size: int, num_classes: int, device: Any) -> Tensor:
    """The class labels [batch_size] of a class-conditional model whose prompt is the class index: one index (for every
    image) or one per image, given as integers or as their text (``--prompt 207``). Anything else is one line
    (:func:`ugd_core.class_prompt.class_indices`, the rule a run's spec is checked by before any model loads)."""
    labels = torch.as_tensor(class_indices(owner, prompt, negative_prompt, num_classes, [batch_size]))
    return (labels.expand(batch_size) if labels.numel() == 1 else labels).to(device)


def to_epsilon(output: Tensor, z_t: Tensor, alpha_bar: Tensor | None, prediction_type: str = "epsilon") -> Tensor:
    """Convert a model's raw output to an epsilon prediction.

    Learned-variance outputs (twice the channels of z_t) keep their first half.
    v-prediction: eps = sqrt(a) v + sqrt(1-a) z  (Salimans & Ho 2022);
    x0-prediction: eps = (z - sqrt(a) x0) / sqrt(1-a). ``alpha_bar`` may be None for
    epsilon-prediction (it is not read).
    """
    if output.shape[1] == 2 * z_t.shape[1]:
        output = output[:, : z_t.shape[1]]
    if prediction_type == "epsilon":
        return output
    if alpha_bar is None:
        raise ValueError(f"to_epsilon needs alpha_bar for prediction_type {prediction_type!r}")
    a = alpha_bar.to(z_t.dtype).view(-1, *([1] * (z_t.dim() - 1)))
    if prediction_type == "v_prediction":
        return a.sqrt() * output + (1 - a).sqrt() * z_t
    if prediction_type == "sample":
        return (z_t - a.sqrt() * output) / (1 - a).sqrt()
    raise UgdError(f"unsupported prediction_type {prediction_type!r}; use epsilon, v_prediction or sample")


def default_scheduler(num_train_timesteps: int = 1000, beta_schedule: str = "linear") -> Any:
    """A diffusers DDIM scheduler with the DDPM noise schedule."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(num_train_timesteps=num_train_timesteps, beta_schedule=beta_schedule, clip_sample=False)


DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def module_dtype(module: nn.Module) -> torch.dtype:
    return next(module.parameters()).dtype


def at_least_fp32(x: Tensor) -> Tensor:
    return x.to(torch.promote_types(x.dtype, torch.float32))


def set_channels_last(on: bool, *modules: nn.Module) -> None:
    """Put the 4-D weights of ``modules`` in channels-last (NHWC) layout, or back to contiguous NCHW.

    oneDNN convolutions on CPU skip their layout reorders when weights (or inputs) are channels-last; a
    module with channels-last weights returns channels-last activations for NCHW input too. The values
    differ from the NCHW path in the last bits (a different summation order), never in shape.
    """
    fmt = torch.channels_last if on else torch.contiguous_format
    for m in modules:
        if all(p.is_contiguous(memory_format=fmt) for p in m.parameters() if p.dim() == 4):
            continue
        with torch.inference_mode(False):  # weights made under a caller's inference_mode could not join autograd later
            m.to(memory_format=fmt)


def cast_module(module: nn.Module, dtype: torch.dtype) -> None:
    """``module.to(dtype)``, without diffusers' warning about ``_keep_in_fp32_modules`` that it
    logs on every cast even when that list is empty; quantized models cannot be cast."""
    import logging

    if getattr(module, "is_quantized", False) and module_dtype(module) != dtype:
        raise UgdError(f"{type(module).__name__} is quantized and cannot be cast to {dtype}; use --dtype auto")
    log = logging.getLogger("diffusers.models.modeling_utils")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        module.to(dtype)
    finally:
        log.setLevel(level)


class BackboneBase:
    """What every adapter shares: alpha_bar lookup, output -> eps, and the precision/memory knobs.

    Precision rule: the sampler keeps z_t, the noise and the DDIM arithmetic in float32; an
    adapter casts z_t and its conditioning to each module's dtype at the module's boundary and
    returns eps and decoded images in float32 (or wider).
    """

    scheduler: Any
    prediction_type: str
    device: torch.device
    _settings: tuple[Any, ...] | None = None
    _acp: tuple[Any, Tensor] | None = None

    def _modules(self) -> dict[str, nn.Module]:
        """The frozen networks by role: 'denoiser', 'vae', 'text', 'text_2' (those the adapter has)."""
        return {}

    def _alpha_bar(self, t: Tensor) -> Tensor:
        # cached on t's device: a host-to-device copy every step would stall the GPU queue
        src = self.scheduler.alphas_cumprod
        if self._acp is None or self._acp[0] is not src or self._acp[1].device != t.device:
            self._acp = (src, src.to(device=t.device, dtype=torch.float32))
        return self._acp[1][t.long()]

    def _to_eps(self, out: Tensor, z_t: Tensor, t: Tensor) -> Tensor:
        a = None if self.prediction_type == "epsilon" else self._alpha_bar(t)
        return to_epsilon(at_least_fp32(out), z_t, a, self.prediction_type)

    def decode(self, z: Tensor) -> Tensor:
        return z

    def configure(self, config: Any) -> None:
        """Apply a :class:`~ugd_core.config.SamplerConfig`'s precision and memory knobs.

        ``dtype``: ``auto`` leaves each module in the dtype it has, otherwise every module is cast
        in place to fp32/fp16/bf16 (a cast down and back up keeps the half-precision weights: load
        the pipeline with ``torch_dtype`` to hold one copy in the precision you want).
        ``grad_checkpointing``: diffusers' activation checkpointing of the denoiser and the VAE
        decoder; diffusers only checkpoints while autograd records, so unguided passes are
        unaffected. ``vae_slicing`` / ``vae_tiling``: diffusers' sliced / tiled
        VAE decode. ``attention_slicing``: diffusers' sliced attention (otherwise the model's own
        processors, PyTorch SDPA by default). ``channels_last``: every module's conv weights in
        channels-last layout (:func:`set_channels_last`). Knobs a backbone has no module for are ignored.
        """
        key = (config.dtype, config.grad_checkpointing, config.vae_slicing, config.vae_tiling, config.attention_slicing,
               getattr(config, "channels_last", False))
        if key == self._settings:
            return
        mods = self._modules()
        set_channels_last(key[5], *mods.values())
        if config.dtype != "auto":
            for m in mods.values():
                cast_module(m, DTYPES[config.dtype])
        self._upcast_vae()
        for role in ("denoiser", "vae"):
            m = mods.get(role)
            if m is not None and getattr(m, "_supports_gradient_checkpointing", False):
                m.enable_gradient_checkpointing() if config.grad_checkpointing else m.disable_gradient_checkpointing()
        vae = mods.get("vae")
        if vae is not None and hasattr(vae, "use_slicing"):
            vae.enable_slicing() if config.vae_slicing else vae.disable_slicing()
        if vae is not None and hasattr(vae, "use_tiling"):
            vae.enable_tiling() if config.vae_tiling else vae.disable_tiling()
        unet = mods.get("denoiser")
        if unet is not None and hasattr(unet, "set_attention_slice"):
            if config.attention_slicing:
                unet.set_attention_slice("auto")
            elif self._settings is not None and self._settings[4]:
                unet.set_attn_processor(dict(self._attn_processors))  # diffusers empties the dict it is given
        self._settings = key

    def _upcast_vae(self) -> None:
        """Hook: keep a VAE that overflows in fp16 in fp32 (SDXL)."""

    def _freeze_and_place(self) -> None:
        mods = self._modules()
        for m in mods.values():
            m.to(self.device)
        freeze(*mods.values())
        unet = mods.get("denoiser")
        self._attn_processors = dict(unet.attn_processors) if unet is not None and hasattr(unet, "attn_processors") else {}


class CallableBackbone(BackboneBase):
    """Any callable ``fn(z_t, t, cond) -> prediction`` over a diffusers noise schedule."""

    is_latent = False

    def __init__(
        self,
        fn: Callable[[Tensor, Tensor, Any], Tensor],
        sample_shape: tuple[int, ...],
        scheduler: Any = None,
        prediction_type: str = "epsilon",
        decode: Callable[[Tensor], Tensor] | None = None,
        device: torch.device | str = "cpu",
    ):
        self.fn = fn
        self.sample_shape = tuple(sample_shape)
        self.scheduler = scheduler if scheduler is not None else default_scheduler()
        self.prediction_type = prediction_type
        self._decode = decode
        self.is_latent = decode is not None
        self.device = torch.device(device)

    def condition(self, prompt: Any, negative_prompt: Any, batch_size: int, cfg_scale: float) -> Any:
        return prompt

    def eps(self, z_t: Tensor, t: Tensor, cond: Any) -> Tensor:
        return self._to_eps(self.fn(z_t, t, cond), z_t, t)

    def decode(self, z: Tensor) -> Tensor:
        return self._decode(z) if self._decode is not None else z


class DiffusersPixelBackbone(BackboneBase):
    """A diffusers pixel-space UNet (``UNet2DModel``), optionally class-conditional."""

    is_latent = False

    def __init__(self, unet: nn.Module, scheduler: Any = None, device: torch.device | str | None = None):
        """``scheduler``: the noise schedule the UNet was trained with; without one, a linear DDPM schedule
        with epsilon prediction is assumed, with a :class:`~ugd_core.errors.UgdWarning` that says so."""
        self.unet = unet
        if scheduler is None:
            n = unet.config.get("num_train_timesteps") or 1000
            warnings.warn(f"DiffusersPixelBackbone: no scheduler given; assuming a linear DDPM schedule ({n} steps, "
                          "epsilon prediction); pass the scheduler the UNet was trained with", UgdWarning, stacklevel=2)
            scheduler = default_scheduler(n)
        self.scheduler = scheduler
        self.prediction_type = self.scheduler.config.get("prediction_type", "epsilon")
        self.device = torch.device(device) if device is not None else next(unet.parameters()).device
        self._freeze_and_place()
        size = unet.config.sample_size
        h, w = (size, size) if isinstance(size, int) else tuple(size)
        self.sample_shape = (unet.config.in_channels, h, w)

    def _modules(self) -> dict[str, nn.Module]:
        return {"denoiser": self.unet}

    @classmethod
    def from_pipeline(cls, pipe: Any, device: torch.device | str | None = None) -> "DiffusersPixelBackbone":
        """From a ``DDPMPipeline`` / ``DDIMPipeline`` (or anything with ``.unet`` and ``.scheduler``)."""
        return cls(pipe.unet, pipe.scheduler, device)

    @classmethod
    def from_pretrained(cls, path: str, device: torch.device | str | None = None, subfolder: str | None = None) -> "DiffusersPixelBackbone":
        """Load a pipeline folder / Hub id from the local Hugging Face cache (never downloads)."""
        from diffusers import DDIMScheduler, UNet2DModel
        from diffusers.utils import logging as diffusers_logging

        contents = "a UNet2DModel (config.json and its weights) with scheduler_config.json, or a pipeline folder with unet/ and scheduler/"
        verbosity = diffusers_logging.get_verbosity()
        diffusers_logging.set_verbosity_error()  # its load-time advice (install accelerate) is not ugd's one line
        try:
            with loading_weights(path, contents):
                unet = UNet2DModel.from_pretrained(path, subfolder=subfolder or unet_subfolder(path), local_files_only=True)
        finally:
            diffusers_logging.set_verbosity(verbosity)
        scheduler = None
        for sub in ("scheduler", None):  # a pipeline's scheduler/ folder, or a scheduler_config.json beside the UNet
            try:
                scheduler = DDIMScheduler.from_pretrained(path, subfolder=sub, local_files_only=True)
                break
            except (OSError, ValueError):
                continue
        if scheduler is None:  # guessing the noise schedule would give wrong images without a word
            raise UgdError(f"diffusers-pixel: {path!r} has no scheduler config (scheduler/scheduler_config.json); ugd does not "
                           "guess the noise schedule: use the pipeline folder the UNet came with, or add its scheduler folder")
        return cls(unet, scheduler, device)

    def condition(self, prompt: Any, negative_prompt: Any, batch_size: int, cfg_scale: float) -> Any:
        if self.unet.config.get("num_class_embeds") is None:
            refuse_prompt("this backbone", prompt, negative_prompt)
            return None
        return class_labels("diffusers-pixel", prompt, negative_prompt, batch_size, int(self.unet.config.num_class_embeds), self.device)

    def eps(self, z_t: Tensor, t: Tensor, cond: Any) -> Tensor:
        out = self.unet(z_t.to(module_dtype(self.unet)), t.to(self.device), class_labels=cond, return_dict=False)[0]
        return self._to_eps(out, z_t, t)


PIPELINE_FOLDER = ("model_index.json and one subfolder per component (unet/, vae/, text_encoder/, tokenizer/, scheduler/; "
                   "what pipe.save_pretrained(FOLDER) writes, or a Hub snapshot's folder)")


@contextmanager
def loading_weights(model: str, contents: str = PIPELINE_FOLDER) -> Iterator[None]:
    """Turn a missing-weights failure into one UgdError naming the model, where it looked and the fix.
    An existing folder that holds no (complete) pipeline says so and what it should contain (``contents``)."""
    try:
        yield
    except (OSError, ValueError) as exc:  # a UgdError raised inside passes through as it is
        folder = Path(model).expanduser()
        if folder.is_dir():
            found = ", ".join(sorted(p.name + "/" * p.is_dir() for p in folder.iterdir())[:8]) or "nothing"
            detail = " ".join(str(exc).split())[:160]
            raise UgdError(f"model={model!r} is a folder but holds no loadable pipeline (it holds {found}: {detail}); "
                           f"it should contain {contents}") from None
        if folder.is_file():  # a single-file checkpoint (.safetensors, .ckpt) is not a pipeline folder
            raise UgdError(f"model={model!r} is a file, not a pipeline folder; give a folder holding {contents}, or a Hub id "
                           "(a single-file checkpoint converts with diffusers' from_single_file(...).save_pretrained(FOLDER))") from None
        raise UgdError(missing_weights_message(model, "the Hugging Face cache", "model=/path/to/folder")) from None


def missing_weights_message(model: str, looked_in: str, option: str) -> str:
    """The one-line 'weights not found' message every loader uses (ugd never downloads at run time; for the
    Hugging Face cache the message names the command that fills it)."""
    import os

    fetch = "download them once online"
    if looked_in == "the Hugging Face cache":
        from huggingface_hub.constants import HF_HUB_CACHE

        looked_in = f"the Hugging Face cache ({HF_HUB_CACHE})"
        fetch = f"fetch them once with `hf download {model}` (huggingface_hub's CLI)"
    state = "offline and " if os.environ.get("HF_HUB_OFFLINE") == "1" else ""
    return f"weights for {model!r} not found ({state}looked in {looked_in}); {fetch} or point to a local copy with {option}"
