"""The released guided-diffusion checkpoints (Dhariwal & Nichol 2021) and their exact model flags.

Every flag set below is the ``MODEL_FLAGS`` line the guided-diffusion README gives
for that file (openai/guided-diffusion, README.md, section "Sampling from
pre-trained models": "Classifier guidance" for the ImageNet models and
classifiers, "LSUN models" for LSUN), applied on top of the package's
``script_util.model_and_diffusion_defaults()`` / ``classifier_defaults()`` as the
official sampling scripts do. Download URLs are the README's "Download
pre-trained models" list. The 64->256 and 128->512 upsamplers are not
backbones of this kind (they need a low-resolution image) and are not listed.

A config is a release name (``256-uncond``, ``256``, ``128``, ``64``, ``512``,
``lsun``, ``lsun-nodropout``, ``64-classifier`` ...) or a JSON file of the same
flag names (for your own checkpoints and for tests).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ugd_core.errors import UgdError
from ugd_core.params import closest

URL = "https://openaipublic.blob.core.windows.net/diffusion/jul-2021/"
README = "guided-diffusion README, 'Sampling from pre-trained models'"

# The README's MODEL_FLAGS lines. All ImageNet and LSUN models share these; each release
# differs as noted in ``RELEASES``.
_COMMON = dict(
    attention_resolutions="32,16,8", diffusion_steps=1000, learn_sigma=True, noise_schedule="linear",
    num_channels=256, num_head_channels=64, num_res_blocks=2, resblock_updown=True, use_fp16=True,
    use_scale_shift_norm=True,
)


@dataclass(frozen=True)
class Release:
    """One checkpoint family: its file names, README flags, and (for models) the README's classifier scale."""

    name: str
    kind: str  # model | classifier
    files: tuple[str, ...]
    flags: dict[str, Any]
    section: str
    description: str
    classifier_scale: float | None = None
    classifier: str | None = None  # the release's noise-aware classifier config

    @property
    def urls(self) -> list[str]:
        return [URL + f for f in self.files]


def _model(name: str, files: tuple[str, ...], section: str, description: str, scale: float | None, classifier: str | None,
           **flags: Any) -> Release:
    return Release(name, "model", files, dict(_COMMON, **flags), section, description, scale, classifier)


def _classifier(size: int, **flags: Any) -> Release:
    return Release(
        f"{size}-classifier", "classifier", (f"{size}x{size}_classifier.pt",), dict(image_size=size, **flags),
        f"Classifier guidance, '{size}x{size} model'",
        f"noise-aware ImageNet classifier p(y | x_t, t) for {size}x{size} (encoder half of the UNet, attention pool)",
    )


RELEASES: dict[str, Release] = {
    r.name: r
    for r in (
        _model("256-uncond", ("256x256_diffusion_uncond.pt",), "Classifier guidance, '256x256 model (unconditional)'",
               "ImageNet 256x256 unconditional (the universal-guidance paper's ImageNet model)", 10.0, "256-classifier",
               class_cond=False, image_size=256),
        _model("256", ("256x256_diffusion.pt",), "Classifier guidance, '256x256 model'",
               "ImageNet 256x256 class-conditional (class index as --prompt)", 1.0, "256-classifier",
               class_cond=True, image_size=256),
        _model("128", ("128x128_diffusion.pt",), "Classifier guidance, '128x128 model'",
               "ImageNet 128x128 class-conditional (class index as --prompt)", 0.5, "128-classifier",
               class_cond=True, image_size=128, num_head_channels=-1, num_heads=4),
        _model("64", ("64x64_diffusion.pt",), "Classifier guidance, '64x64 model'",
               "ImageNet 64x64 class-conditional, cosine schedule (class index as --prompt)", 1.0, "64-classifier",
               class_cond=True, image_size=64, dropout=0.1, noise_schedule="cosine", num_channels=192,
               num_res_blocks=3, use_new_attention_order=True),
        _model("512", ("512x512_diffusion.pt",), "Classifier guidance, '512x512 model'",
               "ImageNet 512x512 class-conditional (class index as --prompt; fp32 release flags)", 4.0, "512-classifier",
               class_cond=True, image_size=512, use_fp16=False),
        _model("lsun", ("lsun_bedroom.pt", "lsun_cat.pt", "lsun_horse.pt"), "LSUN models",
               "LSUN bedroom / cat / horse 256x256, unconditional", None, None,
               class_cond=False, image_size=256, dropout=0.1),
        _model("lsun-nodropout", ("lsun_horse_nodropout.pt",), "LSUN models ('--dropout 0.0')",
               "LSUN horse 256x256 trained without dropout, unconditional", None, None,
               class_cond=False, image_size=256, dropout=0.0),
        _classifier(64, classifier_depth=4),
        _classifier(128),
        _classifier(256),
        _classifier(512),
    )
}
BY_FILE = {f: r.name for r in RELEASES.values() for f in r.files}


