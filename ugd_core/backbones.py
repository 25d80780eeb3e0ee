"""Backbones: frozen diffusion models seen as epsilon-predictors.

Every adapter exposes the same :class:`Backbone` protocol. Conversion of v- and
x0-prediction to epsilon, and splitting off learned-variance channels, happen in
:func:`to_epsilon` and nowhere else.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from .errors import UgdError


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


def to_epsilon(output: Tensor, z_t: Tensor, alpha_bar: Tensor, prediction_type: str = "epsilon") -> Tensor:
    """Convert a model's raw output to an epsilon prediction.

    Learned-variance outputs (twice the channels of z_t) keep their first half.
    v-prediction: eps = sqrt(a) v + sqrt(1-a) z  (Salimans & Ho 2022);
    x0-prediction: eps = (z - sqrt(a) x0) / sqrt(1-a).
    """
    if output.shape[1] == 2 * z_t.shape[1]:
        output = output[:, : z_t.shape[1]]
    a = alpha_bar.to(z_t.dtype).view(-1, *([1] * (z_t.dim() - 1)))
    if prediction_type == "epsilon":
        return output
    if prediction_type == "v_prediction":
        return a.sqrt() * output + (1 - a).sqrt() * z_t
    if prediction_type == "sample":
        return (z_t - a.sqrt() * output) / (1 - a).sqrt()
    raise UgdError(f"unsupported prediction_type {prediction_type!r}; use epsilon, v_prediction or sample")


def default_scheduler(num_train_timesteps: int = 1000, beta_schedule: str = "linear") -> Any:
    """A diffusers DDIM scheduler with the DDPM noise schedule."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(num_train_timesteps=num_train_timesteps, beta_schedule=beta_schedule, clip_sample=False)


def _frozen(*modules: nn.Module | None) -> None:
    for m in modules:
        if m is not None:
            m.eval()
            m.requires_grad_(False)


class _Base:
    scheduler: Any
    prediction_type: str

    def _alpha_bar(self, t: Tensor) -> Tensor:
        acp = self.scheduler.alphas_cumprod.to(t.device)
        return acp[t.long()]

    def decode(self, z: Tensor) -> Tensor:
        return z


class CallableBackbone(_Base):
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
        return to_epsilon(self.fn(z_t, t, cond), z_t, self._alpha_bar(t), self.prediction_type)

    def decode(self, z: Tensor) -> Tensor:
        return self._decode(z) if self._decode is not None else z


class DiffusersPixelBackbone(_Base):
    """A diffusers pixel-space UNet (``UNet2DModel``), optionally class-conditional."""

    is_latent = False

    def __init__(self, unet: nn.Module, scheduler: Any = None, device: torch.device | str | None = None):
        self.unet = unet
        self.scheduler = scheduler if scheduler is not None else default_scheduler(unet.config.get("num_train_timesteps") or 1000)
        self.prediction_type = self.scheduler.config.get("prediction_type", "epsilon")
        self.device = torch.device(device) if device is not None else next(unet.parameters()).device
        self.unet.to(self.device)
        _frozen(self.unet)
        size = unet.config.sample_size
        h, w = (size, size) if isinstance(size, int) else tuple(size)
        self.sample_shape = (unet.config.in_channels, h, w)

    @classmethod
    def from_pipeline(cls, pipe: Any, device: torch.device | str | None = None) -> "DiffusersPixelBackbone":
        """From a ``DDPMPipeline`` / ``DDIMPipeline`` (or anything with ``.unet`` and ``.scheduler``)."""
        return cls(pipe.unet, pipe.scheduler, device)

    @classmethod
    def from_pretrained(cls, path: str, device: torch.device | str | None = None, subfolder: str | None = None) -> "DiffusersPixelBackbone":
        """Load a pipeline folder / Hub id (from the local cache only when offline)."""
        from diffusers import DDIMScheduler, UNet2DModel

        with _loading(path):
            unet = UNet2DModel.from_pretrained(path, subfolder=subfolder or _unet_subfolder(path))
            try:
                scheduler = DDIMScheduler.from_pretrained(path, subfolder="scheduler")
            except (OSError, ValueError):
                scheduler = None
        return cls(unet, scheduler, device)

    def condition(self, prompt: Any, negative_prompt: Any, batch_size: int, cfg_scale: float) -> Any:
        if prompt is None or self.unet.config.get("num_class_embeds") is None:
            return None
        labels = torch.as_tensor(prompt, device=self.device).long().flatten()
        return labels.expand(batch_size) if labels.numel() == 1 else labels

    def eps(self, z_t: Tensor, t: Tensor, cond: Any) -> Tensor:
        out = self.unet(z_t, t.to(self.device), class_labels=cond).sample
        return to_epsilon(out, z_t, self._alpha_bar(t), self.prediction_type)


