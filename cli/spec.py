"""What a run is: :class:`RunSpec`, its validation, and the objects it resolves to.

A :class:`RunSpec` names a backbone, guides (``NAME:key=value`` specs), a preset,
knob overrides, a prompt, seeds and a device. :func:`validate_spec` checks every
field, name, parameter and sampler setting without building a model, so a bad
input ends in one :class:`UgdError` line before any work; :func:`build` then
turns the spec into a backbone, a weighted guide set and a :class:`SamplerConfig`.
"""

from __future__ import annotations

import math
import re
from dataclasses import MISSING, dataclass, field, fields
from typing import TYPE_CHECKING, Any

from ugd_core.class_prompt import class_indices
from ugd_core.config import SamplerConfig, check_knobs, resolve_preset
from ugd_core.errors import UgdError
from ugd_core.params import parse_spec, resolve_params
from ugd_core.schedules import scheduler_draws_noise

if TYPE_CHECKING:
    from ugd_core.guidance import GuideSet, WeightedGuide

# No torch at import: validate_spec (every check before any work) runs before torch loads, so a bad
# input's one line comes at start-up speed; resolve_device and build import it.
from ugd_core.registry import TEXT_INPUTS, Registry, get_registry

DEFAULT_BACKBONE = "digits"
DEFAULT_BATCH_SIZE = 8  # two batches of the README's 16 images, side by side on 2 cores (cli.lanes)


@dataclass
class RunSpec:
    """Everything that determines a run's images.

    ``sampler`` holds complete settings (from an image record) and bypasses preset and
    overrides. ``threads`` pins the torch thread count while sampling (None: leave it as
    it is); the same seed gives the same pixels only at the same thread count. ``lanes``: how many
    batches are sampled at once, each on an equal share of those threads (None: one per thread on a CPU,
    one on a GPU; :mod:`cli.lanes`); it changes no pixel beyond the per-lane thread count the records keep.
    ``best_of`` > 1 samples that many candidates per image and keeps the one the guides' losses prefer.
    """

    backbone: str = DEFAULT_BACKBONE
    guides: list[str] = field(default_factory=list)
    preset: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    prompt: str | None = None
    negative_prompt: str | None = None
    seed: int = 0
    num_images: int = 1
    batch_size: int = DEFAULT_BATCH_SIZE
    device: str = "cpu"
    sampler: dict[str, Any] | None = None
    threads: int | None = None
    lanes: int | None = None
    best_of: int = 1  # candidates per image, the one with the lowest guide loss kept (cli.best_of)

    def seeds(self) -> list[int]:
        """Image i gets seed + i."""
        return [self.seed + i for i in range(self.num_images)]

    def batches(self) -> list[list[int]]:
        """Seeds grouped into sampling batches (the unit of work)."""
        s = self.seeds()
        return [s[i : i + self.batch_size] for i in range(0, len(s), self.batch_size)]


@dataclass
class Built:
    """The objects a RunSpec resolves to, and the records that describe them."""

    backbone: Any
    guides: GuideSet
    config: SamplerConfig
    preset_name: str | None
    backbone_record: dict[str, Any]
    guide_records: list[dict[str, Any]]


# -- checking values -------------------------------------------------------------------------


def is_int(value: Any) -> bool:
    """An int that is not a bool (JSON ``true`` is no seed)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A finite int or float that is not a bool."""
    return (is_int(value) or isinstance(value, float)) and math.isfinite(value)


def _kind(default: Any) -> str:
    if default is None:
        return "any"
    if isinstance(default, bool):
        return "bool"
    if isinstance(default, int):
        return "int"
    if isinstance(default, float):
        return "float"
    if isinstance(default, tuple):
        return "window"
    if isinstance(default, dict):
        return "dict"
    return "str"


_KNOB_KINDS: dict[str, str] = {
    f.name: _kind(f.default_factory() if f.default is MISSING else f.default)  # type: ignore[misc]
    for f in fields(SamplerConfig)
}
_EXAMPLES = {"int": "10", "float": "0.5", "bool": "true", "window": "[0, 0.5]", "dict": "{}", "str": '"sqrt_1m_abar"'}
# knobs whose negative values mean nothing (the others are checked by SamplerConfig.validate)
_NON_NEGATIVE = ("eta", "forward_strength", "backward_lr", "smoothing_std", "zo_std")
_AT_LEAST_ONE = ("smoothing_probes", "zo_probes")


