"""The page's form, without Gradio: widgets made from declared :class:`Param`\\ s and knobs, and the
way between form values, ``NAME:key=value`` texts, a :class:`RunSpec` and an image record.

Every check is the CLI's (:func:`cli.spec.check_settings`, :func:`cli.spec.validate_spec`,
:func:`ugd_core.params.resolve_params`); :func:`check_form` only says which field a message
belongs to.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from ugd_core.config import SamplerConfig
from ugd_core.errors import UgdError
from ugd_core.params import Param, parse_spec, resolve_params
from ugd_core.registry import Registry
from ugd_core.schedules import SCHEDULER_ALIASES

from ..records import check_record
from ..spec import DEFAULT_BACKBONE, DEFAULT_BATCH_SIZE, Part, RunSpec, check_settings, default_preset, resolve_config, validate_spec

# -- parameters of guides and backbones ------------------------------------------------------

WIDGETS = ("number", "text", "choice", "flag")


def widget_of(p: Param) -> str:
    """The input a parameter gets: choices -> choice, bool -> flag, int/float -> number, else text
    (a ``path`` text also gets an upload button)."""
    if p.choices:
        return "choice"
    return {"bool": "flag", "int": "number", "float": "number"}.get(p.type, "text")


def param_info(p: Param) -> str:
    """The help line under a parameter's input: its help, type and default (or 'required')."""
    default = "required" if p.required else f"default {p.default!r}" if p.default not in (None, "") else "optional"
    return f"{p.help} ({p.type}, {default})".strip()


def quote(value: str) -> str:
    """A value as it must be written inside ``NAME:key=value`` (quoted when it holds a comma or quote)."""
    if any(c in value for c in ",\"'") or value != value.strip():
        return f"'{value}'" if '"' in value else f'"{value}"'
    return value


def format_value(p: Param, value: Any) -> str | None:
    """A form value as parameter text; None when the field is empty (the parameter's default applies)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool) or p.type == "bool":
        return "true" if value else "false"
    if p.type == "int" and isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip() if isinstance(value, str) else repr(value) if isinstance(value, float) else str(value)


def part_text(name: str, params: list[Param], values: dict[str, Any], weight: float | None = None) -> str:
    """``NAME:key=value,...`` from form values, in declared order; ``weight`` added unless 1."""
    items = []
    for p in params:
        text = format_value(p, values.get(p.name))
        if text is not None:
            items.append(f"{p.name}={quote(text)}")
    if weight is not None and float(weight) != 1.0:
        items.append(f"weight={float(weight):g}")
    return f"{name}:{','.join(items)}" if items else name


def form_values(params: list[Param], raw: dict[str, str]) -> dict[str, Any]:
    """Parameter texts (from a spec) as form values: numbers and flags typed, the rest as given."""
    out: dict[str, Any] = {}
    for p in params:
        if p.name not in raw:
            continue
        text = raw[p.name]
        if widget_of(p) not in ("flag", "number"):
            out[p.name] = text
            continue
        try:
            out[p.name] = p.coerce(text, "record")
        except UgdError:
            out[p.name] = None  # not restorable into a typed field: the default applies
    return out


# -- sampler knobs ----------------------------------------------------------------------------

TOP_KNOBS = ("num_steps", "scheduler")  # shown beside seed and number of images, not among the preset's knobs
_MINIMUMS = {"num_steps": 1, "recurrence": 1, "smoothing_probes": 1, "zo_probes": 1, "backward_steps": 0}
_HELP = {
    "num_steps": "sampling steps", "scheduler": "ddim, an alias or a diffusers scheduler class",
    "eta": "DDIM stochasticity, 0 = deterministic", "cfg_scale": "classifier-free guidance (text backbones)",
    "forward_strength": "forward guidance strength s", "backward_steps": "backward guidance steps m (0 = off)",
    "backward_lr": "backward guidance step size", "recurrence": "self-recurrence k (1 = off)",
}


@dataclass(frozen=True)
class Knob:
    """One sampler setting as a field: its name (as ``--set``), kind, default and choices."""

    name: str
    kind: str  # bool | int | float | window | dict | str | any
    default: Any
    choices: tuple[str, ...] = ()

    @property
    def info(self) -> str:
        low = _MINIMUMS.get(self.name)
        rng = f", >= {low}" if low is not None else ", >= 0" if self.name in ("eta", "backward_lr", "smoothing_std", "zo_std") else ""
        help = _HELP.get(self.name, "")
        return f"{help + ' · ' if help else ''}--set {self.name}=… ({self.kind}{rng})"


def _kind(default: Any) -> str:
    for cls, name in ((bool, "bool"), (int, "int"), (float, "float"), (tuple, "window"), (dict, "dict"), (str, "str")):
        if isinstance(default, cls):
            return name
    return "any"


def _choices(name: str, kind: str) -> tuple[str, ...]:
    """The values SamplerConfig accepts for a text knob, read from its own check (so they never drift)."""
    if name == "scheduler":
        return ("ddim", *SCHEDULER_ALIASES, "DDIMScheduler", "DPMSolverMultistepScheduler", "EulerDiscreteScheduler")
    if kind != "str":
        return ()
    try:
        SamplerConfig(**{name: "\x00"})
    except UgdError as exc:
        m = re.search(r"is not one of (.+?)(?: \(did you mean|$)", str(exc))
        if m:
            return tuple(c.strip() for c in m.group(1).split(","))
    return ()


def knobs() -> list[Knob]:
    """Every sampler setting, in SamplerConfig's order."""
    out = []
    for f in fields(SamplerConfig):
        default = f.default_factory() if f.default is MISSING else f.default  # type: ignore[misc]
        kind = _kind(default)
        out.append(Knob(f.name, kind, default, _choices(f.name, kind)))
    return out


