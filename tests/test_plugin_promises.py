"""The registry, parameters, sampler settings, presets and model loaders do what README.md and docs/ promise:
parameter conversion and choices (docs/plugins.md, "Parameters"), PLUGIN:NAME lookups and UGD_LOAD_PLUGINS
(docs/plugins.md, "Names", "Testing a plugin"), the knobs' documented ranges (docs/algorithm.md), the presets'
documented values (docs/presets.md), half precision of Stable Diffusion XL (docs/backbones/stable-diffusion.md),
CLIP's pixel statistics and messages (docs/guides/clip.md), ADM's precision (docs/backbones/adm.md), and that
nothing is downloaded at run time, online or not (README.md). Offline, tiny random-weight models."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from ugd_core import Param, SamplerConfig, UgdError, load_preset_file, load_registry
from tests.test_registry import _plugin, two_plugin_registry
from ugd_kit.testing import tiny_clip
from ugd_core.config import resolve_preset




def _echo_registry(*params: Param, calls: list | None = None):
    """A registry with one guide 'echo' whose factory returns the values it received."""

    def factory(device="cpu", **values):
        if calls is not None:
            calls.append(values)
        return values

    def guides(register):
        register("echo", factory, description="returns its parameters", params=list(params))

    return load_registry([("echo_plugin", _plugin(ugd_register_guides=guides))], entry_points=False)


# ------------------------------------------------------------------------------------------------ parameters


@pytest.mark.parametrize("raw, value", [("true", True), ("false", False), ("yes", True), ("no", False), ("1", True), ("0", False)])
def test_a_bool_param_accepts_every_documented_spelling(raw, value):
    """docs/plugins.md: a bool arrives converted from true/false/yes/no/1/0."""
    reg = _echo_registry(Param("on", "bool", False, "a switch"))
    assert reg.build_from_spec("guide", f"echo:on={raw}") == {"on": value}


def test_a_path_param_arrives_as_a_str():
    """docs/plugins.md: a `path` arrives as a `str` (checking that the file exists is the factory's job)."""
    reg = _echo_registry(Param("image", "path", "", "a picture"))
    got = reg.build_from_spec("guide", "echo:image=/no/such/picture.png")["image"]
    assert type(got) is str and got == "/no/such/picture.png"


@pytest.mark.parametrize("kind, raw, value", [("int", 3, 3), ("float", 2, 2.0), ("bool", True, True), ("str", 5, 5)])
def test_a_python_value_of_the_parameters_type_arrives_as_that_type(kind, raw, value):
    """From Python (``reg.build``) a value of the right type arrives converted (an int is a float); any object for a
    str or path parameter (an image tensor, say) is handed over as it is."""
    got = _echo_registry(Param("x", kind, None, "x")).build("guide", "echo", {"x": raw})["x"]
    assert got == value and type(got) is type(value)


@pytest.mark.parametrize("kind, raw", [("int", 2.7), ("int", True), ("float", True), ("float", "2x"), ("bool", 5), ("bool", 1.0)])
def test_a_python_value_of_another_type_is_refused_before_the_factory_runs(kind, raw):
    """docs/plugins.md: a value that does not convert is refused before the factory runs, from Python as from the CLI
    (2.7 for an int and 5 for a bool used to reach the factory unchanged)."""
    calls: list = []
    with pytest.raises(UgdError, match=rf"echo: parameter x={raw!r} is not a valid {kind}") as err:
        _echo_registry(Param("x", kind, None, "x"), calls=calls).build("guide", "echo", {"x": raw})
    assert calls == [] and "\n" not in str(err.value)


def test_a_value_outside_choices_is_refused_before_the_factory_runs():
    """docs/plugins.md: a value outside `choices` is refused before the factory runs."""
    calls: list = []
    reg = _echo_registry(Param("mode", "str", "fast", "how", choices=("fast", "exact")), calls=calls)
    with pytest.raises(UgdError, match="mode='slow' is not one of fast, exact"):
        reg.build_from_spec("guide", "echo:mode=slow")
    assert calls == []
    assert reg.build_from_spec("guide", "echo:mode=exact") == {"mode": "exact"}


def test_parameters_declared_as_a_function_take_class_types_and_arrive_converted():
    """docs/plugins.md: `params=` may be a function returning the list; the classes `int`, `float`, ... are
    accepted and stored as their names, and values arrive converted."""

    def benchmarks(register):
        register("lazy", lambda n=2, scale=1.0: (n, scale), description="lazy params",
                 params=lambda: [Param("n", int, 2, "count"), Param("scale", float, 1.0, "size")])

    reg = load_registry([("lazy_plugin", _plugin(ugd_register_benchmarks=benchmarks))], entry_points=False)
    assert [p.type for p in reg.get("benchmark", "lazy").params] == ["int", "float"]
    assert reg.build_from_spec("benchmark", "lazy:n=3,scale=0.5") == (3, 0.5)


# ------------------------------------------------------------------------------------------------ names


def _two_plugins():
    return two_plugin_registry("alpha", "alpha of pa", "beta", "beta of pb")


def test_plugin_name_picks_only_that_plugins_item():
    """docs/plugins.md, "Names": `PLUGIN:NAME` picks that plugin's item; another plugin's item of that name is
    never silently taken instead."""
    reg = _two_plugins()
    assert reg.build("guide", "pa:alpha") == "alpha of pa"
    with pytest.raises(UgdError, match="plugin 'pa' has no guide 'beta'"):
        reg.get("guide", "pa:beta")
    with pytest.raises(UgdError, match="plugin 'pa' has no guide 'beta'"):
        reg.build_from_spec("guide", "pa:beta")


def test_info_finds_plugin_name_of_every_kind():
    """docs/plugins.md: `ugd info PLUGIN:NAME` picks one item, presets and backbones included (`--preset ugd`
    may clash with a plugin's preset)."""
    reg = load_registry(entry_points=False)
    assert reg.find("ugd:auto").kind == "preset" and reg.find("ugd:auto").name == "auto"
    assert reg.find("ugd:diffusers-pixel").kind == "backbone"


def test_a_name_holding_a_colon_is_refused_at_registration():
    """A registered name must be usable as NAME and PLUGIN:NAME (docs/plugins.md, "Names"); a name holding ':'
    cannot be, so it is not registered and the plugin is listed as broken with the reason, its other items kept."""

    def guides(register):
        register("a:b", lambda device="cpu": 1)
        register("fine", lambda device="cpu": 2)

    reg = load_registry([("colons", _plugin(ugd_register_guides=guides))], entry_points=False)
    assert "a:b" not in reg.entries["guide"] and "colons:a:b" not in reg.by_plugin["guide"]
    assert "must be a non-empty string without spaces, ':'" in reg.plugins["colons"].error
    assert reg.build("guide", "fine") == 2


def test_an_empty_load_plugins_variable_loads_no_installed_plugin(monkeypatch):
    """docs/plugins.md: `UGD_LOAD_PLUGINS=a,b` loads only those installed plugins (empty: none)."""
    monkeypatch.setenv("UGD_LOAD_PLUGINS", "")
    assert set(load_registry().plugins) == {"ugd"}
    monkeypatch.setenv("UGD_LOAD_PLUGINS", "clip")
    assert set(load_registry().plugins) == {"ugd", "clip"}


# ------------------------------------------------------------------------------------------------ sampler settings


@pytest.mark.parametrize("knobs, message", [
    (dict(eta=-0.5), r"eta must lie in \[0, 1\]"),  # docs/algorithm.md: eta in [0, 1]
    (dict(smoothing_probes=0), "smoothing_probes must be >= 1"),
    (dict(forward_window=(0.6, 0.2)), r"forward_window=\(0.6, 0.2\) must satisfy 0 <= start <= end <= 1"),
    (dict(recurrence_window=[0.5, 0.1]), "recurrence_window=.* must satisfy 0 <= start <= end <= 1"),
    (dict(backward_steps=True), "backward_steps must be a whole number, got True"),
    (dict(forward_window=0.5), r"forward_window must be two fractions of the chain, start and end \(the steps from start up to but not including end; 0 = noisiest\), e.g. \[0.2, 0.6\]; got 0.5"),
    (dict(backward_window=(0.1,)), r"backward_window must be two fractions of the chain.*; got \(0.1,\)"),
    (dict(recurrence_window=("a", "b")), r"recurrence_window must be two fractions of the chain.*; got \('a', 'b'\)"),
])
def test_sampler_settings_outside_their_documented_range_are_one_line(knobs, message):
    with pytest.raises(UgdError, match=message) as err:
        SamplerConfig.from_dict(knobs)
    assert "\n" not in str(err.value)


def test_from_dict_names_an_unknown_setting_and_the_closest_one():
    """SamplerConfig.from_dict: unknown keys are a UgdError (a preset with a misspelt knob is caught, as
    ugd_plugins/clip/tests rely on), with a "did you mean"."""
    with pytest.raises(UgdError, match=r"unknown sampler setting 'forward_strenght' \(did you mean forward_strength\b"):
        SamplerConfig.from_dict({"forward_strenght": 1.0})


def test_a_preset_file_with_an_unknown_setting_is_refused_when_read(tmp_path):
    """A preset file (docs/presets.md) holds SamplerConfig knobs; a misspelt one is a UgdError when the file is
    read (`load_preset_file`, `--preset FILE`), naming the closest knob."""
    path = tmp_path / "tuned.json"
    path.write_text(json.dumps({"name": "tuned", "settings": {"backward_step": 2}}))
    for read in (lambda: load_preset_file(path), lambda: resolve_preset(str(path), load_registry(entry_points=False))):
        with pytest.raises(UgdError, match="unknown sampler setting 'backward_step' .*did you mean backward_steps"):
            read()


# ------------------------------------------------------------------------------------------------ presets

# docs/presets.md's table (and the README's description of the default): preset -> documented knob values
DOCUMENTED = {
    "auto": dict(forward_on="sphere", forward_strength=0.2, eta=1.0, backward_steps=3, backward_lr=0.03,
                 backward_final_steps=10, backward_final_backtrack=12, backward_merit="pareto", recurrence=2,
                 recurrence_window=(0.2, 0.6)),
    "auto-eps": dict(forward_on="eps", forward_strength=0.1, forward_normalize="grad", backward_lr=0.1, backward_steps=3,
                     backward_backtrack=3, recurrence=3, recurrence_window=(0.2, 0.6)),
    "ugd": dict(forward_strength=1.0, forward_schedule="sqrt_1m_abar", backward_steps=1, backward_lr=0.01,
                backward_optimizer="adam", recurrence=3, forward_min_abar=1e-3),
    "forward-only": dict(forward_strength=1.0, forward_schedule="sqrt_1m_abar"),
    "naive": dict(forward_strength=1.0, forward_input="zt"),
    "dps": dict(forward_strength=0.5, forward_normalize="loss", forward_on="z_prev", eta=1.0),
    "freedom": dict(forward_strength=0.25, forward_schedule="increase", forward_on="z_prev", eta=1.0),
    "freedom-normalized": dict(forward_strength=0.2, forward_normalize="grad", forward_window=(0.0, 0.8), recurrence=3,
                               recurrence_window=(0.1, 0.5)),
    "lgd": dict(forward_strength=0.25, smoothing_probes=4, smoothing_reduce="log_mean_exp", eta=1.0),
    "mpgd": dict(backward_steps=1, backward_lr=0.25, backward_on="x0", eta=1.0),
    "dsg": dict(forward_strength=0.2, forward_on="sphere", eta=1.0),
    "tfg": dict(forward_strength=0.25, backward_lr=0.25, smoothing_std=0.001, smoothing_probes=4, backward_steps=1,
                forward_schedule="increase", backward_schedule="increase", smoothing_shared=True, eta=1.0),
}


@pytest.mark.parametrize("name", list(DOCUMENTED))
def test_a_preset_resolves_to_its_documented_values(name):
    _, settings = resolve_preset(name, load_registry(entry_points=False))
    config = SamplerConfig.from_dict(settings)
    assert {k: getattr(config, k) for k in DOCUMENTED[name]} == DOCUMENTED[name]


def test_low_memory_is_the_default_with_every_memory_knob():
    """docs/presets.md: `low-memory` = `auto` + gradient checkpointing + VAE slicing and tiling."""
    reg = load_registry(entry_points=False)
    low, auto = reg.get("preset", "low-memory").settings, reg.get("preset", "auto").settings
    assert low == dict(auto, grad_checkpointing=True, vae_slicing=True, vae_tiling=True)


def test_clip_presets_show_the_backbone_of_their_experiment():
    """docs/guides/clip.md: the imagenet-* presets run on the adm backbone, the sd-* presets on Stable Diffusion;
    `ugd info` shows each with that backbone."""
    import ugd_clip.plugin

    reg = load_registry([("clip", ugd_clip.plugin)], entry_points=False)
    for name in ("imagenet-clip", "imagenet-clip-fast"):
        assert reg.get("preset", name).example.startswith("--backbone adm "), name
    for name in ("sd-clip", "sd-clip-fast"):
        assert reg.get("preset", name).example.startswith("--backbone stable-diffusion "), name


# ------------------------------------------------------------------------------------------------ Stable Diffusion


def _sd_registry():
    import ugd_sd.plugin

    return load_registry([("stable-diffusion", ugd_sd.plugin)], entry_points=False)


def test_sdxl_dtype_casts_both_text_encoders_and_the_vae():
    """docs/backbones/stable-diffusion.md: a dtype other than auto casts UNet, VAE and text encoders (SDXL: both);
    only fp16 keeps a force_upcast VAE in fp32."""
    from ugd_sd.testing import tiny_stable_diffusion

    bb = tiny_stable_diffusion(kind="sdxl")
    bb.configure(SamplerConfig(dtype="bf16"))
    dtypes = {name: next(m.parameters()).dtype for name, m in
              dict(unet=bb.unet, vae=bb.vae, text=bb.text_encoder, text_2=bb.text_encoder_2).items()}
    assert dtypes == dict(unet=torch.bfloat16, vae=torch.bfloat16, text=torch.bfloat16, text_2=torch.bfloat16)


@pytest.mark.parametrize("force_upcast, vae_dtype", [(True, torch.float32), (False, torch.float16)])
def test_sdxl_vae_stays_fp32_in_fp16_only_when_its_config_says_force_upcast(force_upcast, vae_dtype):
    """docs/backbones/stable-diffusion.md: SDXL's VAE overflows in fp16: when its config says force_upcast, it is
    kept in fp32, as diffusers' SDXL pipeline does."""
    from ugd_sd.testing import tiny_stable_diffusion

    bb = tiny_stable_diffusion(kind="sdxl")
    bb.vae.register_to_config(force_upcast=force_upcast)
    bb.configure(SamplerConfig(dtype="fp16"))
    assert bb.unet.dtype == torch.float16 and bb.text_encoder_2.dtype == torch.float16
    assert bb.vae.dtype == vae_dtype


@pytest.fixture(scope="module")
def sd15_folder(tmp_path_factory):
    from ugd_sd.testing import save_tiny_stable_diffusion

    return save_tiny_stable_diffusion(tmp_path_factory.mktemp("sd") / "sd15")


def test_the_sdxl_backbone_refuses_an_sd15_folder(sd15_folder):
    """docs/backbones/stable-diffusion.md: `stable-diffusion-xl` loads SDXL pipelines only (an SD 1.x/2.x folder
    is a one-line error)."""
    with pytest.raises(UgdError, match="not SDXL; use the stable-diffusion backbone") as err:
        _sd_registry().build("backbone", "stable-diffusion-xl", {"model": str(sd15_folder)})
    assert "\n" not in str(err.value)


def test_a_folder_of_another_pipeline_is_one_line_naming_its_class(tmp_path):
    """docs/backbones/stable-diffusion.md: the pipeline class is read from the folder's model_index.json; a folder
    of another pipeline (here a DDPMPipeline) is one line naming it and what the backbone loads."""
    from diffusers import DDIMScheduler, DDPMPipeline, UNet2DModel

    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8,), layers_per_block=1,
                       down_block_types=("DownBlock2D",), up_block_types=("UpBlock2D",), norm_num_groups=4)
    DDPMPipeline(unet=unet, scheduler=DDIMScheduler()).save_pretrained(tmp_path / "ddpm")
    with pytest.raises(UgdError, match="holds a DDPMPipeline folder; the stable-diffusion backbone loads StableDiffusionPipeline"):
        _sd_registry().build("backbone", "stable-diffusion", {"model": str(tmp_path / "ddpm")})