def check_settings(settings: dict[str, Any], where: str = "sampler setting") -> dict[str, Any]:
    """Check names, JSON types and ranges of sampler settings; UgdError naming the first bad one.

    Types follow :class:`SamplerConfig`'s defaults: an int knob takes an integer, a float
    knob any number, a schedule a name (callables pass from Python), a window two numbers.
    """
    check_knobs(settings)
    for key, value in settings.items():
        kind = _KNOB_KINDS[key]
        ok = {
            "bool": isinstance(value, bool),
            "int": is_int(value),
            "float": is_number(value),
            "window": isinstance(value, (list, tuple)) and len(value) == 2 and all(is_number(v) for v in value),
            "dict": isinstance(value, dict),
            "str": isinstance(value, str) or callable(value),
            "any": True,
        }[kind]
        if not ok:
            raise UgdError(f"{where} {key}={value!r} is not a valid {kind}; write e.g. {key}={_EXAMPLES[kind]}")
        if key in _NON_NEGATIVE and value < 0:
            away = "; to push away from a guide, give it a negative weight (GUIDE:...,weight=-1)" if key in ("forward_strength", "backward_lr") else ""
            raise UgdError(f"{where} {key}={value!r} must be >= 0{away}")
        if key in _AT_LEAST_ONE and value < 1:
            raise UgdError(f"{where} {key}={value!r} must be >= 1")
    return dict(settings)


def _check_fields(spec: RunSpec) -> None:
    """Types and ranges of the RunSpec's own fields."""
    if not isinstance(spec.backbone, str) or not spec.backbone.strip():
        raise UgdError(f"backbone {spec.backbone!r} is not a NAME[:key=value] text; e.g. --backbone digits")
    if not isinstance(spec.guides, (list, tuple)) or not all(isinstance(g, str) for g in spec.guides):
        raise UgdError(f"guides {spec.guides!r} must be a list of NAME:key=value texts; e.g. --guide digit:label=7")
    for name in ("preset", "prompt", "negative_prompt"):
        value = getattr(spec, name)
        if value is not None and not isinstance(value, str):
            raise UgdError(f"{name} {value!r} must be a text or absent")
    if not is_int(spec.seed) or spec.seed < 0:
        raise UgdError(f"seed {spec.seed!r} must be a whole number >= 0; e.g. --seed 7")
    if not is_int(spec.num_images) or spec.num_images < 1:
        raise UgdError(f"num_images {spec.num_images!r} must be a whole number >= 1")
    if not is_int(spec.best_of) or spec.best_of < 1:
        raise UgdError(f"best_of {spec.best_of!r} must be a whole number >= 1")
    largest = spec.seed + spec.num_images - 1 + (spec.best_of - 1) * BEST_OF_STRIDE  # the largest seed the run draws
    if largest > MAX_SEED:
        raise UgdError(f"seed {spec.seed}: the run's largest seed {largest} passes {MAX_SEED} (2^64 - 1), the largest a "
                       "torch generator takes; use a smaller seed (--seed)")
    if not is_int(spec.batch_size) or spec.batch_size < 1:
        raise UgdError(f"batch_size {spec.batch_size!r} must be a whole number >= 1")
    if spec.threads is not None and (not is_int(spec.threads) or spec.threads < 1):
        raise UgdError(f"threads {spec.threads!r} must be a whole number >= 1 or absent")
    if spec.lanes is not None and (not is_int(spec.lanes) or spec.lanes < 1):
        raise UgdError(f"lanes {spec.lanes!r} must be a whole number >= 1 or absent (batches sampled at once)")
    if not isinstance(spec.device, str) or not re.fullmatch(r"cpu|auto|mps|cuda(:[0-9]+)?", spec.device):
        raise UgdError(f"device {spec.device!r} is not one of cpu, cuda, cuda:N, mps, auto")
    if not isinstance(spec.overrides, dict):
        raise UgdError(f"overrides {spec.overrides!r} must be a mapping of sampler settings")
    if spec.sampler is not None and not isinstance(spec.sampler, dict):
        raise UgdError(f"sampler {spec.sampler!r} must be a mapping of sampler settings")