# the class count of every class-conditional release and classifier: guided-diffusion's ImageNet models
# (script_util.NUM_CLASSES), kept here so that a spec is checked without importing its model code (and torch)
NUM_CLASSES = 1000


def import_script_util() -> Any:
    """``guided_diffusion.script_util`` from the guided-diffusion-sdk package (its model code needs
    neither mpi4py nor blobfile); one UgdError naming the fix when it is not installed."""
    try:
        with warnings.catch_warnings():  # the package's checkpoint helper uses torch.cuda.amp.custom_fwd (deprecated)
            warnings.simplefilter("ignore", FutureWarning)
            from guided_diffusion import script_util
    except ImportError as exc:
        raise UgdError(f"the adm backbone needs OpenAI's guided_diffusion model code ({exc}); "
                       "install it with `pip install guided-diffusion-sdk` (or `pip install -e ugd_plugins/adm`)") from None
    return script_util


@dataclass
class Resolved:
    """A config resolved to flags, with where it came from (for messages and the run spec)."""

    name: str
    kind: str
    flags: dict[str, Any]
    release: Release | None = None


def resolve(config: str, model: str, kind: str) -> Resolved:
    """The flags for ``model`` (a checkpoint path): from ``config`` (a release name or a JSON file)
    or, when ``config`` is empty, from the checkpoint's file name."""
    if config:
        if config in RELEASES:
            rel = RELEASES[config]
        elif config.endswith(".json") or Path(config).is_file():
            return _from_json(config, kind)
        else:
            names = [n for n, r in RELEASES.items() if r.kind == kind]
            raise UgdError(f"adm: config={config!r} is not a release{closest(config, names)}; use one of "
                           f"{', '.join(names)} or a JSON file of guided-diffusion flags")
    else:
        base = Path(model).name
        if base not in BY_FILE:
            names = [n for n, r in RELEASES.items() if r.kind == kind]
            raise UgdError(f"adm: cannot tell the release of {base!r} from its file name; add config=NAME "
                           f"({', '.join(names)}) or config=FLAGS.json")
        rel = RELEASES[BY_FILE[base]]
    if rel.kind != kind:
        raise UgdError(f"adm: {rel.name!r} is a {rel.kind} config, not a {kind}; "
                       f"{'use the classifier guide for it' if rel.kind == 'classifier' else 'pass a *_classifier.pt file'}")
    return Resolved(rel.name, kind, dict(rel.flags), rel)


def _from_json(path: str, kind: str) -> Resolved:
    try:
        flags = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UgdError(f"adm: config file {path!r} does not exist; pass a release name or a JSON file of flags") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise UgdError(f"adm: config file {path!r} is not readable JSON ({exc})") from None
    if not isinstance(flags, dict):
        raise UgdError(f"adm: config file {path!r} must hold one JSON object of guided-diffusion flags")
    return Resolved(Path(path).name, kind, flags)


def model_kwargs(flags: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split README flags into ``create_model`` keyword arguments and the diffusion's (steps, schedule).

    Unstated flags take ``model_and_diffusion_defaults()``, as in the official scripts.
    """
    import inspect

    su = import_script_util()
    full = su.model_and_diffusion_defaults()
    unknown = sorted(set(flags) - set(full))
    if unknown:
        raise UgdError(f"adm: unknown model flag(s) {', '.join(unknown)}; flags: {', '.join(sorted(full))}")
    full.update(flags)
    names = inspect.signature(su.create_model).parameters
    return {k: full[k] for k in names}, dict(steps=int(full["diffusion_steps"]), schedule=str(full["noise_schedule"]))


# Flags of our own for classifier JSON configs (the released classifiers fix these in create_classifier).
CLASSIFIER_EXTRA = dict(classifier_channel_mult="", classifier_num_head_channels=64)


def classifier_kwargs(flags: dict[str, Any]) -> dict[str, Any]:
    """README classifier flags on top of ``classifier_defaults()`` (plus ``classifier_channel_mult`` and
    ``classifier_num_head_channels``, fixed by the releases, settable in JSON configs)."""
    su = import_script_util()
    full = dict(su.classifier_defaults(), **CLASSIFIER_EXTRA)
    unknown = sorted(set(flags) - set(full))
    if unknown:
        raise UgdError(f"adm: unknown classifier flag(s) {', '.join(unknown)}; flags: {', '.join(sorted(full))}")
    full.update(flags)
    return full
