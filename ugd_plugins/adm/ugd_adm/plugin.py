"""Registers the ``adm`` backbone, the ``classifier`` guide and the ``classifier-guidance`` preset.

Nothing heavy is imported here: the guided-diffusion package loads when a backbone or guide is built.
"""

from __future__ import annotations

from typing import Any

from ugd_core.hookspecs import hookimpl
from ugd_core.params import Param
from ugd_core.registry import register_preset_table

from .configs import README, RELEASES, URL

_MODELS = [r for r in RELEASES.values() if r.kind == "model"]
_CLASSIFIERS = [r for r in RELEASES.values() if r.kind == "classifier"]
DEFAULT_MODEL = RELEASES["256-uncond"].files[0]  # as backbone.DEFAULT_MODEL (that module imports torch)
DEFAULT_CLASSIFIER = RELEASES["256-classifier"].files[0]  # as classifier.DEFAULT_CLASSIFIER


def _listing(releases: list[Any]) -> str:
    return "; ".join(f"{r.name} = {' / '.join(r.files)} ({r.description})" for r in releases)


PRESETS: dict[str, tuple[str, dict[str, Any], str]] = {
    "classifier-guidance": (
        "Dhariwal & Nichol classifier guidance with a noise-aware classifier (the `classifier` guide): "
        "eps - s sqrt(1-a_t) grad log p(y|z_t,t) on z_t, s=10 (the README's scale for 256x256_diffusion_uncond.pt), "
        "250 steps, ancestral-like DDIM (eta=1)",
        dict(num_steps=250, eta=1.0, cfg_scale=1.0, forward_strength=10.0, forward_schedule="sqrt_1m_abar", forward_input="zt"),
        "Dhariwal & Nichol 2021 eq. 14 / Alg. 2; guided-diffusion README 'Classifier guidance' (256x256 model "
        "(unconditional): --classifier_scale 10.0; SAMPLE_FLAGS --timestep_respacing 250). eta=1 DDIM stands in for "
        "scripts/classifier_sample.py's ancestral p_sample (its learned variance is not used here)",
    ),
    "classifier-guidance-fast": (
        "Quick classifier-guidance: 50 steps, same scale (not tuned; for previews)",
        dict(num_steps=50, eta=1.0, cfg_scale=1.0, forward_strength=10.0, forward_schedule="sqrt_1m_abar", forward_input="zt"),
        "derived from classifier-guidance; step count reduced here, not in the README",
    ),
}


def _load_adm(**kwargs: Any) -> Any:
    from .backbone import load_adm

    return load_adm(**kwargs)


def _adm_classes(model: str, config: str) -> int:
    """A class-conditional release takes the ImageNet class index as the prompt; the others no text (from the
    release's flags: no weights load, no torch)."""
    from .configs import NUM_CLASSES, resolve

    return NUM_CLASSES if resolve(config, model, "model").flags.get("class_cond") else 0


def _classifier_guide(**kwargs: Any) -> Any:
    from .classifier import classifier_guide

    return classifier_guide(**kwargs)


@hookimpl
def ugd_register_backbones(register):  # type: ignore[no-untyped-def]
    register(
        "adm",
        _load_adm,
        description=(
            "OpenAI guided-diffusion (ADM, Dhariwal & Nichol 2021) pixel UNet, exact release flags ("
            + README + "). Checkpoints: " + _listing(_MODELS) + f". Download: {URL}<file>. "
            "Class-conditional releases take the ImageNet class index as --prompt."
        ),
        params=[
            Param("model", "path", DEFAULT_MODEL, "checkpoint .pt (or .safetensors); its file name picks the release"),
            Param("config", "str", "", "release: " + ", ".join(r.name for r in _MODELS)
                  + "; or a JSON file of guided-diffusion model flags (default: from the file name)"),
        ],
        classes=_adm_classes,
    )


@hookimpl
def ugd_register_guides(register):  # type: ignore[no-untyped-def]
    register(
        "classifier",
        _classifier_guide,
        example="--backbone adm --guide classifier:label=207 --preset classifier-guidance-fast",
        description=(
            "Classifier guidance (Dhariwal & Nichol 2021) with a released noise-aware ImageNet classifier on z_t "
            "(timestep-aware; use --preset classifier-guidance). Checkpoints: " + _listing(_CLASSIFIERS)
            + f". Download: {URL}<file>"
        ),
        params=[
            Param("label", "int", None, "ImageNet class index 0..999", required=True),
            Param("model", "path", DEFAULT_CLASSIFIER, "classifier checkpoint .pt; its file name picks the release"),
            Param("config", "str", "", "release: " + ", ".join(r.name for r in _CLASSIFIERS)
                  + "; or a JSON file of guided-diffusion classifier flags (default: from the file name)"),
        ],
        differentiable=True,
    )


@hookimpl
def ugd_register_presets(register):  # type: ignore[no-untyped-def]
    register_preset_table(register, PRESETS, examples="--backbone adm --guide classifier:label=207")
