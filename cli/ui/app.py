"""The Gradio page of ``ugd ui``: compose, watch, results.

The form is generated from the registry: each guide slot and the backbone get rows of typed
inputs (number, text, choice, flag, plus an upload for ``path`` parameters) that a chosen
item's declared :class:`Param`\\ s label and show, so a plugin installed with pip gets its
form with no UI code. Runs go through :func:`cli.run.generate_to_dir` (:mod:`cli.ui.watch`).
"""

from __future__ import annotations

import hashlib
import html
import shutil
import time
from pathlib import Path
from typing import Any, Iterator

import gradio as gr
import pandas as pd

from ugd_core.config import resolve_preset
from ugd_core.errors import UgdError
from ugd_core.params import Param
from ugd_core.registry import Registry, get_registry

from ..records import read_image_record
from ..spec import DEFAULT_BATCH_SIZE, resolve_config
from .form import (
    TOP_KNOBS,
    WIDGETS,
    FieldError,
    Form,
    GuideForm,
    Knob,
    base_settings,
    check_form,
    effective_preset,
    from_record,
    knob_to_widget,
    knobs,
    param_info,
    where_of,
    widget_of,
)
from .watch import Run

MAX_GUIDES = 4
UPLOADS = Path("outputs") / "uploads"  # uploaded reference images, content-addressed so records stay valid
# what the default entry adds where the default is auto: with a scheduler (or eta) that draws no noise, the run uses
# auto-eps instead (cli.spec.default_preset), whatever the page shows
NO_NOISE_NOTE = "; auto-eps where the steps draw no noise"
ERROR_SLOTS = ("backbone", "preset", "steps", "scheduler", "knobs", "run")
CSS = """
.ugd-err p { color: #b91c1c; font-weight: 600; margin: 0; }
.ugd-progress progress { width: 100%; height: 14px; }
.ugd-progress { font-size: 0.95em; }
"""
INTRO = """# ugd — steer a frozen diffusion model with guides
Pick a **backbone** (the diffusion model) and a **preset** (how strongly and how often guidance acts),
add one or more **guides** (networks that judge images: a classifier, a box detector, CLIP, …) with
their parameters, then **Generate**. The preview shows each image's current estimate x0_hat as guidance
pulls it; results are written as PNGs with their full settings inside, exactly as `ugd generate` writes
them. Drop any ugd PNG on *Restore* to get its settings back."""

_RUNS: dict[str, Run] = {}  # session -> its run in progress (for Stop)


def _err(message: str | None) -> Any:
    return gr.update(value=f"⚠ {message}" if message else "", visible=bool(message))


def _error_slot(where: str) -> str:
    """Which error line shows a field's message."""
    if where.startswith("knob:"):
        name = where[5:]
        return {"num_steps": "steps", "scheduler": "scheduler"}.get(name, "knobs")
    return where if where in ERROR_SLOTS or where.startswith("guide:") else "run"