def knob_to_widget(k: Knob, value: Any) -> Any:
    """A setting's value as its field shows it (windows and mappings as JSON text)."""
    if k.kind in ("window", "dict"):
        return json.dumps(list(value) if isinstance(value, tuple) else value)
    if k.kind == "str" and callable(value):
        return getattr(value, "__name__", str(value))
    return value


def widget_to_knob(k: Knob, value: Any) -> Any:
    """A field's value as a setting (JSON text parsed as ``--set`` does; numbers as typed)."""
    if k.kind in ("window", "dict", "any") and isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    if k.kind == "int" and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def base_settings(preset: str | None, backbone: str, has_guides: bool, registry: Registry) -> dict[str, Any]:
    """Every knob's value before any ``--set``: the CLI's own resolution (the preset, else the backbone's
    default preset when guides are given, and the backbone's default step count)."""
    spec = RunSpec(backbone=backbone, guides=["-"] if has_guides else [], preset=preset or None)
    return resolve_config(spec, registry)[0].to_dict()


def effective_preset(preset: str | None, backbone: str, has_guides: bool, registry: Registry) -> str | None:
    """The preset a run uses: the chosen one, else the backbone's default when guides are given (the CLI's rule,
    :func:`cli.spec.default_preset`, named for the default scheduler)."""
    if preset:
        return preset
    if not has_guides:
        return None
    try:
        return default_preset(registry.get("backbone", parse_spec(backbone)[0]).default_preset, {})
    except UgdError:
        return None


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))
    return a == b


# -- the whole form ---------------------------------------------------------------------------


@dataclass
class GuideForm:
    """One guide as the form holds it."""

    name: str
    values: dict[str, Any] = field(default_factory=dict)
    weight: float = 1.0


@dataclass
class Form:
    """Every field of the page, as plain values."""

    backbone: str = DEFAULT_BACKBONE
    backbone_values: dict[str, Any] = field(default_factory=dict)
    guides: list[GuideForm] = field(default_factory=list)
    preset: str | None = None
    knobs: dict[str, Any] = field(default_factory=dict)  # knob name -> field value (only shown knobs)
    prompt: str | None = None
    negative_prompt: str | None = None
    seed: Any = 0
    num_images: Any = 1
    batch_size: Any = DEFAULT_BATCH_SIZE
    device: str = "cpu"
    threads: Any = None
    best_of: Any = 1


