"""Stable Diffusion 1.x / 2.x / XL as ugd backbones: latent, text-conditioned, classifier-free
guidance in one batched UNet pass, and a differentiable VAE decode so that guides on the image
reach z_t. Built from the diffusers components users hold (:meth:`StableDiffusionBackbone.from_pipeline`)
or a pipeline folder / Hub id (:meth:`StableDiffusionBackbone.from_pretrained`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from ugd_core.backbones import DTYPES, BackboneBase, at_least_fp32, cast_module, loading_weights, module_dtype
from ugd_core.errors import UgdError


@dataclass
class TextCondition:
    """A text backbone's conditioning for one run, encoded once.

    With classifier-free guidance (``scale`` set) every tensor holds the unconditional rows first,
    then the conditional ones; ``added`` holds extra UNet inputs (SDXL's pooled text embeddings and
    size conditioning), batched like ``embeds``.
    """

    embeds: Tensor
    scale: float | None
    added: dict[str, Tensor] = field(default_factory=dict)


# the model_index.json class names this backbone loads (text-to-image SD 1.x/2.x and SDXL)
TEXT_TO_IMAGE = ("StableDiffusionPipeline", "StableDiffusionXLPipeline")


class StableDiffusionBackbone(BackboneBase):
    """Latent text-to-image model from diffusers components: Stable Diffusion 1.x and 2.x
    (epsilon- or v-prediction); :meth:`from_pipeline` / :meth:`from_pretrained` return a
    :class:`StableDiffusionXLBackbone` for SDXL pipelines.

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
        self._freeze_and_place()
        self.vae_factor = 2 ** (len(vae.config.block_out_channels) - 1)
        self._latent_scale = float(vae.config.scaling_factor)
        shift = vae.config.get("shift_factor")
        self._latent_shift = float(shift) if shift is not None else 0.0
        for name, px in (("height", height), ("width", width)):
            if px and px % self.vae_factor:
                f = self.vae_factor
                raise UgdError(f"{name}={px} is not a multiple of {f} (the VAE's downsampling); use {px // f * f} or {px // f * f + f}")
        size = unet.config.sample_size  # an int, or (height, width) as diffusers' pipelines read it
        default_h, default_w = (size, size) if isinstance(size, int) else (size[0], size[1])
        h = (height // self.vae_factor) if height else default_h
        w = (width // self.vae_factor) if width else default_w
        self.sample_shape = (unet.config.in_channels, h, w)

    def _modules(self) -> dict[str, nn.Module]:
        return {"denoiser": self.unet, "vae": self.vae, "text": self.text_encoder}

    @classmethod
    def from_pipeline(cls, pipe: Any, **kwargs: Any) -> "StableDiffusionBackbone":
        """From the ``StableDiffusionPipeline`` or ``StableDiffusionXLPipeline`` the user holds, in
        whatever dtype it was loaded (its scheduler's config is reused for DDIM sampling)."""
        from diffusers import DDIMScheduler

        scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
        if getattr(pipe, "text_encoder_2", None) is not None:
            return StableDiffusionXLBackbone(
                pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer, scheduler, text_encoder_2=pipe.text_encoder_2,
                tokenizer_2=pipe.tokenizer_2, force_zeros_for_empty_prompt=pipe.config.get("force_zeros_for_empty_prompt", True), **kwargs,
            )
        if cls is StableDiffusionXLBackbone:
            raise UgdError(f"{type(pipe).__name__} has no second text encoder; use StableDiffusionBackbone (backbone stable-diffusion) for SD 1.x/2.x")
        return StableDiffusionBackbone(pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer, scheduler, **kwargs)

    @classmethod
    def from_pretrained(cls, path: str, dtype: str | torch.dtype | None = None, **kwargs: Any) -> "StableDiffusionBackbone":
        """Load an SD 1.x / 2.x / SDXL pipeline id or local folder (local cache only when offline).

        The pipeline class comes from the folder's ``model_index.json``; ``dtype`` (fp32, fp16,
        bf16 or a torch dtype) loads the weights in that precision.
        """
        import diffusers

        if isinstance(dtype, str) and dtype not in DTYPES:
            raise UgdError(f"dtype={dtype!r} is not one of {', '.join(DTYPES)}")
        torch_dtype = DTYPES[dtype] if isinstance(dtype, str) else dtype
        with loading_weights(path):
            kind = str(diffusers.DiffusionPipeline.load_config(path, local_files_only=True).get("_class_name", ""))  # never downloads
            from .flow import FluxBackbone, StableDiffusion3Backbone  # the flow backbones name the pipelines they load

            routes = {StableDiffusion3Backbone.pipeline_prefix: "stable-diffusion-3", FluxBackbone.pipeline_prefix: "flux"}
            other = [name for prefix, name in routes.items() if kind.startswith(prefix)]
            if other or kind not in TEXT_TO_IMAGE:
                # inpainting, upscaling and img2img / refiner folders hold UNets of other inputs or lack a text encoder
                use = f"; load it with --backbone {other[0]}:model=PATH" if other else (
                    "; give a text-to-image pipeline's folder" if kind.startswith("StableDiffusion") else "")
                raise UgdError(f"{path!r} holds a {kind or 'non-pipeline'} folder; the stable-diffusion backbone loads StableDiffusionPipeline "
                               f"and StableDiffusionXLPipeline folders{use}")
            xl = kind == "StableDiffusionXLPipeline"
            if cls is StableDiffusionXLBackbone and not xl:  # before loading any weights
                raise UgdError(f"{path!r} is a {kind} (SD 1.x/2.x), not SDXL; use the stable-diffusion backbone")
            no_checker = {} if xl else dict(safety_checker=None, requires_safety_checker=False)
            pipeline = diffusers.StableDiffusionXLPipeline if xl else diffusers.StableDiffusionPipeline
            pipe = pipeline.from_pretrained(path, torch_dtype=torch_dtype, local_files_only=True, **no_checker)
        return cls.from_pipeline(pipe, **kwargs)

    def _tokens(self, tokenizer: Any, texts: list[str]) -> Tensor:
        return tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt").input_ids.to(self.device)

    def _encode(self, texts: list[str]) -> tuple[Tensor, dict[str, Tensor]]:
        """Text embeddings and extra UNet inputs for ``texts`` (SD 1.x/2.x: the encoder's last hidden state)."""
        with torch.no_grad():
            return self.text_encoder(self._tokens(self.tokenizer, texts))[0], {}

    def _unconditional(self, negative_prompt: Any, batch_size: int) -> tuple[Tensor, dict[str, Tensor]]:
        return self._encode(_as_list(negative_prompt or "", batch_size))

    def condition(self, prompt: Any, negative_prompt: Any, batch_size: int, cfg_scale: float) -> TextCondition:
        dtype = module_dtype(self.unet)
        embeds, added = self._encode(_as_list(prompt or "", batch_size))
        scale = float(cfg_scale) if cfg_scale is not None and cfg_scale > 1.0 else None
        if scale is not None:
            u_embeds, u_added = self._unconditional(negative_prompt, batch_size)
            embeds = torch.cat([u_embeds, embeds])
            added = {k: torch.cat([u_added[k], v]) for k, v in added.items()}
        return TextCondition(embeds.to(dtype), scale, {k: v.to(dtype) for k, v in added.items()})

    def eps(self, z_t: Tensor, t: Tensor, cond: TextCondition) -> Tensor:
        cfg = cond.scale is not None
        if cond.embeds.shape[0] != z_t.shape[0] * (2 if cfg else 1):  # a sub-batch of the run
            raise ValueError("conditioning batch does not match z_t")
        z, t = z_t.to(module_dtype(self.unet)), t.to(self.device)
        if cfg:
            z, t = torch.cat([z, z]), torch.cat([t, t])
        out = self.unet(z, t, encoder_hidden_states=cond.embeds, added_cond_kwargs=cond.added or None, return_dict=False)[0]
        if cfg:
            # CFG on the raw output: every output -> eps conversion is affine with the same z_t, so
            # this equals CFG on eps (and converts half the rows)
            out_u, out_c = out.chunk(2)
            out = out_u + cond.scale * (out_c - out_u)
        return self._to_eps(out, z_t, t[: z_t.shape[0]])

    def decode(self, z: Tensor) -> Tensor:
        z = z / self._latent_scale + self._latent_shift if self._latent_shift else z / self._latent_scale
        return at_least_fp32(self.vae.decode(z.to(module_dtype(self.vae)), return_dict=False)[0])


class StableDiffusionXLBackbone(StableDiffusionBackbone):
    """SDXL: two CLIP text encoders (penultimate hidden states concatenated), the second one's
    pooled projection and the size conditioning ``add_time_ids`` as extra UNet inputs, as in
    diffusers' ``StableDiffusionXLPipeline.encode_prompt`` / ``_get_add_time_ids``."""

    def __init__(
        self,
        unet: nn.Module,
        vae: nn.Module,
        text_encoder: nn.Module,
        tokenizer: Any,
        scheduler: Any,
        text_encoder_2: nn.Module,
        tokenizer_2: Any,
        force_zeros_for_empty_prompt: bool = True,
        height: int | None = None,
        width: int | None = None,
        device: torch.device | str | None = None,
    ):
        self.text_encoder_2, self.tokenizer_2 = text_encoder_2, tokenizer_2
        self.force_zeros_for_empty_prompt = force_zeros_for_empty_prompt
        super().__init__(unet, vae, text_encoder, tokenizer, scheduler, height, width, device)

    def _modules(self) -> dict[str, nn.Module]:
        return {**super()._modules(), "text_2": self.text_encoder_2}

    def _upcast_vae(self) -> None:
        # the SDXL VAE overflows in fp16; diffusers' SDXL pipeline upcasts it when config.force_upcast
        if module_dtype(self.vae) == torch.float16 and self.vae.config.get("force_upcast", False):
            cast_module(self.vae, torch.float32)

    def _encode(self, texts: list[str]) -> tuple[Tensor, dict[str, Tensor]]:
        states, pooled = [], None
        with torch.no_grad():
            for tok, enc in ((self.tokenizer, self.text_encoder), (self.tokenizer_2, self.text_encoder_2)):
                out = enc(self._tokens(tok, texts), output_hidden_states=True)
                if out[0].ndim == 2:  # the projection model's pooled text embedding
                    pooled = out[0]
                states.append(out.hidden_states[-2])
        if pooled is None:
            raise UgdError("SDXL's second text encoder must be a CLIPTextModelWithProjection (pooled embeddings)")
        h, w = (s * self.vae_factor for s in self.sample_shape[1:])
        time_ids = torch.tensor([[h, w, 0, 0, h, w]], device=self.device, dtype=pooled.dtype).expand(len(texts), 6)
        return torch.cat(states, dim=-1), {"text_embeds": pooled, "time_ids": time_ids}

    def _unconditional(self, negative_prompt: Any, batch_size: int) -> tuple[Tensor, dict[str, Tensor]]:
        embeds, added = self._encode(_as_list(negative_prompt or "", batch_size))
        if negative_prompt is None and self.force_zeros_for_empty_prompt:
            return torch.zeros_like(embeds), {**added, "text_embeds": torch.zeros_like(added["text_embeds"])}
        return embeds, added


def _as_list(x: Any, n: int) -> list[str]:
    if isinstance(x, str):
        return [x] * n
    x = list(x)
    if len(x) != n:
        raise UgdError(f"{len(x)} prompts given for {n} images; give one prompt or one per image")
    return x