class Page:
    """The components of the page, by key, and the handlers that read and fill them."""

    def __init__(self, registry: Registry) -> None:
        self.reg = registry
        self.knobs = knobs()
        guides = registry.entries["guide"].values()
        backbones = registry.entries["backbone"].values()
        self.rows_g = max((len(e.params) for e in guides), default=0)
        self.rows_b = max((len(e.params) for e in backbones), default=0)
        self.fields: dict[str, Any] = {}  # key -> input component (order = the handlers' argument order)
        self.errors: dict[str, Any] = {}  # error slot -> Markdown
        self.out: dict[str, Any] = {}  # watch and result components

    # -- building ----------------------------------------------------------------------------

    def _rows(self, prefix: str, rows: int, params: list[Param] = ()) -> None:  # type: ignore[assignment]
        """``rows`` generic parameter rows, shown for ``params``; a chosen item's Params relabel and show them."""
        first = self._row_updates(prefix, rows, list(params), {})
        for j in range(rows):
            def init(w: str) -> dict[str, Any]:
                u = dict(first[f"{prefix}.r{j}.{w}"])
                u.pop("__type__", None)
                return dict(u, elem_id=f"ugd-{prefix}-r{j}-{w}", scale=4, min_width=80)  # Gradio sums the min widths of a row's inputs, hidden ones too

            with gr.Row(equal_height=True):
                self.fields[f"{prefix}.r{j}.number"] = gr.Number(**init("number"))
                self.fields[f"{prefix}.r{j}.text"] = gr.Textbox(**init("text"))
                choice = init("choice")
                self.fields[f"{prefix}.r{j}.choice"] = gr.Dropdown(**dict(choice, choices=choice.get("choices", [""])))
                self.fields[f"{prefix}.r{j}.flag"] = gr.Checkbox(**init("flag"))
                up = gr.UploadButton("upload…", size="sm", **dict(init("upload"), scale=1, min_width=90))
                self.fields[f"{prefix}.r{j}.upload"] = up
                up.upload(_store_upload, inputs=[up], outputs=[self.fields[f"{prefix}.r{j}.text"]])

    def _error(self, slot: str) -> None:
        self.errors[slot] = gr.Markdown(visible=False, elem_id=f"ugd-err-{slot.replace(':', '-')}", elem_classes=["ugd-err"])

    def build(self) -> gr.Blocks:
        reg = self.reg
        default_backbone = "digits" if "digits" in reg.entries["backbone"] else next(iter(reg.entries["backbone"]), "")
        with gr.Blocks(title="ugd", analytics_enabled=False) as demo:
            gr.Markdown(INTRO)
            with gr.Row():
                with gr.Column(scale=5):
                    self._compose(default_backbone)
                with gr.Column(scale=4):
                    self._watch()
            self._wire(demo, default_backbone)
        return demo

    def _compose(self, default_backbone: str) -> None:
        reg = self.reg
        restore = gr.File(label="Restore: drop a ugd PNG (or its .json sidecar) here to restore every field",
                          file_types=[".png", ".json"], type="filepath", height=120, elem_id="ugd-restore")
        self.out["restore"] = restore
        self.out["restored"] = gr.Markdown(visible=False, elem_id="ugd-restored")
        with gr.Group():
            with gr.Row():
                self.fields["backbone"] = gr.Dropdown(
                    [(f"{n} · {e.plugin}", n) for n, e in reg.entries["backbone"].items()], value=default_backbone,
                    label="Backbone (diffusion model)", elem_id="ugd-backbone", scale=2)
                self.fields["preset"] = gr.Dropdown(self._preset_choices(default_backbone), value="", allow_custom_value=True,
                                                    label="Preset (guidance method)", elem_id="ugd-preset", scale=2)
            self._rows("bb", self.rows_b, reg.entries["backbone"][default_backbone].params if default_backbone else [])
            self._error("backbone")
            self.out["preset_info"] = gr.Markdown(self._preset_info("", default_backbone), elem_id="ugd-preset-info")
            self._error("preset")
            with gr.Row():
                self.fields["prompt"] = gr.Textbox(label="Prompt (text backbones; a class label for class-conditional ones)", elem_id="ugd-prompt")
                self.fields["negative_prompt"] = gr.Textbox(label="Negative prompt", elem_id="ugd-negative-prompt")
        gr.Markdown("### Guides")
        self.slots = []
        guide_choices = [("— none —", "")] + [(f"{n} · {e.plugin}", n) for n, e in sorted(self.reg.entries["guide"].items())]
        for i in range(MAX_GUIDES):
            with gr.Group(visible=i == 0) as group:
                shown = gr.State(i == 0)
                self.fields[f"g{i}.shown"] = shown
                with gr.Row(equal_height=True):
                    self.fields[f"g{i}.name"] = gr.Dropdown(guide_choices, value="", label=f"Guide {i + 1}", elem_id=f"ugd-g{i}-name", scale=4)
                    self.fields[f"g{i}.weight"] = gr.Slider(0, 50, value=1.0, step=0.05, label="weight", elem_id=f"ugd-g{i}-weight", scale=3)
                    remove = gr.Button("remove", size="sm", scale=1, elem_id=f"ugd-g{i}-remove")
                desc = gr.Markdown(elem_id=f"ugd-g{i}-desc")
                self._rows(f"g{i}", self.rows_g)
                self._error(f"guide:{i}")
            self.slots.append((group, shown, remove, desc))
        self.out["add"] = gr.Button("+ add guide", size="sm", elem_id="ugd-add-guide")
        gr.Markdown("### Run")
        base = base_settings("", default_backbone, True, self.reg)
        with gr.Row():
            self.fields["seed"] = gr.Number(0, precision=0, label="Seed (image i: seed + i)", elem_id="ugd-seed")
            self.fields["num_images"] = gr.Number(4, precision=0, label="Images", elem_id="ugd-num-images")
            self.fields["knob.num_steps"] = gr.Number(base["num_steps"], precision=0, label="Steps", elem_id="ugd-steps")
            by_name = {k.name: k for k in self.knobs}
            self.fields["knob.scheduler"] = gr.Dropdown(list(by_name["scheduler"].choices), value=base["scheduler"], allow_custom_value=True,
                                                        label="Scheduler", elem_id="ugd-scheduler")
        self._error("steps")
        self._error("scheduler")
        with gr.Row():
            self.fields["batch_size"] = gr.Number(DEFAULT_BATCH_SIZE, precision=0, label="Batch size (images sampled together)", elem_id="ugd-batch-size")
            self.fields["device"] = gr.Dropdown(["cpu", "auto", "cuda", "mps"], value="cpu", allow_custom_value=True, label="Device", elem_id="ugd-device")
            self.fields["threads"] = gr.Number(0, precision=0, minimum=0, label="Torch threads (0: as is)", elem_id="ugd-threads")
            self.fields["best_of"] = gr.Number(1, precision=0, label="Best of N (keep the lowest-loss candidate)", elem_id="ugd-best-of")
        with gr.Accordion("Preset knobs (the --set settings; the preset's values shown)", open=False, elem_id="ugd-knobs"):
            with gr.Row():
                for k in self.knobs:
                    if k.name not in TOP_KNOBS:
                        self.fields[f"knob.{k.name}"] = _knob_field(k, base[k.name])
        self._error("knobs")
        self._error("run")
        with gr.Row():
            self.out["generate"] = gr.Button("Generate", variant="primary", elem_id="ugd-generate", scale=3)
            self.out["stop"] = gr.Button("Stop", variant="stop", elem_id="ugd-stop", scale=1)

    def _watch(self) -> None:
        self.out["status"] = gr.HTML(_status_html(None), elem_id="ugd-status")
        self.out["preview"] = gr.Image(label="x0_hat as guidance pulls it (every few steps)", type="pil", interactive=False,
                                       elem_id="ugd-preview", height=220)
        self.out["losses"] = gr.LinePlot(_loss_frame([]), x="step", y="loss", color="guide", title="guide losses on x0_hat",
                                         height=200, elem_id="ugd-losses")
        self.out["gallery"] = gr.Gallery(label="Images (each downloads as the PNG the CLI writes, record inside)", columns=4,
                                         height=260, elem_id="ugd-gallery", interactive=False)
        self.out["sheet"] = gr.Image(label="Contact sheet", type="filepath", interactive=False, elem_id="ugd-sheet", height=260)
        self.out["files"] = gr.File(label="Run files (PNGs with records, JSON sidecars, contact sheet)", file_count="multiple",
                                    interactive=False, elem_id="ugd-files", height=120)
        self.out["line"] = gr.Markdown(elem_id="ugd-line")

    # -- wiring ------------------------------------------------------------------------------

    def _wire(self, demo: gr.Blocks, default_backbone: str) -> None:
        keys = list(self.fields)
        comps = [self.fields[k] for k in keys]
        knob_keys = [k for k in keys if k.startswith("knob.")]
        f = self.fields

        def values(args: tuple[Any, ...]) -> dict[str, Any]:
            return dict(zip(keys, args))

        # backbone: its rows, its default preset's label and knob values
        bb_keys = [k for k in keys if k.startswith("bb.")]

        def on_backbone(name: str, preset: str) -> list[Any]:
            params = self.reg.get("backbone", name).params if name in self.reg.entries["backbone"] else []
            rows = self._row_updates("bb", self.rows_b, params, {})
            return [gr.update(choices=self._preset_choices(name)), self._preset_info(preset, name), *[rows[k] for k in bb_keys],
                    *self._knob_updates(preset, name, knob_keys)]

        info = self.out["preset_info"]
        f["backbone"].input(on_backbone, [f["backbone"], f["preset"]], [f["preset"], info, *[f[k] for k in bb_keys], *[f[k] for k in knob_keys]])
        f["preset"].input(lambda preset, name: [self._preset_info(preset, name), *self._knob_updates(preset, name, knob_keys)],
                          [f["preset"], f["backbone"]], [info, *[f[k] for k in knob_keys]])

        # guide slots: a chosen guide labels and shows its rows
        for i, (group, shown, remove, desc) in enumerate(self.slots):
            gkeys = [k for k in keys if k.startswith(f"g{i}.r")]

            def on_guide(name: str, i: int = i, gkeys: list[str] = gkeys) -> list[Any]:
                entry = self.reg.entries["guide"].get(name)
                rows = self._row_updates(f"g{i}", self.rows_g, entry.params if entry else [], {})
                return [_describe(entry), *[rows[k] for k in gkeys], _err(None)]

            f[f"g{i}.name"].input(on_guide, [f[f"g{i}.name"]], [desc, *[f[k] for k in gkeys], self.errors[f"guide:{i}"]])
            remove.click(lambda: (gr.update(visible=False), False, ""), None, [group, shown, f[f"g{i}.name"]]).then(
                on_guide, [f[f"g{i}.name"]], [desc, *[f[k] for k in gkeys], self.errors[f"guide:{i}"]])

        def add(*flags: bool) -> list[Any]:
            flags_l = list(flags)
            if False in flags_l:
                flags_l[flags_l.index(False)] = True
            return [*(gr.update(visible=v) for v in flags_l), *flags_l]

        shown_states = [s for _, s, _, _ in self.slots]
        self.out["add"].click(add, shown_states, [*(g for g, _, _, _ in self.slots), *shown_states])

        # restore from a dropped PNG: every field, slots and rows included
        err_comps = list(self.errors.values())
        restore_outputs = [*comps, self.out["preset_info"], *(g for g, _, _, _ in self.slots), *(d for _, _, _, d in self.slots), self.out["restored"], *err_comps]

        def on_restore(path: str | None) -> list[Any]:
            if not path:
                return [gr.update() for _ in restore_outputs]
            try:
                form = from_record(read_image_record(path), self.reg, Path(path).name)
            except UgdError as exc:
                return [*(gr.update() for _ in restore_outputs[:-len(err_comps) - 1]), _err(str(exc)), *(_err(None) for _ in err_comps)]
            upd = self._form_updates(form)
            batch = f"seeds {form.seed}–{form.seed + form.num_images - 1}" if form.num_images > 1 else f"seed {form.seed}"
            note = (f"restored every field from **{Path(path).name}**: its batch ({batch}) with the recorded settings; "
                    f"Generate reproduces it bit-exactly, as `ugd generate --from-spec`")
            return [*(upd.get(k, gr.update()) for k in keys), self._preset_info(form.preset or "", form.backbone),
                    *(gr.update(visible=i < len(form.guides) or i == 0) for i in range(MAX_GUIDES)),
                    *(_describe(self.reg.entries["guide"].get(form.guides[i].name)) if i < len(form.guides) else "" for i in range(MAX_GUIDES)),
                    gr.update(value=note, visible=True), *(_err(None) for _ in err_comps)]

        self.out["restore"].upload(on_restore, [self.out["restore"]], restore_outputs)

        # generate and stop
        watch_outputs = [self.out[k] for k in ("status", "preview", "losses", "gallery", "sheet", "files", "line")]
        run_outputs = [*watch_outputs, *err_comps]
        slots = list(self.errors)

        def on_generate(request: gr.Request, *args: Any) -> Iterator[list[Any]]:
            yield from self._generate(values(args), request, slots)

        self.out["generate"].click(on_generate, comps, run_outputs, concurrency_limit=1, concurrency_id="sampling",
                                   show_progress="minimal", show_progress_on=[self.out["status"]], api_visibility="private")

        def on_stop(request: gr.Request) -> None:
            run = _RUNS.get(request.session_hash or "")
            if run is not None:
                run.stop()

        self.out["stop"].click(on_stop, None, None, concurrency_limit=None, api_visibility="private")

    # -- handlers ----------------------------------------------------------------------------

    def _preset_choices(self, backbone: str) -> list[tuple[str, str]]:
        default = effective_preset("", backbone, True, self.reg) or "none"
        return [(f"default for {backbone} ({default}{NO_NOISE_NOTE if default == 'auto' else ''})", "")] + [(n, n) for n in self.reg.entries["preset"]]

    def _preset_info(self, preset: str, backbone: str) -> str:
        """One line under the preset: its settings and where their values come from."""
        name = effective_preset(preset, backbone, True, self.reg)
        if not name:
            return ""
        try:
            settings = resolve_preset(name, self.reg)[1]
        except UgdError as exc:
            return f"⚠ {exc}"
        entry = self.reg.entries["preset"].get(name)
        source = f" — {entry.source}" if entry is not None and entry.source else ""
        values = ", ".join(f"{k}={v}" for k, v in settings.items()) or "the sampler's defaults"
        note = NO_NOISE_NOTE if not preset and name == "auto" else ""  # cli.spec.default_preset's rule
        return f"preset **{html.escape(name)}**{html.escape(note)}: {html.escape(values)}{html.escape(source)}"

    def _knob_updates(self, preset: str, backbone: str, knob_keys: list[str]) -> list[Any]:
        try:
            base = base_settings(preset, backbone, True, self.reg)
        except UgdError:
            return [gr.update() for _ in knob_keys]
        by_name = {k.name: k for k in self.knobs}
        return [gr.update(value=knob_to_widget(by_name[k[5:]], base[k[5:]])) for k in knob_keys]

    def _row_updates(self, prefix: str, rows: int, params: list[Param], values: dict[str, Any]) -> dict[str, Any]:
        """Updates of ``rows`` parameter rows for ``params`` filled with ``values`` (empty: the default applies)."""
        out: dict[str, Any] = {}
        for j in range(rows):
            p = params[j] if j < len(params) else None
            kind = widget_of(p) if p else ""
            for w in WIDGETS:
                key = f"{prefix}.r{j}.{w}"
                if p is None or w != kind:
                    out[key] = gr.update(visible=False, value=None if w != "choice" else "")
                    continue
                label = f"{p.name}{' *' if p.required else ''}"
                value = values.get(p.name)
                extra: dict[str, Any] = {}
                if w == "number":
                    extra = dict(precision=0 if p.type == "int" else None, placeholder="default" if not p.required else "required")
                elif w == "text":
                    extra = dict(placeholder=str(p.default) if p.default not in (None, "") else ("required" if p.required else "(default)"))
                elif w == "choice":
                    extra = dict(choices=[(f"(default: {p.default})", "")] + [(c, c) for c in p.choices or ()])
                    value = value or ""
                elif w == "flag":
                    value = bool(p.default) if value is None else value
                out[key] = gr.update(visible=True, label=label, info=param_info(p), value=value, **extra)
            out[f"{prefix}.r{j}.upload"] = gr.update(visible=p is not None and p.type == "path")
        return out

    def _form_updates(self, form: Form) -> dict[str, Any]:
        """Updates that put a whole :class:`Form` on the page."""
        reg = self.reg
        bparams = reg.get("backbone", form.backbone).params if form.backbone in reg.entries["backbone"] else []
        upd: dict[str, Any] = {
            "backbone": gr.update(value=form.backbone), "preset": gr.update(value=form.preset or "", choices=self._preset_choices(form.backbone)),
            "prompt": form.prompt or "", "negative_prompt": form.negative_prompt or "", "seed": form.seed,
            "num_images": form.num_images, "batch_size": form.batch_size, "device": gr.update(value=form.device), "threads": form.threads or 0, "best_of": form.best_of,
            **self._row_updates("bb", self.rows_b, bparams, form.backbone_values),
        }
        base = base_settings(form.preset or "", form.backbone, bool(form.guides), reg)
        for k in self.knobs:
            upd[f"knob.{k.name}"] = gr.update(value=form.knobs.get(k.name, knob_to_widget(k, base[k.name])))
        for i in range(MAX_GUIDES):
            g = form.guides[i] if i < len(form.guides) else GuideForm("")
            entry = reg.entries["guide"].get(g.name)
            upd[f"g{i}.shown"] = i < len(form.guides) or i == 0
            upd[f"g{i}.name"] = gr.update(value=g.name)
            upd[f"g{i}.weight"] = gr.update(value=g.weight, maximum=max(50.0, g.weight))
            upd.update(self._row_updates(f"g{i}", self.rows_g, entry.params if entry else [], g.values))
        return upd

    def to_form(self, v: dict[str, Any]) -> Form:
        """The :class:`Form` of the page's current values."""
        reg = self.reg

        def part_values(prefix: str, params: list[Param]) -> dict[str, Any]:
            return {p.name: v.get(f"{prefix}.r{j}.{widget_of(p)}") for j, p in enumerate(params)}

        backbone = v["backbone"] or ""
        bparams = reg.get("backbone", backbone).params if backbone in reg.entries["backbone"] else []
        guides = []
        for i in range(MAX_GUIDES):
            name = v.get(f"g{i}.name") or ""
            if not name or not v.get(f"g{i}.shown"):
                continue
            entry = reg.entries["guide"].get(name)
            guides.append(GuideForm(name, part_values(f"g{i}", entry.params if entry else []), float(v[f"g{i}.weight"])))
        return Form(
            backbone=backbone, backbone_values=part_values("bb", bparams), guides=guides, preset=v["preset"] or None,
            knobs={k[5:]: val for k, val in v.items() if k.startswith("knob.")}, prompt=v["prompt"], negative_prompt=v["negative_prompt"],
            seed=v["seed"], num_images=v["num_images"], batch_size=v["batch_size"], device=v["device"], threads=v["threads"],
            best_of=v["best_of"],
        )

    def _generate(self, v: dict[str, Any], request: gr.Request, slots: list[str]) -> Iterator[list[Any]]:
        """Check the form as the CLI does; on an error show it beside its field, else run and stream the views."""
        form = self.to_form(v)
        shown = [i for i in range(MAX_GUIDES) if v.get(f"g{i}.name") and v.get(f"g{i}.shown")]
        keep = gr.update()

        def errors(where: str | None, message: str | None) -> list[Any]:
            if where is not None and where.startswith("guide:"):  # the form's guide index -> its slot on the page
                where = f"guide:{shown[int(where[6:])]}" if int(where[6:]) < len(shown) else "run"
            slot = _error_slot(where) if where else None
            return [_err(message) if s == slot else _err(None) for s in slots]

        try:
            spec = check_form(form, self.reg)
        except FieldError as exc:
            yield [_status_html(None, f"not started: {exc}"), keep, keep, keep, keep, keep, keep, *errors(exc.where, str(exc))]
            return
        config = resolve_config(spec, self.reg)[0]
        run = Run(spec, config.num_steps, config.recurrence).start()
        _RUNS[request.session_hash or ""] = run
        try:  # from the run's start: a page closed at any yield ends its run
            yield [_status_html(run), None, _loss_frame([]), [], None, None, "", *errors(None, None)]
            last_previews = -1
            while True:
                run.wait_change(0.5)
                with run.lock:
                    w = run.watch
                    finished, previews = w.finished, w.previews
                    preview = w.preview.image if w.preview is not None and previews != last_previews else keep
                    losses = _loss_frame(w.losses) if w.losses else keep  # whole each time: a dropped update heals
                    gallery = [(str(p), f"seed {_seed_of(p)}") for p in w.images]
                    status = _status_html(run)
                    error = w.error
                    summary = w.summary
                last_previews = previews
                if not finished:
                    yield [status, preview, losses, gallery, keep, keep, "", *errors(None, None)]
                    continue
                if error is not None:
                    yield [status, preview, losses, gallery, keep, keep, "", *errors(where_of(error, form), error)]
                    return
                assert summary is not None
                files = [str(p) for png in w.images for p in (png, png.with_suffix(".json"))]
                sheet = str(summary.contact_sheet) if summary.contact_sheet else None
                line = summary.line() if not w.stopped else (
                    f"stopped: {summary.written} complete image{'s' * (summary.written != 1)} kept in `{summary.out}`; "
                    f"complete the run with `ugd generate ... --resume --out {summary.out}`")
                yield [status, preview, losses, gallery, sheet, files + ([sheet] if sheet else []), line, *errors(None, None)]
                return
        finally:
            run.stop()  # a closed page ends its run as Stop does
            _RUNS.pop(request.session_hash or "", None)


