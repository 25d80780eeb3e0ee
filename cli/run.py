"""A whole generation run described by data: what the CLI, the SDK and remote workers share.

A :class:`RunSpec` names a backbone, guides (``NAME:key=value`` specs), a preset,
knob overrides, a prompt, seeds and a device. :func:`generate` turns it into
images; every image carries a JSON record (its *image spec*) from which
:func:`spec_from_image_record` rebuilds a RunSpec that reproduces it exactly.
"""

from __future__ import annotations

import importlib.metadata as md
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

from ugd_core.config import SamplerConfig, check_knobs, resolve_preset
from ugd_core.errors import UgdError
from ugd_core.guidance import GuideSet, WeightedGuide
from ugd_core.params import parse_spec
from ugd_core.registry import Registry, get_registry
from ugd_core.sampler import sample

DEFAULT_BACKBONE = "digits"
SPEC_VERSION = 1


@dataclass
class RunSpec:
    """Everything that determines a run's images."""

    backbone: str = DEFAULT_BACKBONE
    guides: list[str] = field(default_factory=list)
    preset: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    prompt: str | None = None
    negative_prompt: str | None = None
    seed: int = 0
    num_images: int = 1
    batch_size: int = 16
    device: str = "cpu"
    sampler: dict[str, Any] | None = None  # complete settings (from an image spec): bypasses preset and overrides

    def seeds(self) -> list[int]:
        """Image i gets seed + i."""
        return [self.seed + i for i in range(self.num_images)]

    def batches(self) -> list[list[int]]:
        """Seeds grouped into sampling batches (the unit of work)."""
        s = self.seeds()
        return [s[i : i + self.batch_size] for i in range(0, len(s), self.batch_size)]


@dataclass
class Built:
    """The objects a RunSpec resolves to."""

    backbone: Any
    guides: GuideSet
    config: SamplerConfig
    preset_name: str | None
    backbone_record: dict[str, Any]
    guide_records: list[dict[str, Any]]


