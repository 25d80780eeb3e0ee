"""Tiny random-weight Stable Diffusion pipelines for tests and offline demos (no download, seconds on a CPU).

``tiny_stable_diffusion(kind=...)`` builds the real diffusers/transformers component classes of
Stable Diffusion 1.x, 2.x (v-prediction) or SDXL from small configs, with byte-level CLIP
tokenizers built in memory, so the latent path (text, CFG, VAE decode) runs end to end offline.
``save_tiny_stable_diffusion(path, kind=...)`` writes it as a pipeline folder that
``--backbone stable-diffusion:model=PATH`` loads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ugd_kit.testing import tiny_clip_tokenizer

from .backbone import StableDiffusionBackbone


def _tiny_text_encoder(tokenizer: Any, with_projection: bool = False, hidden_act: str = "quick_gelu") -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=len(tokenizer.get_vocab()),
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        hidden_act=hidden_act,
        projection_dim=32,
        max_position_embeddings=tokenizer.model_max_length,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return CLIPTextModelWithProjection(config) if with_projection else CLIPTextModel(config)


def _tiny_vae(**extra: Any) -> Any:
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(16, 32),
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        norm_num_groups=8,
        sample_size=16,
        **extra,
    )


def _tiny_unet(**extra: Any) -> Any:
    """The tiny latent UNet (8x8 latents, two blocks) shared by the SD and SDXL variants."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8, **extra
    )


def _sd_scheduler(**extra: Any) -> Any:
    from diffusers import DDIMScheduler

    # the scheduler settings every SD / SDXL release ships (scheduler_config.json)
    return DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False, set_alpha_to_one=False, steps_offset=1, **extra)


def tiny_stable_diffusion_components(seed: int = 0, v_prediction: bool = False) -> dict[str, Any]:
    """unet, vae, text_encoder, tokenizer, scheduler of a ~0.3M-parameter SD (16x16 images).

    ``v_prediction=True`` gives the SD 2.x variant: v-prediction scheduler, linear-projection
    attention with per-block head dims, upcast attention and a GELU text encoder, as in
    stabilityai/stable-diffusion-2-1's configs.
    """
    torch.manual_seed(seed)
    tokenizer = tiny_clip_tokenizer()
    sd2 = dict(use_linear_projection=True, attention_head_dim=(2, 4), upcast_attention=True) if v_prediction else dict(attention_head_dim=4)
    unet = _tiny_unet(
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        **sd2,
    )
    vae = _tiny_vae()
    text_encoder = _tiny_text_encoder(tokenizer, hidden_act="gelu" if v_prediction else "quick_gelu")
    scheduler = _sd_scheduler(prediction_type="v_prediction" if v_prediction else "epsilon")
    return dict(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler)


def tiny_stable_diffusion_xl_components(seed: int = 0) -> dict[str, Any]:
    """The components of a ~0.5M-parameter SDXL (16x16 images): two text encoders (the second
    with projection: pooled embeddings), a ``text_time`` UNet (size conditioning), as in
    stabilityai/stable-diffusion-xl-base-1.0's configs with small widths."""
    torch.manual_seed(seed)
    tokenizer, tokenizer_2 = tiny_clip_tokenizer(), tiny_clip_tokenizer()
    time_dim = 8
    unet = _tiny_unet(
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        transformer_layers_per_block=(1, 2),
        addition_embed_type="text_time",
        addition_time_embed_dim=time_dim,
        projection_class_embeddings_input_dim=6 * time_dim + 32,  # six size numbers + the pooled text embedding
        cross_attention_dim=64,  # both encoders' hidden states, concatenated
    )
    return dict(
        unet=unet,
        vae=_tiny_vae(force_upcast=True),
        text_encoder=_tiny_text_encoder(tokenizer),
        text_encoder_2=_tiny_text_encoder(tokenizer_2, with_projection=True, hidden_act="gelu"),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        scheduler=_sd_scheduler(),
    )


def tiny_stable_diffusion(seed: int = 0, device: str = "cpu", kind: str = "sd") -> StableDiffusionBackbone:
    """The tiny SD as a ugd backbone; ``kind`` is sd (1.x), sd2 (v-prediction) or sdxl."""
    return StableDiffusionBackbone.from_pipeline(tiny_stable_diffusion_pipeline(seed, kind), device=device)