@pytest.mark.parametrize("cls", ["StableDiffusionInpaintPipeline", "StableDiffusionUpscalePipeline", "StableDiffusionXLImg2ImgPipeline"])
def test_a_folder_of_another_stable_diffusion_pipeline_is_one_line_before_any_weights_load(sd15_folder, tmp_path, cls):
    """docs/backbones/stable-diffusion.md: the backbone loads StableDiffusionPipeline and StableDiffusionXLPipeline
    folders. An inpainting, upscaling or img2img / refiner folder (a UNet of other inputs, or no first text encoder)
    once passed a prefix check and failed later in diffusers; now one line naming its class, before loading."""
    import json
    import shutil

    folder = tmp_path / "other"
    shutil.copytree(sd15_folder, folder)
    index = json.loads((folder / "model_index.json").read_text())
    (folder / "model_index.json").write_text(json.dumps(dict(index, _class_name=cls)))
    (folder / "unet" / "config.json").unlink()  # proves nothing is loaded: a load would fail on the missing UNet
    with pytest.raises(UgdError, match=rf"holds a {cls} folder; .*; give a text-to-image pipeline's folder") as err:
        _sd_registry().build("backbone", "stable-diffusion", {"model": str(folder)})
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("kind, cls, backbone", [("sd3", "StableDiffusion3Pipeline", "stable-diffusion-3"), ("flux", "FluxPipeline", "flux")])
def test_a_flow_pipeline_folder_is_sent_to_its_own_backbone(tmp_path, kind, cls, backbone):
    """An SD3 or FLUX folder given to the stable-diffusion backbone is one line naming its class and the backbone that
    loads it (a StableDiffusion3Pipeline once passed a prefix check and failed later with a message about a missing unet)."""
    from ugd_sd.testing import save_tiny_flow_pipeline

    path = save_tiny_flow_pipeline(tmp_path / kind, kind=kind)
    with pytest.raises(UgdError, match=rf"holds a {cls} folder; .*; load it with --backbone {backbone}:model=PATH") as err:
        _sd_registry().build("backbone", "stable-diffusion", {"model": str(path)})
    assert "\n" not in str(err.value)


