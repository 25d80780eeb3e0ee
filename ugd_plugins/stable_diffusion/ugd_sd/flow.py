"""Stable Diffusion 3 / 3.5 and FLUX.1 as ugd backbones: rectified-flow transformers seen as eps-predictors
through ``ugd_kit.flow`` (x = s z, eps = x + (1 - sigma) v), so every preset guides them with the one sampler.

Everything model-specific is diffusers' own code, called on the pipeline the user holds: prompt encoding
(``encode_prompt``), FLUX's latent packing and image ids (``FluxPipeline._pack_latents``,
``_unpack_latents``, ``_prepare_latent_image_ids``), the resolution shift ``mu`` (``calculate_shift``) and
the sigmas (``FlowMatchEulerDiscreteScheduler.set_timesteps``). What is written here is the glue diffusers
has no function for: the denoiser call of one step (the body of the pipelines' loops) and the VAE decode
with its scaling and shift factors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ugd_core.backbones import DTYPES, at_least_fp32, loading_weights, module_dtype
from ugd_core.errors import UgdError
from ugd_core.guidance import freeze
from ugd_kit.flow import FlowBackbone, FlowSchedule

from .backbone import _as_list


@dataclass
class FlowTextCondition:
    """Encoded once per run. With classifier-free guidance (``scale`` set, SD3) the unconditional rows come first."""

    embeds: Tensor
    pooled: Tensor
    scale: float | None = None
    text_ids: Tensor | None = None  # FLUX
    guidance: Tensor | None = None  # FLUX.1-dev's distilled guidance embedding


class _FlowPipelineBackbone(FlowBackbone):
    """What SD3 and FLUX share: the pipeline's components, sizes, text encoding with offload, VAE decode."""

    is_latent = True
    pipeline_prefix = ""  # the model_index.json class name this backbone loads
    packing = 1  # FLUX packs 2x2 latent patches: sizes must divide by vae_factor * 2

    def __init__(self, pipe: Any, height: int | None = None, width: int | None = None, device: torch.device | str | None = None,
                 max_sequence_length: int | None = None, offload_text: bool | None = None):
        self.pipe = pipe
        self.transformer, self.vae = pipe.transformer, pipe.vae
        self.device = torch.device(device) if device is not None else next(self.transformer.parameters()).device
        # text encoders run once per run (condition) and wait on the CPU otherwise (GPU memory for the transformer)
        self.offload_text = self.device.type != "cpu" if offload_text is None else offload_text
        self.vae_factor = int(pipe.vae_scale_factor)
        unit = self.vae_factor * self.packing * self._patch()
        default = int(pipe.default_sample_size) * self.vae_factor
        for name, px in (("height", height), ("width", width)):
            if px and px % unit:
                raise UgdError(f"{name}={px} is not a multiple of {unit} (the VAE's downsampling x the latent patch); use {px // unit * unit or unit} or {px // unit * unit + unit}")
        self.height, self.width = height or default, width or default
        self.max_sequence_length = max_sequence_length
        h, w = self.height // self.vae_factor, self.width // self.vae_factor
        self.sample_shape = (self._latent_channels(), h, w)
        self._latent_scale = float(self.vae.config.scaling_factor)
        shift = self.vae.config.get("shift_factor")
        self._latent_shift = float(shift) if shift is not None else 0.0
        from diffusers import FlowMatchEulerDiscreteScheduler

        sched = FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config)
        super().__init__(None, FlowSchedule(sched, self._timestep_kwargs), self.sample_shape, device=self.device)
        self.is_latent = True
        self._place()

    # --- sizes and schedule -------------------------------------------------------------------------------
    def _patch(self) -> int:
        return 1

    def _latent_channels(self) -> int:
        raise NotImplementedError

    def image_seq_len(self) -> int:
        raise NotImplementedError

    def mu(self) -> float:
        """The resolution-dependent shift, as the model's diffusers pipeline computes it (``calculate_shift``)."""
        from diffusers.pipelines.flux.pipeline_flux import calculate_shift

        c = self.scheduler.config
        return calculate_shift(self.image_seq_len(), c.get("base_image_seq_len", 256), c.get("max_image_seq_len", 4096),
                               c.get("base_shift", 0.5), c.get("max_shift", self._default_max_shift))

    _default_max_shift = 1.15

    def _timestep_kwargs(self, n: int) -> dict[str, Any]:
        raise NotImplementedError

    # --- modules ------------------------------------------------------------------------------------------
    def _text_modules(self) -> dict[str, nn.Module]:
        names = ("text", "text_2", "text_3")
        encs = [getattr(self.pipe, a, None) for a in ("text_encoder", "text_encoder_2", "text_encoder_3")]
        return {n: e for n, e in zip(names, encs) if e is not None}

    def _modules(self) -> dict[str, nn.Module]:
        return {"denoiser": self.transformer, "vae": self.vae, **self._text_modules()}

    def _place(self) -> None:
        text = self._text_modules()
        for role, m in self._modules().items():
            m.to("cpu" if role in text and self.offload_text else self.device)
        freeze(*self._modules().values())
        self._attn_processors = dict(self.transformer.attn_processors) if hasattr(self.transformer, "attn_processors") else {}

    def _encode(self, fn: Any, **kwargs: Any) -> Any:
        """Run the pipeline's ``encode_prompt`` with its text encoders on the device, then send them back to the CPU."""
        text = list(self._text_modules().values())
        if self.offload_text:
            for m in text:
                m.to(self.device)
        try:
            with torch.no_grad():
                return fn(device=self.device, **kwargs)
        finally:
            if self.offload_text:
                for m in text:
                    m.to("cpu")

    def decode(self, z: Tensor) -> Tensor:
        z = z / self._latent_scale + self._latent_shift
        return at_least_fp32(self.vae.decode(z.to(module_dtype(self.vae)), return_dict=False)[0])

    # --- loading ------------------------------------------------------------------------------------------
    @classmethod
    def from_pipeline(cls, pipe: Any, **kwargs: Any) -> "_FlowPipelineBackbone":
        """From the diffusers pipeline the user holds, in whatever dtype it was loaded."""
        return cls(pipe, **kwargs)

    @classmethod
    def from_pretrained(cls, path: str, dtype: str | torch.dtype | None = None, t5: bool = True, **kwargs: Any) -> "_FlowPipelineBackbone":
        """A pipeline folder or Hub id (the local cache only when offline); ``dtype`` loads the weights in
        fp32/fp16/bf16. ``t5=False`` skips SD3's T5 encoder (diffusers then feeds zeros in its place)."""
        import diffusers

        if isinstance(dtype, str) and dtype not in DTYPES:
            raise UgdError(f"dtype={dtype!r} is not one of {', '.join(DTYPES)}")
        torch_dtype = DTYPES[dtype] if isinstance(dtype, str) else dtype
        with loading_weights(path):
            index = diffusers.DiffusionPipeline.load_config(path, local_files_only=True)  # never downloads
            kind = str(index.get("_class_name", ""))
            if not kind.startswith(cls.pipeline_prefix):
                raise UgdError(f"{path!r} holds a {kind or 'non-pipeline'} folder; this backbone loads {cls.pipeline_prefix}* pipeline folders")
            # components saved as None (an SD3 folder without T5), and T5 when t5=False, are passed as None
            absent = {k: None for k, v in index.items() if isinstance(v, (list, tuple)) and all(x is None for x in v)}
            if not t5 and "text_encoder_3" in index:
                absent.update(text_encoder_3=None, tokenizer_3=None)
            pipe = diffusers.DiffusionPipeline.from_pretrained(path, torch_dtype=torch_dtype, local_files_only=True, **absent)
        return cls.from_pipeline(pipe, **kwargs)