class FieldError(UgdError):
    """A UgdError and the field it belongs to: ``backbone``, ``guide:I``, ``knob:NAME``, ``preset``, ``run``."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(message)
        self.where = where


def backbone_text(form: Form, registry: Registry) -> str:
    """The backbone as ``NAME:key=value`` text."""
    params = registry.get("backbone", form.backbone).params if form.backbone in registry.entries["backbone"] else []
    return part_text(form.backbone, params, form.backbone_values)


def guide_texts(form: Form, registry: Registry) -> list[str]:
    """Each guide as ``NAME:key=value,...,weight=W`` text."""
    out = []
    for g in form.guides:
        params = registry.get("guide", g.name).params if g.name in registry.entries["guide"] else []
        out.append(part_text(g.name, params, g.values, g.weight))
    return out


def _int_or(value: Any, default: Any) -> Any:
    if value is None or value == "":
        return default
    return int(value) if isinstance(value, float) and value.is_integer() else value


def to_spec(form: Form, registry: Registry) -> RunSpec:
    """The RunSpec a form describes; knobs differing from the (effective) preset become overrides."""
    backbone = backbone_text(form, registry)
    guides = guide_texts(form, registry)
    preset = form.preset or None
    base = base_settings(preset, backbone, bool(guides), registry)
    overrides = {}
    for k in knobs():
        if k.name in form.knobs:
            value = widget_to_knob(k, form.knobs[k.name])
            if not _same(value, base[k.name]):
                overrides[k.name] = value
    return RunSpec(
        backbone=backbone, guides=guides, preset=preset, overrides=overrides,
        prompt=(form.prompt or None), negative_prompt=(form.negative_prompt or None),
        seed=_int_or(form.seed, 0), num_images=_int_or(form.num_images, 1), batch_size=_int_or(form.batch_size, DEFAULT_BATCH_SIZE),
        device=form.device or "cpu", threads=_int_or(form.threads, None) or None,  # 0: as is
        **({"best_of": _int_or(form.best_of, 1)} if _has_best_of() else {}),
    )


def _has_best_of() -> bool:
    return "best_of" in {f.name for f in fields(RunSpec)}


def where_of(message: str, form: Form) -> str:
    """The field a one-line UgdError message belongs to (the guide, backbone or knob it names)."""
    for i, g in enumerate(form.guides):
        if message.startswith(f"{g.name}:") or f"guide {g.name!r}" in message:
            return f"guide:{i}"
    for i, g in enumerate(form.guides):  # a plugin's own message naming a value typed there (e.g. a weights file)
        if any(len(str(v)) > 2 and str(v) in message for v in g.values.values() if v not in (None, "")):
            return f"guide:{i}"
    if message.startswith(f"{form.backbone}:") or "backbone" in message.split(";")[0]:
        return "backbone"
    for k in knobs():
        if re.search(rf"(^|setting |\b){re.escape(k.name)}(=| must)", message):
            return f"knob:{k.name}"
    if "preset" in message.split(";")[0]:
        return "preset"
    return "run"


def check_form(form: Form, registry: Registry) -> RunSpec:
    """The checked RunSpec of a form, or a :class:`FieldError`: the CLI's one-line message and its field.

    Parts are checked one by one (so a message lands beside its guide), then the whole spec
    by :func:`validate_spec`, exactly as ``ugd generate`` checks it.
    """
    try:
        spec = to_spec(form, registry)
    except UgdError as exc:
        raise FieldError(where_of(str(exc), form), str(exc)) from None
    try:
        b = Part.parse(spec.backbone)
        resolve_params(b.name, registry.get("backbone", b.name).params, b.params)
    except UgdError as exc:
        raise FieldError("backbone", str(exc)) from None
    for i, text in enumerate(spec.guides):
        try:
            g = Part.parse(text, weighted=True)
            resolve_params(g.name, registry.get("guide", g.name).params, g.params)
        except UgdError as exc:
            raise FieldError(f"guide:{i}", str(exc)) from None
    for name, value in spec.overrides.items():
        try:
            check_settings({name: value})
            SamplerConfig.from_dict({name: value})
        except UgdError as exc:
            raise FieldError(f"knob:{name}", str(exc)) from None
    try:
        validate_spec(spec, registry)
    except UgdError as exc:
        raise FieldError(where_of(str(exc), form), str(exc)) from None
    return spec


def from_record(record: dict[str, Any], registry: Registry, source: str = "image spec") -> Form:
    """The form that regenerates a record's whole batch, bit-exact (as ``--from-spec``): every field restored.

    Knobs take the record's complete sampler settings; seed, count and batch size its batch;
    threads its torch thread count.
    """
    check_record(record, source)
    bname, braw = parse_spec(record["backbone"]["spec"])
    bparams = registry.get("backbone", bname).params if bname in registry.entries["backbone"] else []
    guides = []
    for g in record["guides"]:
        part = Part.parse(g["spec"], weighted=True)
        params = registry.get("guide", part.name).params if part.name in registry.entries["guide"] else []
        guides.append(GuideForm(part.name, form_values(params, part.params), part.weight))
    by_name = {k.name: k for k in knobs()}
    sampler = {k: v for k, v in record["sampler"].items() if k in by_name}
    batch = record.get("batch_seeds", [record["seed"]])
    if record["seed"] not in batch:
        batch = [record["seed"]]
    return Form(
        backbone=bname, backbone_values=form_values(bparams, braw), guides=guides, preset=record.get("preset"),
        knobs={k: knob_to_widget(by_name[k], v) for k, v in sampler.items()},
        prompt=record.get("prompt"), negative_prompt=record.get("negative_prompt"),
        seed=batch[0], num_images=len(batch), batch_size=len(batch), device=record.get("device", "cpu"),
        threads=record.get("torch_threads"), best_of=int((record.get("best_of") or {}).get("n", 1)),
    )