def resolve_device(device: str) -> str:
    """'auto' -> cuda when available; an unavailable CUDA device is a UgdError."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UgdError(f"device {device!r} requested but CUDA is not available here; use --device cpu")
    return device


def resolve_config(spec: RunSpec, registry: Registry) -> tuple[SamplerConfig, str | None]:
    """Preset (a name or a JSON file) then overrides -> SamplerConfig."""
    if spec.sampler is not None:
        return SamplerConfig.from_dict(dict(spec.sampler)), spec.preset
    settings: dict[str, Any] = {}
    preset = spec.preset
    if preset is None and spec.guides:  # the backbone's own default preset, else the paper's
        bname = parse_spec(spec.backbone)[0]
        entry = registry.entries["backbone"].get(bname)
        preset = (entry.default_preset if entry is not None else "") or "ugd"
    name = preset
    if preset is not None:
        name, settings = resolve_preset(preset, registry)
    settings.update(check_knobs(spec.overrides))
    return SamplerConfig.from_dict(settings), name


def build(spec: RunSpec, registry: Registry | None = None) -> Built:
    """Resolve backbone, guides and sampler settings of a RunSpec."""
    reg = registry or get_registry()
    device = resolve_device(spec.device)
    config, preset_name = resolve_config(spec, reg)
    bname, bparams = parse_spec(spec.backbone)
    if bname not in reg.entries["backbone"] and bname == DEFAULT_BACKBONE:
        raise UgdError(
            f"the default backbone {DEFAULT_BACKBONE!r} is not installed; `pip install -e ugd_plugins/digits` or pass --backbone NAME"
        )
    backbone = reg.build("backbone", bname, bparams, device=device)
    items, records = [], []
    for text in spec.guides:
        item, record = build_guide(text, reg, device)
        items.append(item)
        records.append(record)
    brecord = dict(name=bname, params=bparams, spec=spec.backbone)
    return Built(backbone, GuideSet(items), config, preset_name, brecord, records)


def build_guide(text: str, registry: Registry, device: str = "cpu") -> tuple[WeightedGuide, dict[str, Any]]:
    """A guide from ``NAME:key=value,...,weight=W`` text, and its record for the run spec."""
    name, params = parse_spec(text)
    weight = _weight(params.pop("weight", "1.0"), name)
    guide = registry.build("guide", name, params, device=device)
    return WeightedGuide(guide, weight), dict(name=name, params=params, weight=weight, spec=text)


def _weight(raw: str, guide: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise UgdError(f"{guide}: weight={raw!r} is not a number; write e.g. {guide}:weight=2.0") from None


def versions(registry: Registry, names: Iterable[str] = ()) -> dict[str, str]:
    """Versions of ugd, torch, diffusers and the plugins that were used."""
    out = {}
    for dist in ("ugd", "torch", "diffusers", "transformers"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            pass
    for plugin in names:
        info = registry.plugins.get(plugin)
        if info is not None and info.version:
            out[f"plugin:{plugin}"] = info.version
    return out


@dataclass
class GeneratedImage:
    """One image (CHW in [-1, 1]), its reproducible record, and what its batch cost."""

    image: torch.Tensor
    record: dict[str, Any]
    stats: dict[str, Any] = field(default_factory=dict)


def generate_batch(
    spec: RunSpec,
    seeds: list[int],
    built: Built | None = None,
    registry: Registry | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[GeneratedImage]:
    """Sample the images of one batch of seeds (the unit a worker executes)."""
    reg = registry or get_registry()
    b = built or build(spec, reg)
    result = sample(
        b.backbone,
        b.guides,
        b.config,
        num_images=len(seeds),
        seed=seeds,
        prompt=spec.prompt,
        negative_prompt=spec.negative_prompt,
        progress=progress,
    )
    plugins = {reg.get("backbone", b.backbone_record["name"]).plugin} | {
        reg.get("guide", g["name"]).plugin for g in b.guide_records
    }
    common = dict(
        ugd_spec=SPEC_VERSION,
        backbone=b.backbone_record,
        guides=b.guide_records,
        preset=b.preset_name,
        sampler=b.config.to_dict(),
        prompt=spec.prompt,
        negative_prompt=spec.negative_prompt,
        batch_seeds=seeds,
        device=resolve_device(spec.device),
        versions=versions(reg, sorted(plugins)),
    )
    stats = result.stats.to_dict()
    return [GeneratedImage(result.images[i].cpu(), dict(common, seed=s), stats) for i, s in enumerate(seeds)]


def generate(spec: RunSpec, registry: Registry | None = None, progress: Callable[[int, int], None] | None = None) -> list[GeneratedImage]:
    """All images of a RunSpec, batch by batch, models built once."""
    reg = registry or get_registry()
    built = build(spec, reg)
    out: list[GeneratedImage] = []
    for seeds in spec.batches():
        out.extend(generate_batch(spec, seeds, built, reg, progress))
    return out


def spec_from_image_record(record: dict[str, Any]) -> tuple[RunSpec, int]:
    """The RunSpec that regenerates an image's batch, and the image's position in it."""
    if record.get("ugd_spec") != SPEC_VERSION:
        raise UgdError("not a ugd image spec (missing 'ugd_spec'); pass a JSON sidecar or PNG written by `ugd generate`")
    seeds = list(record["batch_seeds"])
    sampler = {k: v for k, v in record["sampler"].items() if not (isinstance(v, str) and v.startswith("<callable"))}
    spec = RunSpec(
        backbone=record["backbone"]["spec"],
        guides=[g["spec"] for g in record["guides"]],
        preset=record.get("preset"),
        sampler=sampler,  # the complete settings, so the preset is not looked up again
        prompt=record.get("prompt"),
        negative_prompt=record.get("negative_prompt"),
        seed=seeds[0],
        num_images=len(seeds),
        batch_size=len(seeds),
        device=record.get("device", "cpu"),
    )
    if seeds != spec.seeds():
        raise UgdError("image spec has non-consecutive batch seeds; it was not written by `ugd generate`")
    return spec, seeds.index(record["seed"])


def read_image_record(path: str | Path) -> dict[str, Any]:
    """The record of a generated image, from its JSON sidecar or its PNG text chunk."""
    p = Path(path)
    if not p.exists():
        raise UgdError(f"spec file {str(p)!r} does not exist; pass the .json sidecar or .png written by `ugd generate`")
    try:
        if p.suffix.lower() == ".png":
            from PIL import Image

            with Image.open(p) as im:
                text = im.text.get("ugd")  # type: ignore[attr-defined]
            if text is None:
                raise UgdError(f"{str(p)!r} carries no ugd spec; pass a PNG written by `ugd generate` or its .json sidecar")
            return json.loads(text)
        record = json.loads(p.read_text())
        record.pop("stats", None)
        return record
    except UgdError:
        raise
    except Exception as exc:
        raise UgdError(f"cannot read spec from {str(p)!r} ({type(exc).__name__}: {exc}); pass a .json sidecar or .png from `ugd generate`") from None


def image_name(seed: int) -> str:
    """File stem of the image with that seed."""
    return f"ugd-{seed:06d}"


def output_paths(out_dir: Path, seeds: Iterable[int]) -> list[tuple[Path, Path]]:
    """(png, json) paths for each seed."""
    return [(out_dir / f"{image_name(s)}.png", out_dir / f"{image_name(s)}.json") for s in seeds]


def check_outputs_free(out_dir: Path, seeds: Iterable[int], overwrite: bool) -> None:
    """UgdError if any output exists and ``overwrite`` is False (checked before any work)."""
    if overwrite:
        return
    taken = [p for pair in output_paths(out_dir, seeds) for p in pair if p.exists()]
    if taken:
        raise UgdError(f"{taken[0]} already exists ({len(taken)} output files in all); pass --overwrite or choose another --out")


def to_pil(image: torch.Tensor) -> Any:
    """CHW in [-1, 1] -> PIL image (L for one channel, RGB for three)."""
    from PIL import Image

    arr = ((image.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(arr[:, :, 0], "L") if arr.shape[2] == 1 else Image.fromarray(arr, "RGB")


def save_image(item: GeneratedImage, out_dir: Path, overwrite: bool = False) -> tuple[Path, Path]:
    """Write the PNG (spec in its 'ugd' text chunk) and the JSON sidecar; never clobbers without ``overwrite``."""
    from PIL.PngImagePlugin import PngInfo

    out_dir.mkdir(parents=True, exist_ok=True)
    png, side = output_paths(out_dir, [item.record["seed"]])[0]
    if not overwrite and (png.exists() or side.exists()):
        raise UgdError(f"{png} already exists; pass --overwrite or choose another --out")
    info = PngInfo()
    info.add_text("ugd", json.dumps(item.record, sort_keys=True))  # the spec only: same spec, same bytes
    tmp = png.with_suffix(".png.tmp")
    to_pil(item.image).save(tmp, format="PNG", pnginfo=info)
    side.write_text(json.dumps(dict(item.record, stats=item.stats), indent=2, sort_keys=True))
    tmp.replace(png)
    return png, side


def spec_to_dict(spec: RunSpec) -> dict[str, Any]:
    """JSON-ready RunSpec."""
    return asdict(spec)