class StableDiffusion3Backbone(_FlowPipelineBackbone):
    """SD3 / SD3.5 (MMDiT): three text encoders (T5 optional: a pipeline without ``text_encoder_3`` feeds
    zeros, as diffusers does), classifier-free guidance in one batched transformer pass."""

    pipeline_prefix = "StableDiffusion3"
    _default_max_shift = 1.16  # StableDiffusion3Pipeline's default (FLUX's is 1.15)

    def _patch(self) -> int:
        return int(self.pipe.transformer.config.patch_size)

    def _latent_channels(self) -> int:
        return int(self.pipe.transformer.config.in_channels)

    def image_seq_len(self) -> int:
        p = self._patch()
        return (self.sample_shape[1] // p) * (self.sample_shape[2] // p)

    def _timestep_kwargs(self, n: int) -> dict[str, Any]:
        # StableDiffusion3Pipeline.__call__: default sigmas, mu only under use_dynamic_shifting (SD3.5)
        return {"num_inference_steps": n, **({"mu": self.mu()} if self.scheduler.config.get("use_dynamic_shifting") else {})}

    def condition(self, prompt: Any, negative_prompt: Any, batch_size: int, cfg_scale: float) -> FlowTextCondition:
        cfg = cfg_scale is not None and cfg_scale > 1.0
        prompts = _as_list(prompt or "", batch_size)
        negatives = _as_list(negative_prompt or "", batch_size) if cfg else None
        kwargs = {"max_sequence_length": self.max_sequence_length} if self.max_sequence_length else {}
        pe, npe, ppe, nppe = self._encode(self.pipe.encode_prompt, prompt=prompts, prompt_2=None, prompt_3=None,
                                          do_classifier_free_guidance=cfg, negative_prompt=negatives, **kwargs)
        dtype = module_dtype(self.transformer)
        if cfg:
            pe, ppe = torch.cat([npe, pe]), torch.cat([nppe, ppe])
        return FlowTextCondition(pe.to(dtype), ppe.to(dtype), float(cfg_scale) if cfg else None)

    def velocity(self, x: Tensor, t: Tensor, cond: FlowTextCondition) -> Tensor:
        cfg = cond.scale is not None
        if cond.embeds.shape[0] != x.shape[0] * (2 if cfg else 1):
            raise ValueError("conditioning batch does not match z_t")
        h, t = x.to(module_dtype(self.transformer)), t.to(self.device)
        if cfg:
            h, t = torch.cat([h, h]), torch.cat([t, t])
        v = self.transformer(hidden_states=h, timestep=t, encoder_hidden_states=cond.embeds, pooled_projections=cond.pooled, return_dict=False)[0]
        if cfg:  # StableDiffusion3Pipeline: uncond + scale * (cond - uncond), on v (eps is affine in v at fixed x)
            v_u, v_c = v.chunk(2)
            v = v_u + cond.scale * (v_c - v_u)
        return v


class FluxBackbone(_FlowPipelineBackbone):
    """FLUX.1: packed 2x2 latent patches with image ids, T5 + CLIP text, the shift mu from the image's sequence
    length. FLUX.1-dev takes ``guidance`` as its distilled guidance embedding (no CFG batch: ``cfg_scale`` is
    not used); FLUX.1-schnell has none."""

    pipeline_prefix = "Flux"
    packing = 2

    def __init__(self, pipe: Any, guidance: float = 3.5, **kwargs: Any):
        self.guidance = float(guidance)
        super().__init__(pipe, **kwargs)

    def _latent_channels(self) -> int:
        return int(self.pipe.transformer.config.in_channels) // 4

    def image_seq_len(self) -> int:
        return (self.sample_shape[1] // 2) * (self.sample_shape[2] // 2)

    def _timestep_kwargs(self, n: int) -> dict[str, Any]:
        # FluxPipeline.__call__: sigmas linspace(1, 1/n, n) (none with use_flow_sigmas) and mu from the sequence length
        use_flow_sigmas = self.scheduler.config.get("use_flow_sigmas", False)
        sigmas = None if use_flow_sigmas else np.linspace(1.0, 1 / n, n)
        return {"num_inference_steps": n, "sigmas": sigmas, "mu": self.mu()}

    def condition(self, prompt: Any, negative_prompt: Any, batch_size: int, cfg_scale: float) -> FlowTextCondition:
        if negative_prompt not in (None, ""):  # it would be ignored, and the record would name it
            raise UgdError("flux takes no negative prompt: FLUX.1 runs no classifier-free guidance batch; drop --negative-prompt "
                           "(FLUX.1-dev's guidance strength is the backbone's guidance=)")
        prompts = _as_list(prompt or "", batch_size)
        kwargs = {"max_sequence_length": self.max_sequence_length} if self.max_sequence_length else {}
        pe, ppe, text_ids = self._encode(self.pipe.encode_prompt, prompt=prompts, prompt_2=None, **kwargs)
        dtype = module_dtype(self.transformer)
        guidance = None
        if self.transformer.config.guidance_embeds:
            guidance = torch.full((batch_size,), self.guidance, device=self.device, dtype=torch.float32)
        return FlowTextCondition(pe.to(dtype), ppe.to(dtype), None, text_ids.to(self.device), guidance)

    def velocity(self, x: Tensor, t: Tensor, cond: FlowTextCondition) -> Tensor:
        if cond.embeds.shape[0] != x.shape[0]:
            raise ValueError("conditioning batch does not match z_t")
        dtype = module_dtype(self.transformer)
        n, c, h, w = x.shape
        packed = self.pipe._pack_latents(x.to(dtype), n, c, h, w)
        img_ids = self.pipe._prepare_latent_image_ids(n, h // 2, w // 2, self.device, dtype)
        v = self.transformer(hidden_states=packed, timestep=t.to(self.device, dtype) / 1000, guidance=cond.guidance,
                             pooled_projections=cond.pooled, encoder_hidden_states=cond.embeds, txt_ids=cond.text_ids,
                             img_ids=img_ids, return_dict=False)[0]
        return self.pipe._unpack_latents(v, h * self.vae_factor, w * self.vae_factor, self.vae_factor)
