"""The full-size configs of benchmarks/flow_cost.py (SD3.5-medium, FLUX.1-dev) build the published models: checked
on the meta device (shapes only, no memory, seconds); without CUDA, ``--size full`` refuses in one line."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "flow_cost.py"

# Parameters per module role of the released pipelines. SD3.5-medium: all five as printed for a pipeline loaded from
# the Hub snapshot b940f670f0eda2d07fbb75229e779da1ad11eb80 of stabilityai/stable-diffusion-3.5-medium (a public
# flow-GRPO training script); 2,243,171,520 also in a public SD3 quantization profile ("the real checkpoint"), and
# its safetensors' 2,469,663,936 elements = these + the 384^2 x 1536 position buffer. FLUX.1-dev: 11,901,408,320 is
# the Hub's safetensors total for black-forest-labs/FLUX.1-dev (listed by several public model catalogues;
# FLUX.1-schnell's 11,891,178,560 is it less the 10,229,760-parameter guidance embedder); its CLIP-L 123,060,480,
# T5-XXL 4,762,310,656 and VAE 83,819,683 are the counts public audits of the FLUX.1 files report.
SD35_MEDIUM = dict(denoiser=2_243_171_520, vae=83_819_683, text=123_650_304, text_2=694_659_840, text_3=4_762_310_656)
FLUX_DEV = dict(denoiser=11_901_408_320, vae=83_819_683, text=123_060_480, text_2=4_762_310_656)


@pytest.fixture(scope="module")
def flow_cost(load_benchmark):
    return load_benchmark("flow_cost")


def _vocab_fits(pipe, names):
    """Every tokenizer's ids lie inside its text encoder's vocabulary."""
    for tok, enc in names:
        assert max(getattr(pipe, tok).get_vocab().values()) < getattr(pipe, enc).config.vocab_size, (tok, enc)


def test_sd35_medium_full_size(flow_cost):
    bb = flow_cost.build("sd3", tiny=False, dtype=torch.bfloat16, device=torch.device("meta"))
    assert flow_cost.parameter_counts(bb) == SD35_MEDIUM
    t = bb.transformer
    assert type(bb.pipe).__name__ == "StableDiffusion3Pipeline" and next(t.parameters()).dtype == torch.bfloat16
    assert len(t.transformer_blocks) == 24 and t.config.num_attention_heads * t.config.attention_head_dim == 1536
    assert [i for i, b in enumerate(t.transformer_blocks) if b.use_dual_attention] == list(range(13))  # MMDiT-X
    assert t.pos_embed.pos_embed.shape == (1, 384 * 384, 1536) and t.config.qk_norm == "rms_norm"
    vae = bb.vae.config
    assert (vae.latent_channels, vae.scaling_factor, vae.shift_factor) == (16, 1.5305, 0.0609)
    assert not vae.use_quant_conv and not vae.use_post_quant_conv
    assert (bb.height, bb.width, bb.sample_shape, bb.image_seq_len()) == (1024, 1024, (16, 128, 128), 4096)
    sched = bb.scheduler.config
    assert sched.shift == 3.0 and not sched.use_dynamic_shifting
    assert bb.pipe.text_encoder_3.config.feed_forward_proj == "gated-gelu"
    _vocab_fits(bb.pipe, [("tokenizer", "text_encoder"), ("tokenizer_2", "text_encoder_2"), ("tokenizer_3", "text_encoder_3")])


def test_flux_dev_full_size(flow_cost):
    bb = flow_cost.build("flux", tiny=False, dtype=torch.bfloat16, device=torch.device("meta"))
    assert flow_cost.parameter_counts(bb) == FLUX_DEV
    t = bb.transformer
    assert type(bb.pipe).__name__ == "FluxPipeline" and next(t.parameters()).dtype == torch.bfloat16
    assert (len(t.transformer_blocks), len(t.single_transformer_blocks)) == (19, 38)
    assert t.inner_dim == 3072 and hasattr(t.time_text_embed, "guidance_embedder")  # FLUX.1-dev: guidance-distilled
    assert tuple(t.config.axes_dims_rope) == (16, 56, 56) and t.config.in_channels == 64
    vae = bb.vae.config
    assert (vae.latent_channels, vae.scaling_factor, vae.shift_factor) == (16, 0.3611, 0.1159)
    assert not vae.use_quant_conv and not vae.use_post_quant_conv
    assert (bb.height, bb.width, bb.sample_shape, bb.image_seq_len()) == (1024, 1024, (16, 128, 128), 4096)
    sched = bb.scheduler.config
    assert sched.use_dynamic_shifting and (sched.base_image_seq_len, sched.max_image_seq_len) == (256, 4096)
    assert bb.mu() == pytest.approx(1.15)  # 1024x1024 = 4096 packed tokens: the top of the shift line
    assert type(bb.pipe.text_encoder).__name__ == "CLIPTextModel"  # CLIP-L without projection
    _vocab_fits(bb.pipe, [("tokenizer", "text_encoder"), ("tokenizer_2", "text_encoder_2")])


def test_knobs_mode_uses_the_low_memory_presets_memory_knobs(flow_cost):
    from ugd_core.registry import load_registry

    low = load_registry([], entry_points=False).get("preset", "low-memory").settings
    memory = ("dtype", "grad_checkpointing", "vae_slicing", "vae_tiling", "attention_slicing", "channels_last")
    assert {k: v for k, v in low.items() if k in memory} == flow_cost.MEMORY_KNOBS
    assert flow_cost.MODES["forward+knobs"] == {**flow_cost.MODES["forward"], **flow_cost.MEMORY_KNOBS}


def test_full_size_without_cuda_refuses_in_one_line():
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, str(BENCH), "--size", "full", "--device", "cpu"], capture_output=True, text=True,
                       env=env, timeout=120)
    assert r.returncode == 2, r.stderr
    assert r.stdout == "" and "Traceback" not in r.stderr
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith("flow_cost: --size full") and "needs a CUDA device" in line


def test_mid_size_keeps_the_full_widths_with_fewer_layers(flow_cost):
    """--size mid (a CPU-sized proxy for the per-step share of ugd's bookkeeping): every block as in the release,
    fewer of them, a 128x128 image."""
    sd3 = flow_cost.build("sd3", tiny=False, dtype=torch.float32, device=torch.device("meta"), mid=True)
    t = sd3.transformer
    assert len(t.transformer_blocks) == 2 and t.config.num_attention_heads * t.config.attention_head_dim == 1536
    assert [b.use_dual_attention for b in t.transformer_blocks] == [True, True]  # SD3.5-medium's first two blocks
    assert (sd3.height, sd3.sample_shape) == (128, (16, 16, 16)) and sd3.pipe.text_encoder_3.config.d_model == 4096
    flux = flow_cost.build("flux", tiny=False, dtype=torch.float32, device=torch.device("meta"), mid=True)
    t = flux.transformer
    assert (len(t.transformer_blocks), len(t.single_transformer_blocks), t.inner_dim) == (1, 1, 3072)
    assert flux.height == 128 and flux.pipe.text_encoder_2.config.d_model == 4096