# -- small helpers ---------------------------------------------------------------------------


def _knob_field(k: Knob, value: Any) -> Any:
    """The input of one sampler setting, by kind."""
    common = dict(label=k.name, info=k.info, elem_id=f"ugd-knob-{k.name}", min_width=200)
    shown = knob_to_widget(k, value)
    if k.kind == "bool":
        return gr.Checkbox(shown, **common)
    if k.kind in ("int", "float"):
        return gr.Number(shown, precision=0 if k.kind == "int" else None, **common)
    if k.choices:
        return gr.Dropdown(list(k.choices), value=shown, allow_custom_value=True, **common)
    return gr.Textbox(str(shown), **common)


def _describe(entry: Any) -> Any:
    if entry is None:
        return ""
    kind = "differentiable" if entry.differentiable else "no autograd: gradient estimated"
    return f"*{html.escape(entry.description)}* — plugin `{entry.plugin}`, {kind}"


def _seed_of(png: Path) -> str:
    return png.stem.rsplit("-", 1)[-1].lstrip("0") or "0"


def _loss_frame(rows: list[dict[str, Any]]) -> pd.DataFrame | None:
    """The chart's data, typed; None when empty (a plot that once showed an empty frame draws no lines later)."""
    if not rows:
        return None
    return pd.DataFrame(rows, columns=["step", "guide", "loss"]).astype({"step": "int64", "guide": "str", "loss": "float64"})