class StableDiffusionBackbone(_Base):
    """Latent text-to-image model from diffusers components (SD 1.x / 2.x).

    Classifier-free guidance runs cond and uncond in one batched UNet pass;
    ``decode`` is the VAE decoder, differentiable so guides on the image reach z_t.
    """

    is_latent = True

    def __init__(
        self,
        unet: nn.Module,
        vae: nn.Module,
        text_encoder: nn.Module,
        tokenizer: Any,
        scheduler: Any,
        height: int | None = None,
        width: int | None = None,
        device: torch.device | str | None = None,
    ):
        self.unet, self.vae, self.text_encoder, self.tokenizer, self.scheduler = unet, vae, text_encoder, tokenizer, scheduler
        self.prediction_type = scheduler.config.get("prediction_type", "epsilon")
        self.device = torch.device(device) if device is not None else next(unet.parameters()).device
        for m in (unet, vae, text_encoder):
            m.to(self.device)
        _frozen(unet, vae, text_encoder)
        self.vae_factor = 2 ** (len(vae.config.block_out_channels) - 1)
        size = unet.config.sample_size
        default = size if isinstance(size, int) else size[0]
        h = (height // self.vae_factor) if height else default
        w = (width // self.vae_factor) if width else default
        self.sample_shape = (unet.config.in_channels, h, w)

    @classmethod
    def from_pipeline(cls, pipe: Any, **kwargs: Any) -> "StableDiffusionBackbone":
        """From a ``StableDiffusionPipeline`` the user already holds."""
        return cls(pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer, pipe.scheduler, **kwargs)

    @classmethod
    def from_pretrained(cls, path: str, **kwargs: Any) -> "StableDiffusionBackbone":
        """Load an SD pipeline id or local folder (local cache only when offline)."""
        from diffusers import DDIMScheduler, StableDiffusionPipeline

        with _loading(path):
            pipe = StableDiffusionPipeline.from_pretrained(path, safety_checker=None, requires_safety_checker=False)
        pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
        return cls.from_pipeline(pipe, **kwargs)

    def _encode(self, texts: list[str]) -> Tensor:
        ids = self.tokenizer(
            texts, padding="max_length", max_length=self.tokenizer.model_max_length, truncation=True, return_tensors="pt"
        ).input_ids.to(self.device)
        with torch.no_grad():
            return self.text_encoder(ids)[0]

    def condition(self, prompt: Any, negative_prompt: Any, batch_size: int, cfg_scale: float) -> Any:
        texts = _as_list(prompt or "", batch_size)
        cond = self._encode(texts)
        if cfg_scale is None or cfg_scale <= 1.0:
            return dict(embeds=cond, scale=None)
        uncond = self._encode(_as_list(negative_prompt or "", batch_size))
        return dict(embeds=torch.cat([uncond, cond]), scale=float(cfg_scale))

    def eps(self, z_t: Tensor, t: Tensor, cond: Any) -> Tensor:
        embeds, scale = cond["embeds"], cond["scale"]
        n = z_t.shape[0]
        if embeds.shape[0] != n * (2 if scale else 1):  # a sub-batch of the run
            raise ValueError("conditioning batch does not match z_t")
        z_in = torch.cat([z_t, z_t]) if scale else z_t
        t_in = torch.cat([t, t]) if scale else t
        out = self.unet(z_in, t_in, encoder_hidden_states=embeds).sample
        out = to_epsilon(out, z_in, self._alpha_bar(t_in), self.prediction_type)
        if scale:
            e_u, e_c = out.chunk(2)
            return e_u + scale * (e_c - e_u)
        return out

    def decode(self, z: Tensor) -> Tensor:
        return self.vae.decode(z / self.vae.config.scaling_factor).sample


def _as_list(x: Any, n: int) -> list[str]:
    if isinstance(x, str):
        return [x] * n
    x = list(x)
    if len(x) != n:
        raise UgdError(f"{len(x)} prompts given for {n} images; give one prompt or one per image")
    return x


def _unet_subfolder(path: str) -> str | None:
    from pathlib import Path

    p = Path(path)
    return "unet" if p.is_dir() and (p / "unet").is_dir() else None


class _loading:
    """Turn a missing-weights failure into one UgdError naming the model, where it looked and the fix."""

    def __init__(self, model: str):
        self.model = model

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        if exc is None or isinstance(exc, UgdError):
            return False
        if isinstance(exc, (OSError, ValueError, EnvironmentError)):
            raise UgdError(missing_weights_message(self.model, "the Hugging Face cache", "model=/path/to/folder")) from None
        return False


def missing_weights_message(model: str, looked_in: str, option: str) -> str:
    """The one-line 'weights not found' message every loader uses."""
    import os

    offline = os.environ.get("HF_HUB_OFFLINE") == "1"
    where = looked_in
    if looked_in == "the Hugging Face cache":
        from huggingface_hub.constants import HF_HUB_CACHE

        where = f"the Hugging Face cache ({HF_HUB_CACHE})"
    state = "offline and " if offline else ""
    return f"weights for {model!r} not found ({state}looked in {where}); download them once online or point to a local copy with {option}"