MAX_SEED = 2**64 - 1  # any unsigned 64-bit seed (ugd_core.noise.generator_seed mixes one of 2^32 or more to torch's 32 bits)
# --best-of: candidate j of the image with seed s samples with seed s + j * BEST_OF_STRIDE (j = 0: the image's own
# seed, so --best-of 1 is a plain run); the stride keeps candidates clear of the seeds of a run's other images
BEST_OF_STRIDE = 2**32


def guide_weight(raw: Any, guide: str) -> float:
    """A guide's ``weight`` parameter as a finite float, or a UgdError."""
    try:
        value = float(raw)
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value):
        raise UgdError(f"{guide}: weight={raw!r} is not a number; write e.g. {guide}:weight=2.0")
    return value


@dataclass(frozen=True)
class Part:
    """A backbone or guide text parsed once: ``NAME:key=value,...`` (a guide's ``weight`` taken out)."""

    name: str
    params: dict[str, str]
    weight: float
    text: str

    @classmethod
    def parse(cls, text: str, weighted: bool = False) -> "Part":
        name, params = parse_spec(text)
        weight = guide_weight(params.pop("weight", "1.0"), name) if weighted else 1.0
        return cls(name, params, weight, text)


@dataclass(frozen=True)
class CheckedSpec:
    """A RunSpec after :func:`validate_spec`: its texts parsed and checked, its settings resolved.
    Executors take this, so nothing is parsed again on the way to the sampler."""

    spec: RunSpec
    backbone: Part
    guides: tuple[Part, ...]
    config: SamplerConfig
    preset: str | None


def validate_spec(spec: RunSpec, registry: Registry | None = None) -> CheckedSpec:
    """Check a RunSpec completely without building any model: one UgdError line, before any work.

    Checks the fields' types and ranges, that the backbone and every guide are registered
    with valid parameters (``weight`` included), the sampler settings (names, types,
    ranges) and the device's form (whether it exists is the executor's check: a Ray
    cluster may have GPUs this machine lacks). Returns the parsed, checked spec.
    """
    reg = registry or get_registry()
    _check_fields(spec)
    backbone = Part.parse(spec.backbone)
    if backbone.name not in reg.entries["backbone"] and backbone.name == DEFAULT_BACKBONE:
        raise UgdError(
            f"the default backbone {DEFAULT_BACKBONE!r} is not installed; `pip install -e ugd_plugins/digits` or pass --backbone NAME"
        )
    entry = reg.get("backbone", backbone.name)
    params = resolve_params(backbone.name, entry.params, backbone.params)
    read, classes = entry.reading(params)
    for text in TEXT_INPUTS:  # in order: the same line in every process
        if read is not None and text not in read and getattr(spec, text) not in (None, ""):
            flag = "--" + text.replace("_", "-")
            raise UgdError(f"backbone {backbone.name!r} reads no {text.replace('_', ' ')}: it would be ignored; drop {flag}")
    if classes:  # its prompt is the class index: the rule the backbone applies when it conditions the run
        class_indices(f"backbone {backbone.name!r}", spec.prompt, spec.negative_prompt, classes, [])  # one text: one class
    guides = tuple(Part.parse(text, weighted=True) for text in spec.guides)
    for g in guides:
        resolve_params(g.name, reg.get("guide", g.name).params, g.params)
    config, preset = resolve_config(spec, reg, backbone.name)
    return CheckedSpec(spec, backbone, guides, config, preset)


# -- resolving -------------------------------------------------------------------------------


def resolve_device(device: str) -> str:
    """'auto' -> cuda when available; an unavailable CUDA or MPS device, or a CUDA index this machine lacks, is
    a UgdError."""
    if device not in ("auto", "mps") and not device.startswith("cuda"):
        return device
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "mps":
        if not torch.backends.mps.is_available():
            raise UgdError("device 'mps' requested but Apple's MPS is not available here; use --device cpu")
        return device
    if not torch.cuda.is_available():
        raise UgdError(f"device {device!r} requested but CUDA is not available here; use --device cpu")
    index = device.partition(":")[2]
    if index and int(index) >= torch.cuda.device_count():
        raise UgdError(f"device {device!r} requested but this machine has {torch.cuda.device_count()} CUDA device(s); "
                       f"use cuda:0 .. cuda:{torch.cuda.device_count() - 1}")
    return device