def _status_html(run: Run | None, message: str = "") -> str:
    """The progress bar: steps of the run, batch, self-recurrence, images written."""
    if run is None:
        text = html.escape(message) if message else "ready: compose a run and press Generate"
        return f'<div class="ugd-progress" data-state="idle"><progress max="1" value="0"></progress><div>{text}</div></div>'
    w = run.watch
    per = max(1, w.total // max(1, w.batches)) if w.total else 0
    batch = min(w.batches, w.done // per + (w.done % per > 0)) if per else 1
    step = w.done - (batch - 1) * per if per else 0
    cfg_rec = f" · self-recurrence: each step {w.recurrence}×" if w.recurrence > 1 else ""
    state = "finished" if w.finished else "running"
    if w.finished and w.stopped:
        state = "stopped"
    if w.finished and w.error:
        state = "error"
    text = (f"{state}: step {step}/{per or '…'} of batch {max(batch, 1)}/{w.batches}{cfg_rec} · "
            f"{len(w.images)}/{w.spec.num_images} images written · {time.perf_counter() - w.started:.1f} s")
    return (f'<div class="ugd-progress" data-state="{state}" data-previews="{w.previews}" data-first-preview-s="{w.first_preview_s or ""}" data-first-preview-step="{w.first_preview_step or ""}">'
            f'<progress max="{max(w.total, 1)}" value="{w.done}"></progress><div>{html.escape(text)}</div></div>')


def _store_upload(file: Any) -> str:
    """Copy an uploaded file to ``outputs/uploads/<sha256 prefix>/<name>`` and return its path (for a path parameter)."""
    src = Path(file if isinstance(file, str) else file.name)
    digest = hashlib.sha256(src.read_bytes()).hexdigest()[:16]
    dest = (UPLOADS / digest / src.name).resolve()
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not dest.exists():
        shutil.copyfile(src, dest)
    return str(dest)


def build_app(registry: Registry | None = None) -> gr.Blocks:
    """The page over ``registry`` (default: the installed plugins')."""
    return Page(registry or get_registry()).build()