# ------------------------------------------------------------------------------------------------ CLIP


def test_clip_normalises_with_the_folders_mean_and_std(tmp_path):
    """docs/guides/clip.md: preprocess applies the mean/std of the folder's preprocessor_config.json."""
    from transformers import CLIPImageProcessor

    from ugd_clip import build_clip_guide

    model, tok = tiny_clip()
    model.save_pretrained(tmp_path / "clip")
    tok.save_pretrained(tmp_path / "clip")
    CLIPImageProcessor(crop_size={"height": 32, "width": 32}, image_mean=[0.1, 0.2, 0.3],
                       image_std=[0.4, 0.5, 0.6]).save_pretrained(tmp_path / "clip")
    guide = build_clip_guide(prompt="a rocket", model=str(tmp_path / "clip"))
    assert guide.mean.flatten().tolist() == pytest.approx([0.1, 0.2, 0.3])
    assert guide.std.flatten().tolist() == pytest.approx([0.4, 0.5, 0.6])


def test_clip_without_a_processor_config_uses_openai_clips_statistics():
    """docs/guides/clip.md: OpenAI CLIP's statistics when there is no preprocessor config (OpenAI CLIP's
    published per-channel values, R, G, B)."""
    from ugd_clip import ClipGuide

    model, tok = tiny_clip()
    guide = ClipGuide(model, tok, prompt="a rocket")
    assert guide.mean.flatten().tolist() == pytest.approx([0.48145466, 0.4578275, 0.40821073])
    assert guide.std.flatten().tolist() == pytest.approx([0.26862954, 0.26130258, 0.27577711])


