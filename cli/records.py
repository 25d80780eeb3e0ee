"""Image records (*image specs*): the JSON every generated image carries, and the way back to a RunSpec.

A record names the backbone and each guide with its parameters and the plugin that
supplied it, the complete sampler settings, the seed and its sampling batch, the
torch thread count, device, versions and machine (CPU kernels, GPU). It sits in the PNG's ``ugd`` text chunk and
in a JSON sidecar. :func:`regenerate_from_record` rebuilds the RunSpec that reproduces
an image (its whole batch, bit-exact, or only the image, as a batch of one) after
:func:`check_record` has checked every field a user may have edited.
"""

from __future__ import annotations

import importlib.metadata as md
import json
from pathlib import Path
from typing import Any, Iterable

import torch

from ugd_core.errors import UgdError
from ugd_core.params import parse_spec
from ugd_core.registry import Registry, get_registry

from .spec import Built, Part, RunSpec, is_int, resolve_device

SPEC_VERSION = 1


def versions(registry: Registry, plugins: Iterable[str] = ()) -> dict[str, str]:
    """Versions of ugd, torch, diffusers, transformers and the plugins that were used."""
    out = {}
    for dist in ("ugd", "torch", "diffusers", "transformers"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            pass
    for plugin in plugins:
        info = registry.plugins.get(plugin)
        if info is not None and info.version:
            out[f"plugin:{plugin}"] = info.version
    return out


def machine(device: str) -> dict[str, str]:
    """What the arithmetic ran on, beyond the versions: the CPU kernels torch dispatches to (``DEFAULT``, ``AVX2``,
    ``AVX512``...), and on a GPU its name. Another machine may round the same operations differently, and guided
    steps amplify that (docs/benchmarks.md, "Speed")."""
    out = {"cpu_capability": str(torch.backends.cpu.get_cpu_capability())}
    if device.startswith("cuda"):
        out["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return out


def image_record(spec: RunSpec, built: Built, seeds: list[int], registry: Registry) -> dict[str, Any]:
    """The record shared by the images of one batch (each image adds its ``seed``)."""
    plugins = sorted({built.backbone_record["plugin"]} | {g["plugin"] for g in built.guide_records})
    return dict(
        ugd_spec=SPEC_VERSION,
        backbone=built.backbone_record,
        guides=built.guide_records,
        preset=built.preset_name,
        sampler=built.config.to_dict(),
        prompt=spec.prompt,
        negative_prompt=spec.negative_prompt,
        batch_seeds=seeds,
        device=resolve_device(spec.device),
        torch_threads=torch.get_num_threads(),  # same seed, same pixels only at the same thread count
        versions=versions(registry, plugins),
        machine=machine(resolve_device(spec.device)),  # ... and on a machine that rounds the same way
    )


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
            record = json.loads(text)
        else:
            record = json.loads(p.read_text())
    except UgdError:
        raise
    except Exception as exc:
        raise UgdError(f"cannot read spec from {str(p)!r} ({type(exc).__name__}: {exc}); pass a .json sidecar or .png from `ugd generate`") from None
    if not isinstance(record, dict):
        raise UgdError(f"spec file {str(p)!r} holds no JSON object; pass a .json sidecar or .png from `ugd generate`")
    record.pop("stats", None)
    return record


# -- checking an edited record ---------------------------------------------------------------


def _same(a: Any, b: Any) -> bool:
    """Equal as written or as numbers/booleans ('7' == 7, '0.50' == 0.5, 'true' == True)."""
    sa, sb = str(a).strip().lower(), str(b).strip().lower()
    if sa == sb:
        return True
    try:
        return float(sa) == float(sb)
    except ValueError:
        return False


def _check_part(part: Any, what: str, where: str, weighted: bool) -> None:
    """A backbone or guide entry: a ``spec`` text, and ``name``/``params``/``weight`` that agree with it."""
    if not isinstance(part, dict) or not isinstance(part.get("spec"), str):
        raise UgdError(f"{where}: {what} needs a 'spec' text such as \"digit:label=7\"")
    text = part["spec"]
    parsed = Part.parse(text, weighted)
    name, params, weight = parsed.name, parsed.params, parsed.weight
    if "name" in part and part["name"] != name:
        raise UgdError(f"{where}: {what} name {part['name']!r} contradicts its spec {text!r}; edit one so they agree")
    given = part.get("params", params)
    if not isinstance(given, dict):
        raise UgdError(f"{where}: {what} params {given!r} must be a mapping; edit the spec {text!r} instead")
    for key in sorted(set(given) | set(params)):
        if key not in given or key not in params or not _same(given[key], params[key]):
            raise UgdError(
                f"{where}: {what} params {key}={given.get(key, '(absent)')!r} contradicts its spec {text!r} "
                f"({key}={params.get(key, '(absent)')!r}); edit one so they agree"
            )
    if weighted and "weight" in part and not (isinstance(part["weight"], (int, float)) and _same(part["weight"], weight)):
        raise UgdError(f"{where}: {what} weight {part['weight']!r} contradicts its spec {text!r} (weight {weight}); edit one so they agree")


def check_record(record: dict[str, Any], source: str | Path = "image spec") -> None:
    """Check every field of a (possibly hand-edited) image record; one UgdError line naming the field.

    Types and ranges (seed a whole number >= 0, sampler settings by type), required
    fields (``backbone``, ``guides``, ``sampler``, ``seed``), and consistency between each
    ``spec`` text and its ``name``/``params``/``weight``. Sampler settings are checked in
    full by :func:`cli.spec.validate_spec` when the RunSpec runs.
    """
    where = f"spec file {source}"
    if record.get("ugd_spec") != SPEC_VERSION:
        raise UgdError(f"{where} is not a ugd image spec (no 'ugd_spec': {SPEC_VERSION}); pass a JSON sidecar or PNG written by `ugd generate`")
    for key in ("backbone", "guides", "sampler", "seed"):
        if key not in record:
            raise UgdError(f"{where}: missing field {key!r}; start from a sidecar written by `ugd generate` and edit its values")
    seed = record["seed"]
    if not is_int(seed) or seed < 0:
        raise UgdError(f"{where}: seed {seed!r} must be a whole number >= 0, e.g. \"seed\": 7")
    batch = record.get("batch_seeds", [seed])
    if not isinstance(batch, list) or not batch or not all(is_int(s) and s >= 0 for s in batch):
        raise UgdError(f"{where}: batch_seeds {batch!r} must be a list of whole numbers >= 0")
    if batch != list(range(batch[0], batch[0] + len(batch))):
        raise UgdError(f"{where}: batch_seeds {batch!r} are not consecutive; edit 'seed' only, or delete 'batch_seeds'")
    if not isinstance(record["sampler"], dict):
        raise UgdError(f"{where}: sampler {record['sampler']!r} must be a mapping of sampler settings")
    for key in ("preset", "prompt", "negative_prompt"):
        if record.get(key) is not None and not isinstance(record[key], str):
            raise UgdError(f"{where}: {key} {record[key]!r} must be a text or null")
    best_of = record.get("best_of", {"n": 1})
    if not isinstance(best_of, dict) or not is_int(best_of.get("n", 1)) or best_of.get("n", 1) < 1:
        raise UgdError(f"{where}: best_of {best_of!r} must be an object whose n is a whole number >= 1, e.g. "
                       "\"best_of\": {\"n\": 4}; or delete it for one sample per seed")
    for key, value in record["sampler"].items():  # SamplerConfig.to_dict writes a Python callable by name only
        if isinstance(value, str) and value.startswith("<callable"):
            raise UgdError(f"{where}: sampler {key} was a Python function ({value}), which a record cannot hold, so this "
                           f"image cannot be made again from it; edit {key} to a name (e.g. \"constant\") to run with that instead")
    if not isinstance(record.get("device", "cpu"), str):
        raise UgdError(f"{where}: device {record['device']!r} must be a text such as \"cpu\"")
    for key in ("versions", "machine"):
        value = record.get(key, {})
        if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
            raise UgdError(f"{where}: {key} {value!r} must be a mapping of names to texts, as `ugd generate` writes it; or delete it")
    threads = record.get("torch_threads")
    if threads is not None and (not is_int(threads) or threads < 1):
        raise UgdError(f"{where}: torch_threads {threads!r} must be a whole number >= 1")
    _check_part(record["backbone"], "backbone", where, weighted=False)
    if not isinstance(record["guides"], list):
        raise UgdError(f"{where}: guides {record['guides']!r} must be a list")
    for i, guide in enumerate(record["guides"], 1):
        _check_part(guide, f"guide {i}", where, weighted=True)


# -- back to a RunSpec -----------------------------------------------------------------------


def _spec_for(record: dict[str, Any], seeds: list[int]) -> RunSpec:
    return RunSpec(
        backbone=record["backbone"]["spec"],
        guides=[g["spec"] for g in record["guides"]],
        preset=record.get("preset"),
        sampler=dict(record["sampler"]),  # the complete settings, so the preset is not looked up again
        prompt=record.get("prompt"),
        negative_prompt=record.get("negative_prompt"),
        seed=seeds[0],
        num_images=len(seeds),
        batch_size=len(seeds),
        device=record.get("device", "cpu"),
        threads=record.get("torch_threads"),
        lanes=1,  # one batch, on the recorded thread count
        best_of=int(record.get("best_of", {}).get("n", 1)),
    )


def spec_from_image_record(record: dict[str, Any]) -> tuple[RunSpec, int]:
    """The RunSpec that regenerates an image's batch, and the image's position in it.

    A record whose seed was edited (it is no longer in ``batch_seeds``) gives a batch of one.
    """
    check_record(record)
    seed, batch = record["seed"], record.get("batch_seeds", [record["seed"]])
    if seed not in batch:
        return _spec_for(record, [seed]), 0
    return _spec_for(record, batch), batch.index(seed)


def _plugin_notes(record: dict[str, Any], registry: Registry) -> list[str]:
    """Where an installed plugin other than the recorded one now supplies a name."""
    notes = []
    parts = [("backbone", record["backbone"])] + [("guide", g) for g in record["guides"]]
    for kind, part in parts:
        name, recorded = parse_spec(part["spec"])[0], part.get("plugin")
        try:
            entry = registry.get(kind, name)
        except UgdError:  # unknown or ambiguous now: validation says so when the spec runs
            continue
        if recorded and entry.plugin != recorded:
            notes.append(f"{kind} {name!r} was supplied by plugin {recorded!r}, now by {entry.plugin!r}: pixels may differ")
    return notes


def _machine_notes(record: dict[str, Any], registry: Registry, device: str) -> list[str]:
    """Where the installed versions, the device the run will use or this machine differ from the recorded ones: the
    same run may then round differently (or, across versions, compute differently), which guided steps amplify."""
    recorded = record.get("versions") or {}
    now = versions(registry, [k.removeprefix("plugin:") for k in recorded if k.startswith("plugin:")])
    notes = [f"recorded with {name} {was}, here {now.get(name, 'not installed')}: pixels may differ"
             for name, was in recorded.items() if now.get(name) != was]
    try:  # the device as this machine resolves it ('auto'); one it lacks or cannot parse is the run's own line later
        resolved = resolve_device(device)
        here = machine(resolved)
    except (UgdError, ValueError, RuntimeError, AssertionError):
        resolved, here = device, machine("cpu")
    was_on = record.get("device", "cpu")
    if resolved.partition(":")[0] != was_on.partition(":")[0]:
        notes.append(f"recorded on device {was_on}, run on {resolved}: pixels may differ")
    for key, what in (("cpu_capability", "CPU kernels"), ("gpu", "GPU")):
        was = (record.get("machine") or {}).get(key)
        if was is not None and key in here and here[key] != was:
            notes.append(f"recorded on {what} {was}, here {here[key]}: pixels may differ")
    return notes


def regenerate_from_record(path: str | Path, *, single: bool = False, registry: Registry | None = None,
                           device: str | None = None) -> tuple[RunSpec, str]:
    """The RunSpec that reproduces a generated image, and one line saying what it regenerates.

    By default the image's whole sampling batch, every image of it written (bit-exact: a
    batch is sampled as one tensor, so an image's pixels depend on the batch it was drawn
    in); with ``single``
    only that image, as a batch of one (its pixels may differ slightly from the original's).
    A record whose seed was edited regenerates that seed alone. The spec pins the recorded
    torch thread count and the recorded device unless ``device`` is given (``--device``); the line also names each
    plugin, version, device kind, CPU kernel set or GPU that differs here.
    """
    record = read_image_record(path)
    check_record(record, path)
    seed, batch = record["seed"], record.get("batch_seeds", [record["seed"]])
    name = f"ugd-{seed:06d}"
    if seed not in batch:
        spec = _spec_for(record, [seed])
        what = f"regenerating seed {seed} alone (it is not in the recorded batch, seeds {batch[0]}-{batch[-1]}), as a batch of one"
    elif len(batch) == 1:
        spec = _spec_for(record, batch)
        what = f"regenerating {name} (seed {seed}), bit-exact"
    elif single:
        spec = _spec_for(record, [seed])
        what = (
            f"regenerating only {name} (seed {seed}) as a batch of one; its pixels may differ slightly "
            f"from the original's, which was sampled in a batch of {len(batch)}"
        )
    else:
        spec = _spec_for(record, batch)
        what = (
            f"regenerating the whole batch of {len(batch)} images (seeds {batch[0]}-{batch[-1]}) that {name} belongs to, "
            f"for bit-exact output; pass --single to regenerate only this image"
        )
    if device is not None:
        spec.device = device
    reg = registry or get_registry()
    notes = _plugin_notes(record, reg) + _machine_notes(record, reg, spec.device)
    return spec, "; ".join([what, *notes])