def tiny_stable_diffusion_pipeline(seed: int = 0, kind: str = "sd") -> Any:
    """The tiny SD as the diffusers pipeline users hold: ``StableDiffusionPipeline`` (kind sd, sd2)
    or ``StableDiffusionXLPipeline`` (kind sdxl)."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    if kind == "sdxl":
        return StableDiffusionXLPipeline(**tiny_stable_diffusion_xl_components(seed))
    if kind not in ("sd", "sd2"):
        raise ValueError(f"kind={kind!r}: use sd, sd2 or sdxl")
    c = tiny_stable_diffusion_components(seed, v_prediction=kind == "sd2")
    return StableDiffusionPipeline(**c, safety_checker=None, feature_extractor=None, requires_safety_checker=False)


def save_tiny_stable_diffusion(path: str | Path, seed: int = 0, kind: str = "sd") -> Path:
    """Write the tiny SD (kind sd, sd2 or sdxl) as a diffusers pipeline folder."""
    tiny_stable_diffusion_pipeline(seed, kind).save_pretrained(str(path))
    return Path(path)


# ----------------------------------------------------------------------------------------- flow transformers


def _tiny_t5(tokenizer: Any, d_model: int) -> Any:
    """A 1-layer T5 encoder from its config (the tokenizer is the byte-level CLIP one: no T5 vocabulary ships offline)."""
    from transformers import T5Config, T5EncoderModel

    config = T5Config(vocab_size=len(tokenizer.get_vocab()), d_model=d_model, d_kv=8, d_ff=37, num_layers=1, num_heads=4,
                      relative_attention_num_buckets=8, pad_token_id=tokenizer.pad_token_id)
    return T5EncoderModel(config)


def _flow_scheduler(**extra: Any) -> Any:
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(**extra)


def tiny_sd3_pipeline(seed: int = 0, t5: bool = True, dynamic_shift: bool = False) -> Any:
    """A ~0.3M-parameter ``StableDiffusion3Pipeline`` (16x16 images): an MMDiT with one joint block, two CLIP
    encoders with projection and (``t5``) a T5 encoder, a VAE with SD3's scaling and shift factors; the
    scheduler shifts by 3.0 (SD3) or, with ``dynamic_shift``, by mu from the sequence length (SD3.5-style)."""
    from diffusers import SD3Transformer2DModel, StableDiffusion3Pipeline

    torch.manual_seed(seed)
    tok, tok2, tok3 = tiny_clip_tokenizer(), tiny_clip_tokenizer(), tiny_clip_tokenizer()
    transformer = SD3Transformer2DModel(sample_size=8, patch_size=1, in_channels=4, num_layers=1, attention_head_dim=8,
                                        num_attention_heads=4, joint_attention_dim=64, caption_projection_dim=32,
                                        pooled_projection_dim=64, out_channels=4, pos_embed_max_size=16)
    sched = _flow_scheduler(shift=3.0, use_dynamic_shifting=dynamic_shift, base_image_seq_len=16, max_image_seq_len=256) if dynamic_shift else _flow_scheduler(shift=3.0)
    return StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=sched,
        vae=_tiny_vae(scaling_factor=1.5305, shift_factor=0.0609, use_quant_conv=False, use_post_quant_conv=False),
        text_encoder=_tiny_text_encoder(tok, with_projection=True),
        tokenizer=tok,
        text_encoder_2=_tiny_text_encoder(tok2, with_projection=True),
        tokenizer_2=tok2,
        text_encoder_3=_tiny_t5(tok3, 64) if t5 else None,
        tokenizer_3=tok3 if t5 else None,
    )


def tiny_flux_pipeline(seed: int = 0, guidance_embeds: bool = True) -> Any:
    """A ~0.2M-parameter ``FluxPipeline`` (16x16 images, 4x4 packed tokens): one double and one single block,
    CLIP (pooled) + T5 text, FLUX's VAE factors; ``guidance_embeds`` True = FLUX.1-dev, False = schnell."""
    from diffusers import FluxPipeline, FluxTransformer2DModel

    torch.manual_seed(seed)
    tok, tok2 = tiny_clip_tokenizer(), tiny_clip_tokenizer()
    transformer = FluxTransformer2DModel(patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
                                         num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32,
                                         guidance_embeds=guidance_embeds, axes_dims_rope=(4, 4, 8))
    sched = _flow_scheduler(shift=3.0, use_dynamic_shifting=True, base_image_seq_len=4, max_image_seq_len=64, base_shift=0.5, max_shift=1.15)
    return FluxPipeline(
        transformer=transformer,
        scheduler=sched,
        vae=_tiny_vae(scaling_factor=0.3611, shift_factor=0.1159, use_quant_conv=False, use_post_quant_conv=False),
        text_encoder=_tiny_text_encoder(tok),
        tokenizer=tok,
        text_encoder_2=_tiny_t5(tok2, 32),
        tokenizer_2=tok2,
    )


def save_tiny_flow_pipeline(path: str | Path, kind: str = "flux", seed: int = 0) -> Path:
    """Write a tiny flow pipeline folder: kind flux (FLUX.1-dev-like), flux-schnell, sd3 or sd3-no-t5."""
    makers = {"flux": lambda: tiny_flux_pipeline(seed), "flux-schnell": lambda: tiny_flux_pipeline(seed, guidance_embeds=False),
              "sd3": lambda: tiny_sd3_pipeline(seed), "sd3-no-t5": lambda: tiny_sd3_pipeline(seed, t5=False)}
    if kind not in makers:
        raise ValueError(f"kind={kind!r}: use {', '.join(makers)}")
    makers[kind]().save_pretrained(str(path))
    return Path(path)