def test_a_missing_local_clip_folder_names_that_folder_not_the_hub(tmp_path):
    """README.md: missing weights stop with one line saying where ugd looked (`hf download ID` only for a Hub id)."""
    from ugd_clip import build_clip_guide

    missing = tmp_path / "nowhere"
    with pytest.raises(UgdError) as err:
        build_clip_guide(prompt="a dog", model=str(missing))
    msg = str(err.value)
    assert f"looked in {missing}" in msg and "hf download" not in msg and "Hugging Face cache" not in msg
    assert "clip:model=" in msg and "\n" not in msg


# ------------------------------------------------------------------------------------------------ ADM


def test_adm_auto_precision_is_fp32_on_cpu_for_an_fp16_release():
    """docs/backbones/adm.md: `--dtype auto` runs the releases with use_fp16 True in fp16 on CUDA and fp32 on CPU."""
    from ugd_adm.backbone import AdmBackbone, adm_scheduler, build_unet
    from ugd_adm.configs import RELEASES, Resolved

    flags = dict(RELEASES["256-uncond"].flags, image_size=16, num_channels=32, channel_mult="1,2,2")
    if flags.get("num_head_channels", -1) != -1:
        flags["num_head_channels"] = 16
    torch.manual_seed(0)
    net, diffusion = build_unet(Resolved("tiny-256-uncond", "model", flags))
    bb = AdmBackbone(net, adm_scheduler(**diffusion), "cpu", use_fp16=True)
    bb.configure(SamplerConfig(dtype="auto"))
    assert bb.unet.input_blocks[0][0].weight.dtype == torch.float32
    bb.configure(SamplerConfig(dtype="fp16"))  # forced: the convolutions only
    assert bb.unet.input_blocks[0][0].weight.dtype == torch.float16 and bb.unet.time_embed[0].weight.dtype == torch.float32