def default_preset(backbone_default: str | None, overrides: dict[str, Any]) -> str:
    """The preset of a run with guides and no ``--preset``: the backbone's own default, else the scale-free
    default, ``auto`` (``auto-eps`` where the steps draw no noise: auto's spherical step needs ancestral DDIM,
    auto-eps guides through eps with any scheduler)."""
    preset = backbone_default or "auto"
    return "auto-eps" if preset == "auto" and draws_no_noise(overrides) else preset


def draws_no_noise(overrides: dict[str, Any]) -> bool:
    """Whether ``--scheduler`` / ``--eta`` ask for steps that draw no noise the sampler can turn (DDIM with
    eta <= 0, or a scheduler whose step takes no noise from the caller); a value that is no number, or no
    scheduler, is left to the settings check, which names it."""
    try:
        eta = float(overrides.get("eta", 1.0))
    except (TypeError, ValueError):
        eta = 1.0
    name = str(overrides.get("scheduler", "ddim"))
    if name == "ddim":
        return eta <= 0
    try:
        return not scheduler_draws_noise(name)
    except UgdError:
        return True


def resolve_config(spec: RunSpec, registry: Registry, backbone: str | None = None) -> tuple[SamplerConfig, str | None]:
    """Preset (a name or a JSON file) then overrides -> SamplerConfig; every setting type-checked.
    ``backbone``: the backbone's name when the caller has parsed it."""
    if spec.sampler is not None:
        return SamplerConfig.from_dict(check_settings(dict(spec.sampler), "spec file sampler setting")), spec.preset
    settings: dict[str, Any] = {}
    preset = spec.preset
    bname = backbone or parse_spec(spec.backbone)[0]
    needed = preset is None and spec.guides  # the default preset is the backbone's: it must be known here
    entry = registry.get("backbone", bname) if needed or bname in registry.entries["backbone"] else None
    if preset is None and spec.guides:
        preset = default_preset(entry.default_preset, spec.overrides)
    name = preset
    if preset is not None:
        name, settings = resolve_preset(preset, registry)
        check_settings(settings, f"preset {name!r} setting")
    settings.update(check_settings(spec.overrides))
    if entry is not None and entry.default_steps and "num_steps" not in settings:  # the backbone's own step count
        settings["num_steps"] = entry.default_steps
    return SamplerConfig.from_dict(settings), name


def build_guide(guide: str | Part, registry: Registry, device: str = "cpu") -> tuple[WeightedGuide, dict[str, Any]]:
    """A guide from ``NAME:key=value,...,weight=W`` text (or its :class:`Part`), and its record (with the supplying plugin)."""
    from ugd_core.guidance import WeightedGuide

    part = guide if isinstance(guide, Part) else Part.parse(guide, weighted=True)
    built = registry.build("guide", part.name, part.params, device=device)
    plugin = registry.get("guide", part.name).plugin
    return WeightedGuide(built, part.weight), dict(name=part.name, params=part.params, weight=part.weight, spec=part.text, plugin=plugin)


def build(spec: RunSpec | CheckedSpec, registry: Registry | None = None) -> Built:
    """The models and settings of a spec (a RunSpec is validated first; a CheckedSpec is not parsed again)."""
    reg = registry or get_registry()
    checked = spec if isinstance(spec, CheckedSpec) else validate_spec(spec, reg)
    device = resolve_device(checked.spec.device)
    b = checked.backbone
    backbone = reg.build("backbone", b.name, b.params, device=device)
    items, records = zip(*(build_guide(g, reg, device) for g in checked.guides)) if checked.guides else ((), ())
    brecord = dict(name=b.name, params=b.params, spec=b.text, plugin=reg.get("backbone", b.name).plugin)
    from ugd_core.guidance import GuideSet

    return Built(backbone, GuideSet(items), checked.config, checked.preset, brecord, list(records))