# ------------------------------------------------------------------------------------------------ never downloads

NETWORK_SCRIPT = textwrap.dedent("""
    import os, socket, sys, traceback, warnings
    current = [""]
    def refuse(*args, **kwargs):
        # huggingface_hub's agent-registry lookup while it builds headers is not a download (as tests/test_never_downloads.py)
        if not any(f.filename.endswith("_detect_agent.py") for f in traceback.extract_stack()):
            print(current[0], "asked the network", args[:1], flush=True)
            os._exit(3)  # at once: a loader that asks would otherwise retry with back-off for minutes
        raise OSError("network refused by the test")
    socket.getaddrinfo = refuse
    socket.socket.connect = refuse
    warnings.simplefilter("ignore")
    from ugd_core.errors import UgdError
    from ugd_core.registry import load_registry
    import ugd_clip.plugin, ugd_sd.plugin
    reg = load_registry([("stable-diffusion", ugd_sd.plugin), ("clip", ugd_clip.plugin)], entry_points=False)
    for kind, name, params in [("backbone", "stable-diffusion", {"model": "ugd-tests/sd-index-only"}),
                               ("guide", "clip", {"prompt": "a cat", "model": "ugd-tests/clip-no-processor"}),
                               ("guide", "clip", {"prompt": "a cat", "model": "ugd-tests/clip-no-tokenizer"})]:
        current[0] = params["model"]
        try:
            reg.build(kind, name, params, device="cpu")
            outcome = "loaded"
        except UgdError as exc:
            outcome = "UgdError"
        print(params["model"], outcome, flush=True)
""")


def _snapshot(cache: Path, repo: str) -> Path:
    """An empty snapshot of ``repo`` in a Hugging Face cache folder, as `hf download` lays it out."""
    root = cache / f"models--{repo.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(commit)
    snap = root / "snapshots" / commit
    snap.mkdir(parents=True)
    return snap


def test_partly_cached_models_load_from_the_cache_without_asking_the_network(tmp_path, sd15_folder):
    """README.md: nothing is downloaded at run time, online or not. A Hub id whose snapshot in the cache lacks
    files (a pipeline's components; a CLIP model's preprocessor config or tokenizer) is read from the cache
    alone, without a network request, even where the environment is not marked offline."""
    cache = tmp_path / "hub"
    (_snapshot(cache, "ugd-tests/sd-index-only") / "model_index.json").write_text((sd15_folder / "model_index.json").read_text())
    model, tok = tiny_clip()
    full = _snapshot(cache, "ugd-tests/clip-no-processor")
    model.save_pretrained(full)
    tok.save_pretrained(full)
    model.save_pretrained(_snapshot(cache, "ugd-tests/clip-no-tokenizer"))
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")}
    env.update(HF_HUB_CACHE=str(cache), HF_HOME=str(tmp_path / "hf-home"))
    out = subprocess.run([sys.executable, "-c", NETWORK_SCRIPT], env=env, capture_output=True, text=True, timeout=120)
    assert out.stdout.split("\n")[:3] == ["ugd-tests/sd-index-only UgdError", "ugd-tests/clip-no-processor loaded",
                                          "ugd-tests/clip-no-tokenizer UgdError"], out.stdout + out.stderr[-2000:]
    assert out.returncode == 0, out.stderr[-2000:]
