"""`ugd ui` does what docs/ui.md promises, checked through its Python interface rather than a browser: the form's
fields become the CLI's spec (an empty field is the CLI's default; weights, quotes and blanks as `--guide` text), the
page's fields (four guide slots, a 0-50 weight slider, starred required parameters, uploads for paths, the preset's
knob values), a bad value is one line under its own field before any work, a plugin's own refusal lands beside its
guide and writes nothing, the progress line and previews, Stop and a closed page, Restore as `--from-spec`, user text
escaped in the page, and `ugd ui` serving this machine only and nothing outside `outputs/`.

Runs use the digits plugin (two or three steps, tiny images).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
import types
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from cli.run import RunSpec, read_image_record, regenerate_from_record, spec_from_image_record
from cli.spec import resolve_config
from cli.ui.form import (
    Form,
    GuideForm,
    FieldError,
    base_settings,
    check_form,
    effective_preset,
    from_record,
    knob_to_widget,
    knobs,
    part_text,
    to_spec,
    where_of,
    widget_of,
)
from cli.ui.watch import Run, Watch, preview_every
from ugd_core.errors import UgdError
from ugd_core.params import Param, parse_spec
from ugd_core.registry import get_registry

pytest.importorskip("ugd_digits", reason="the digits plugin is not installed")
gr = pytest.importorskip("gradio", reason="gradio is not installed (pip install -e '.[ui]')")

from cli.ui import app as ui_app  # noqa: E402  (imports gradio)

GUIDES = [GuideForm("digit-robust", {"label": 3})]


def _form(**changes) -> Form:
    return Form(**{**dict(guides=GUIDES, preset="digits", knobs={"num_steps": 2}, num_images=1), **changes})


def _finish(run: Run, timeout: float = 180.0) -> Watch:
    deadline = time.monotonic() + timeout
    while not run.watch.finished and time.monotonic() < deadline:
        run.wait_change(0.5)
    assert run.watch.finished, "the run did not end"
    return run.watch


def _run_folders(root: Path) -> list[Path]:
    return sorted(p for p in (root / "outputs").glob("*/*") if p.is_dir() and p.parent.name != "uploads")


@pytest.fixture(scope="module")
def page():
    p = ui_app.Page(get_registry())
    p.demo = p.build()
    return p


def _values(page, **changes):
    """The page's field values as a fresh page holds them, with ``changes`` (keys as Page.fields)."""
    return {**{k: c.value for k, c in page.fields.items()}, **changes}


def _generate(page, session: str, **changes) -> list[list]:
    """Every update _generate yields for the page's values with ``changes``."""
    return list(page._generate(_values(page, **changes), types.SimpleNamespace(session_hash=session), list(page.errors)))


def _shown_errors(page, update: list) -> dict[str, str]:
    slots = list(page.errors)
    return {s: u["value"] for s, u in zip(slots, update[-len(slots):]) if u.get("visible")}


GOOD = {"g0.name": "digit-robust", "g0.r0.number": 3, "knob.num_steps": 2, "num_images": 1, "batch_size": 1, "threads": 1}


# -- the form is the CLI's spec ------------------------------------------------------------------


def test_a_parameters_widget_follows_its_declared_type():
    """docs/ui.md, Compose: int/float a number, bool a checkbox, choices a menu, str and path a text field."""
    assert [widget_of(Param("x", t)) for t in ("int", "float", "bool", "str", "path")] == ["number", "number", "flag", "text", "text"]
    assert widget_of(Param("mode", "str", "a", choices=("a", "b"))) == "choice"


def test_a_parameters_help_line_says_required_or_its_default():
    """docs/ui.md, Compose: each field shows the parameter's help, type and default; required ones are starred."""
    from cli.ui.form import param_info

    assert param_info(Param("label", "int", None, "digit class", required=True)) == "digit class (int, required)"
    assert param_info(Param("size", "int", 256, "side")) == "side (int, default 256)"


@pytest.mark.parametrize("value", ['a"b,c', "it's, here", "x,y"])
def test_a_text_with_commas_or_quotes_reaches_the_plugin_unchanged(value):
    """docs/ui.md, Compose: a str parameter is a text field; its text reaches the plugin as typed (the CLI's quoting)."""
    text = part_text("g", [Param("s", "str")], {"s": value})
    assert parse_spec(text) == ("g", {"s": value})


def test_a_blank_text_field_is_empty_and_the_default_applies():
    """cli/ui/form.py format_value: a field holding only spaces is empty (the parameter's default applies)."""
    assert part_text("g", [Param("s", "str", "d")], {"s": "   "}) == "g"


@pytest.mark.parametrize("weight, text", [(0.5, "g:weight=0.5"), (1.25, "g:weight=1.25"), (0.05, "g:weight=0.05"), (1.0, "g")])
def test_a_guides_weight_is_written_as_the_slider_holds_it(weight, text):
    """docs/ui.md, Compose: a weight slider (0-50, step 0.05) on each guide; any weight but 1 reaches the spec exactly."""
    assert part_text("g", [], {}, weight=weight) == text


def test_the_range_help_line_of_a_knob_states_its_documented_minimum():
    """docs/ui.md, Limits: the knob fields carry their ranges in their help line (num_steps >= 1, recurrence >= 1)."""
    by_name = {k.name: k for k in knobs()}
    assert "(int, >= 1)" in by_name["num_steps"].info and "(int, >= 1)" in by_name["recurrence"].info
    assert "(int, >= 0)" in by_name["backward_steps"].info


def test_a_recorded_value_a_typed_field_cannot_hold_leaves_the_default():
    """cli/ui/form.py form_values: parameter texts become typed form values (numbers and flags typed); a text a number
    or checkbox cannot hold is not restored, so the parameter's default applies."""
    from cli.ui.form import form_values

    params = [Param("label", "int"), Param("on", "bool"), Param("note", "str")]
    assert form_values(params, {"label": "3", "on": "yes", "note": "x"}) == {"label": 3, "on": True, "note": "x"}
    assert form_values(params, {"label": "three", "on": "maybe"}) == {"label": None, "on": None}


def test_a_mapping_knob_is_shown_as_json():
    """cli/ui/form.py knob_to_widget: windows and mappings appear as JSON text (which `--set` parses back)."""
    extras = {k.name: k for k in knobs()}["extras"]
    assert json.loads(knob_to_widget(extras, {"a": 1, "b": [2]})) == {"a": 1, "b": [2]}


def test_a_whole_float_in_an_int_knob_is_the_int_the_cli_would_set():
    """docs/ui.md, Compose: a knob you change is a `--set` override; `--set num_steps=4` is the int 4 (the record says 4)."""
    spec = to_spec(_form(knobs={"num_steps": 4.0}), get_registry())
    assert spec.overrides == {"num_steps": 4} and type(spec.overrides["num_steps"]) is int


def test_knobs_left_at_the_shown_default_preset_are_no_overrides():
    """docs/ui.md, Compose: the knobs show the value the CLI would use (no preset chosen: the backbone's default
    preset); only the knobs you change differ from it, as with --set."""
    reg = get_registry()
    cli_config = resolve_config(RunSpec(backbone="digits", guides=["digit-robust:label=3"]), reg)[0].to_dict()
    assert base_settings(None, "digits", True, reg) == cli_config
    shown = {k.name: knob_to_widget(k, cli_config[k.name]) for k in knobs()}
    spec = to_spec(_form(preset=None, knobs=shown), reg)
    assert spec.overrides == {} and spec.preset is None


def test_the_preset_a_run_uses_without_one_chosen_is_the_clis():
    """docs/ui.md, Compose: the preset line shows the preset the CLI would use: the chosen one, else (with guides)
    the backbone's default."""
    reg = get_registry()
    assert effective_preset(None, "digits", True, reg) == resolve_config(RunSpec(backbone="digits", guides=["-"]), reg)[1] == "auto"
    assert effective_preset("digits", "digits", True, reg) == "digits" and effective_preset(None, "digits", False, reg) is None


def test_empty_run_fields_are_the_clis_defaults():
    """docs/ui.md, Run: the run fields are `ugd generate`'s options; an empty one is the CLI's default (--seed 0,
    --device cpu, no prompt, Torch threads 0: as is)."""
    spec = to_spec(_form(seed=None, device="", prompt="", negative_prompt="", threads=0), get_registry())
    assert (spec.seed, spec.device, spec.prompt, spec.negative_prompt, spec.threads) == (0, "cpu", None, None, None)


def test_best_of_reaches_the_spec():
    """docs/ui.md, Run: best-of N is a field of the run."""
    assert to_spec(_form(best_of=3), get_registry()).best_of == 3


def test_a_bad_run_field_is_refused_as_the_cli_refuses_it():
    """docs/ui.md, Errors: the form is checked as the CLI checks a command line (validate_spec) before any run starts."""
    for change, text in ((dict(num_images=0), "num_images 0 must be a whole number >= 1"), (dict(seed=-1), "seed -1 must be")):
        with pytest.raises(FieldError) as info:
            check_form(_form(**change), get_registry())
        assert info.value.where == "run" and text in str(info.value) and "\n" not in str(info.value)


def test_a_knobs_message_is_not_put_beside_a_guide_whose_short_value_it_happens_to_contain():
    """docs/ui.md, Errors: the CLI's line appears under the field it names (a steps message under Steps, even when a
    guide's label is 1)."""
    form = _form(guides=[GuideForm("digit-robust", {"label": 1})], knobs={"num_steps": 0})
    with pytest.raises(FieldError) as info:
        check_form(form, get_registry())
    assert info.value.where == "knob:num_steps"
    assert where_of("num_steps must be >= 1, got 0", form) == "knob:num_steps"


# -- the page's fields ---------------------------------------------------------------------------


def test_the_page_has_four_guide_slots_with_a_0_to_50_weight_slider(page):
    """docs/ui.md, Compose / Limits: up to four guides at once, a weight slider (0-50) on each."""
    assert [f"g{i}.name" in page.fields for i in range(5)] == [True] * 4 + [False]
    assert all((page.fields[f"g{i}.weight"].minimum, page.fields[f"g{i}.weight"].maximum) == (0, 50) for i in range(4))


def test_a_fresh_page_shows_the_knob_values_the_cli_would_use(page):
    """docs/ui.md, Compose: one field per --set name with the value the CLI would use shown (the default preset's)."""
    cli_config = resolve_config(RunSpec(backbone="digits", guides=["digit:label=1"]), get_registry())[0].to_dict()
    assert cli_config["forward_strength"] != 0  # the default preset sets it (else this test would show nothing)
    for name in ("forward_strength", "num_steps", "recurrence", "backward_steps"):
        assert page.fields[f"knob.{name}"].value == cli_config[name], name


def test_a_guides_rows_star_required_fields_and_offer_uploads_for_paths(page):
    """docs/ui.md, Compose: required parameters are starred; a path gets an upload button, other types none."""
    params = get_registry().get("guide", "digit-robust").params  # label: int, required; weights: path
    rows = page._row_updates("g0", page.rows_g, params, {})
    assert rows["g0.r0.number"]["label"] == "label *" and rows["g0.r1.text"]["label"] == "weights"
    assert (rows["g0.r0.upload"]["visible"], rows["g0.r1.upload"]["visible"]) == (False, True)
    box = page._row_updates("g0", page.rows_g, get_registry().get("guide", "digit-box").params, {})
    assert box["g0.r0.text"]["label"] == "box *" and box["g0.r0.upload"]["visible"] is False  # a str: no upload


def test_a_checkbox_starts_at_the_parameters_default(page):
    """docs/ui.md, Compose: each field shows the parameter's default (a bool defaulting to true is ticked)."""
    params = [Param("on", "bool", True, "a switch"), Param("off", "bool", False, "another")]
    rows = page._row_updates("g0", page.rows_g, params, {})
    assert (rows["g0.r0.flag"]["value"], rows["g0.r1.flag"]["value"]) == (True, False)


def test_an_upload_is_kept_under_its_content_hash_with_its_name(tmp_path, monkeypatch):
    """docs/ui.md, Compose: an uploaded file is copied to outputs/uploads/<sha256>/<name>, so two uploads of one
    name never replace each other and a record keeps naming a file that stays."""
    monkeypatch.chdir(tmp_path)
    paths = []
    for content in (b"first", b"second"):
        src = tmp_path / "in" / content.decode() / "ref.png"
        src.parent.mkdir(parents=True)
        src.write_bytes(content)
        paths.append(Path(ui_app._store_upload(str(src))))
    for path, content in zip(paths, (b"first", b"second")):
        assert path.name == "ref.png" and path.read_bytes() == content
        assert path.parent.parent == (tmp_path / "outputs" / "uploads").resolve()
        assert hashlib.sha256(content).hexdigest().startswith(path.parent.name)


def test_the_page_reports_no_analytics(monkeypatch):
    """docs/ui.md, Offline: analytics are off, by GRADIO_ANALYTICS_ENABLED=False (set by `ugd ui` before importing
    gradio) and by Blocks(analytics_enabled=False) (even where that variable is unset); Hub telemetry is off."""
    import cli.ui
    from gradio.analytics import analytics_enabled

    for name in ("GRADIO_ANALYTICS_ENABLED", "HF_HUB_DISABLE_TELEMETRY"):
        monkeypatch.delenv(name, raising=False)
    cli.ui.offline()
    assert analytics_enabled() is False and os.environ["HF_HUB_DISABLE_TELEMETRY"] == "1"
    monkeypatch.delenv("GRADIO_ANALYTICS_ENABLED")
    assert ui_app.build_app(get_registry()).analytics_enabled is False


def test_generation_runs_one_at_a_time_in_the_sampling_group(page):
    """docs/ui.md, Concurrency: Gradio's queue runs one generation at a time for the whole server (the `sampling`
    concurrency group); Stop is not held behind a run."""
    demo = page.demo
    fns = {f.name: f for f in demo.fns.values()}
    assert (fns["on_generate"].concurrency_limit, fns["on_generate"].concurrency_id) == (1, "sampling")
    assert fns["on_stop"].concurrency_limit is None and fns["on_stop"].concurrency_id != "sampling"


# -- errors --------------------------------------------------------------------------------------


def test_bad_steps_show_under_steps_before_anything_runs(page, tmp_path, monkeypatch):
    """docs/ui.md, Errors: the CLI's one-line message appears under the field it names, before any run starts."""
    monkeypatch.chdir(tmp_path)
    (update,) = _generate(page, "steps", **{**GOOD, "knob.num_steps": 0})
    assert _shown_errors(page, update) == {"steps": "⚠ num_steps must be >= 1, got 0"}
    assert "not started" in update[0] and not (tmp_path / "outputs").exists()


def test_a_guides_message_lands_in_its_own_slot_when_an_earlier_slot_is_empty(page, tmp_path, monkeypatch):
    """docs/ui.md, Errors: the guide's line appears under its slot on the page (slot 2 here, slot 1 left empty)."""
    monkeypatch.chdir(tmp_path)
    (update,) = _generate(page, "slot", **{**GOOD, "g0.name": "", "g0.r0.number": None, "g1.shown": True, "g1.name": "digit-robust",
                                            "g1.r0.number": None})
    errors = _shown_errors(page, update)
    assert list(errors) == ["guide:1"] and "missing required parameter 'label'" in errors["guide:1"]


def test_user_text_in_a_refusal_is_escaped_in_the_status(page, tmp_path, monkeypatch):
    """The page never renders text typed into a field as HTML: the status line's refusal shows it escaped."""
    monkeypatch.chdir(tmp_path)
    (update,) = _generate(page, "xss", **{**GOOD, "device": "<img src=x onerror=alert(1)>"})
    assert "<img" not in update[0] and "&lt;img src=x onerror=alert(1)&gt;" in update[0]


def test_a_plugins_refusal_lands_beside_its_guide_and_writes_nothing(page, tmp_path, monkeypatch):
    """docs/ui.md, Errors: a value only the plugin can judge (label=11) is refused when the run builds the models;
    its line lands beside its guide and the run's folder is removed, so nothing is written."""
    monkeypatch.chdir(tmp_path)
    updates = _generate(page, "label11", **{**GOOD, "g0.r0.number": 11})
    errors = _shown_errors(page, updates[-1])
    assert list(errors) == ["guide:0"] and "label=11 is not a digit class; use an integer 0..9" in errors["guide:0"]
    assert 'data-state="error"' in updates[-1][0]
    assert _run_folders(tmp_path) == []


def test_an_unexpected_error_in_a_run_is_shown_not_lost(monkeypatch):
    """cli/ui/watch.py: an error other than a UgdError is shown on the page rather than lost in the server log."""
    import cli.ui.watch as watch

    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(watch, "generate_to_dir", boom)
    w = _finish(Run(RunSpec(guides=["digit-robust:label=3"]), 2).start(), 30)
    assert w.error == "RuntimeError: boom" and w.summary is None


# -- watch: progress, previews, losses -------------------------------------------------------------


def test_previews_come_after_the_first_step_then_every_steps_over_12():
    """docs/ui.md, Watch: the preview shows x0_hat after the first step, then every `steps // 12` steps."""
    assert [preview_every(n) for n in (4, 11, 12, 24, 25, 100)] == [1, 1, 1, 2, 2, 8]


def _fake_view(step: int, seeds: list[int], losses: torch.Tensor):
    backbone = types.SimpleNamespace(decode=lambda x: x)
    guides = types.SimpleNamespace(losses=lambda images: {"g": losses})
    return types.SimpleNamespace(step=step, seeds=seeds, x0=torch.zeros(len(seeds), 1, 8, 8), built=types.SimpleNamespace(backbone=backbone, guides=guides))


def test_the_previews_and_chart_follow_the_documented_steps_with_each_guides_mean_loss(monkeypatch):
    """docs/ui.md, Watch: a preview after the first step, then every steps // 12 steps; the chart plots each guide's
    mean loss; each preview is captioned with its images' seeds."""
    import cli.ui.watch as watch

    captured: list = []
    monkeypatch.setattr(watch, "labelled_grid", lambda rows, captions=None, tile=96: captured.append(captions) or object())
    run = Run(RunSpec(guides=["digit-robust:label=3"], seed=5, num_images=2, batch_size=2), 24)
    for step in range(1, 25):
        run._on_step(_fake_view(step, [5, 6], torch.tensor([1.0, 3.0])))
    steps = [row["step"] for row in run.watch.losses]
    assert steps[:3] == [1, 2, 4] and steps[-1] == 24 and 3 not in steps and run.watch.previews == len(steps)
    assert {row["loss"] for row in run.watch.losses} == {2.0}
    assert captured[0] == [["seed 5", "seed 6"]]


def _status(**watch) -> str:
    spec = RunSpec(guides=["digit-robust:label=3"], num_images=12, batch_size=4)
    run = types.SimpleNamespace(watch=Watch(spec, **watch))
    return ui_app._status_html(run)


def test_the_progress_line_counts_steps_of_the_run_with_the_batch():
    """docs/ui.md, Watch: the progress bar counts steps of the run, with the batch (3 batches of 4 steps here)."""
    mid = _status(done=6, total=12, batches=3)
    assert "step 2/4 of batch 2/3" in mid and '<progress max="12" value="6">' in mid
    end = _status(done=8, total=12, batches=3)
    assert "step 4/4 of batch 2/3" in end


def test_the_progress_line_names_self_recurrence_only_when_the_preset_uses_it():
    """docs/ui.md, Watch: the bar shows how many times self-recurrence repeats each step, when the preset uses it."""
    assert "self-recurrence" not in _status(done=1, total=12, batches=3, recurrence=1)
    assert "self-recurrence: each step 3×" in _status(done=1, total=12, batches=3, recurrence=3)


def test_a_stopped_run_says_stopped():
    """docs/ui.md, Watch: Stop ends the run and the page says so."""
    assert 'data-state="stopped"' in _status(done=4, total=12, batches=3, finished=True, stopped=True)


def test_a_new_run_knows_its_batches():
    """docs/ui.md, Watch: the progress counts the batches of the run (4 images in batches of 2: two)."""
    run = Run(RunSpec(guides=["digit-robust:label=3"], num_images=4, batch_size=2), 2)
    assert "of batch 1/2" in ui_app._status_html(run)


def test_a_gallery_caption_names_seed_zero():
    """docs/ui.md, Results: the gallery's images are captioned with their seeds, seed 0 included."""
    assert [ui_app._seed_of(Path(f"ugd-{s:06d}.png")) for s in (0, 7, 120)] == ["0", "7", "120"]


# -- Stop, closing a page, results, restore -----------------------------------------------------


def test_stop_keeps_complete_images_and_flags_the_run_stopped(tmp_path, monkeypatch):
    """docs/ui.md, Watch: Stop ends the run after the step in progress, as Ctrl-C ends `ugd generate`: the temporary
    files go, complete images stay, and the page says how many."""
    monkeypatch.chdir(tmp_path)
    run = Run(RunSpec(guides=["digit-robust:label=3"], preset="digits", overrides=dict(num_steps=2), num_images=2, batch_size=1, threads=1), 2)
    run.stop()  # before the first step
    w = _finish(run.start())
    assert w.stopped and w.error is None and w.summary is not None and w.summary.written == 0 and w.images == []
    assert not any(p.name.endswith(".tmp") for p in (tmp_path / "outputs").rglob("*"))


def test_closing_the_page_stops_its_run(page, tmp_path, monkeypatch):
    """docs/ui.md, Concurrency: closing a page stops its run."""
    monkeypatch.chdir(tmp_path)
    gen = page._generate(_values(page, **{**GOOD, "knob.num_steps": 200}), types.SimpleNamespace(session_hash="close"), list(page.errors))
    next(gen)  # the run has started
    run = ui_app._RUNS["close"]
    next(gen)  # the page is watching it
    gen.close()  # the page went away
    w = _finish(run)
    assert w.stopped and w.summary.written == 0


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """One finished page run: digits, preset digits, 2 steps, seeds 5-6 in one batch."""
    work = tmp_path_factory.mktemp("ui-run")
    old = os.getcwd()
    os.chdir(work)
    try:
        spec = RunSpec(guides=["digit-robust:label=3", 'digit-box:box="4,4,20,28",weight=0.5'], preset="digits",
                       overrides=dict(num_steps=2), seed=5, num_images=2, batch_size=2, threads=1)
        w = _finish(Run(spec, 2).start())
    finally:
        os.chdir(old)
    assert w.error is None and w.summary.written == 2
    w.images = [work / p for p in w.images]
    return w


def test_a_finished_run_lists_its_images_and_steps(digits_run):
    """docs/ui.md, Watch / Results: the progress reaches the run's last step; the gallery lists the run's PNGs."""
    w = digits_run
    assert (w.done, w.total, w.previews) == (2, 2, 2) and [p.name for p in w.images] == ["ugd-000005.png", "ugd-000006.png"]
    assert [(r["step"], r["guide"]) for r in w.losses[:2]] == [(1, "digit-robust"), (1, "digit-box")]


def test_restore_is_from_spec(digits_run, tmp_path):
    """docs/ui.md, Results: Restore fills every field from the record (sampler settings, batch, torch threads, and the
    rest), so Generate reproduces the batch as `ugd generate --from-spec` does (cli.records.spec_from_image_record)."""
    reg = get_registry()
    record = read_image_record(digits_run.images[1])
    record.update(torch_threads=3, device="auto", negative_prompt="blurry", best_of=dict(n=2, kept=0, candidates=[]))
    assert from_record(record, reg).negative_prompt == spec_from_image_record(record)[0].negative_prompt == "blurry"
    record["negative_prompt"] = None  # the digits backbone reads none: a run with one is refused before any work
    cli_spec, _ = spec_from_image_record(record)
    spec = check_form(from_record(record, reg), reg)
    for name in ("guides", "preset", "prompt", "negative_prompt", "seed", "num_images", "batch_size", "device", "threads", "best_of"):
        assert getattr(spec, name) == getattr(cli_spec, name), name
    assert resolve_config(spec, reg)[0].to_dict() == resolve_config(cli_spec, reg)[0].to_dict()


def test_a_record_with_a_callable_setting_is_refused_in_one_line_by_restore_and_from_spec(digits_run, tmp_path):
    """A schedule given from Python as a function is written '<callable NAME>' (SamplerConfig.to_dict): a record cannot
    hold it, so neither Restore nor --from-spec can make the image again. Both say so in one line naming the setting
    (they used to drop it silently and run the default schedule, which --from-spec called bit-exact)."""
    reg = get_registry()
    record = read_image_record(digits_run.images[0])
    record["sampler"]["forward_schedule"] = "<callable my_schedule>"
    with pytest.raises(UgdError, match=r"sampler forward_schedule was a Python function \(<callable my_schedule>\)") as e:
        from_record(record, reg)
    assert "\n" not in str(e.value) and "edit forward_schedule to a name" in str(e.value)
    with pytest.raises(UgdError, match="sampler forward_schedule was a Python function"):
        spec_from_image_record(record)
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(record))
    with pytest.raises(UgdError, match="sampler forward_schedule was a Python function"):
        regenerate_from_record(path)
    record["sampler"]["forward_schedule"] = "constant"  # the fix the line names
    assert from_record(record, reg).knobs["forward_schedule"] == "constant"


# -- `ugd ui`: the address it serves and what it serves -------------------------------------------


def test_ugd_ui_serves_this_machine_only_on_7860_without_a_public_link_by_default(monkeypatch):
    """docs/ui.md: `ugd ui` is http://127.0.0.1:7860/ (this machine only); --share opens a public link (off by default)."""
    import cli.ui
    from cli.main import app

    calls = []
    monkeypatch.setattr(cli.ui, "serve", lambda **kw: calls.append(kw))
    runner = CliRunner()
    assert runner.invoke(app, ["ui"]).exit_code == 0
    assert runner.invoke(app, ["ui", "--share"]).exit_code == 0
    assert [(c["host"], c["port"], c["share"]) for c in calls] == [("127.0.0.1", 7860, False), ("127.0.0.1", 7860, True)]


def test_serve_defaults_to_this_machine_on_7860(monkeypatch):
    """docs/ui.md: the page is served on http://127.0.0.1:7860/ (this machine only) unless told otherwise."""
    import cli.ui

    class Seen(Exception):
        pass

    def check_port(host, port):
        raise Seen(host, port)

    monkeypatch.setattr(cli.ui, "check_port", check_port)
    with pytest.raises(Seen) as info:
        cli.ui.serve()
    assert info.value.args == ("127.0.0.1", 7860)


def test_a_port_past_65535_is_one_line():
    """README.md / docs/ui.md: bad input is one line naming the problem, exit 2 (65536 is no TCP port)."""
    from cli.main import app

    res = CliRunner().invoke(app, ["ui", "--port", "65536"])
    assert res.exit_code == 2 and "65535" in res.output and "Traceback" not in res.output


def test_the_server_serves_run_files_and_nothing_outside_outputs(tmp_path, monkeypatch):
    """docs/ui.md, Results: the gallery serves the run's file on disk byte for byte; files beside outputs/ (the
    working folder) or elsewhere are not served."""
    from cli.ui import serve

    monkeypatch.chdir(tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    demo = serve(port=port, block=False, registry=get_registry())
    try:
        png = tmp_path / "outputs" / "2026-01-01" / "0001-x" / "ugd-000000.png"
        png.parent.mkdir(parents=True)
        png.write_bytes(b"a run's image")
        secret = tmp_path / "notes.txt"
        secret.write_text("private")

        def get(path: Path) -> int | bytes:
            try:
                return urllib.request.urlopen(f"http://127.0.0.1:{port}/gradio_api/file={path}").read()
            except urllib.error.HTTPError as exc:
                return exc.code

        assert get(png) == b"a run's image"
        assert get(secret) == 403 and get(png.parents[2] / ".." / "notes.txt") == 403
    finally:
        demo.close()


# ---------------------------------------------------------------------- two bugs the audit found, fixed


@pytest.mark.parametrize("backbone", ["stable-diffusion", "adm"])
def test_the_preset_named_for_a_backbone_without_its_own_default_is_the_clis(backbone):
    """cli/ui/form.py effective_preset: 'the chosen one, else the backbone's default when guides are given (as the
    CLI)'; README.md: the default preset, `auto`, is the same for every backbone. The CLI falls back to `auto`
    (cli/spec.py resolve_config); the page names `ugd` in the preset menu and its info line."""
    reg = get_registry()
    cli_preset = resolve_config(RunSpec(backbone=backbone, guides=["-"]), reg)[1]
    assert cli_preset == "auto"
    assert effective_preset(None, backbone, True, reg) == cli_preset
    page = ui_app.Page(reg)
    assert page._preset_choices(backbone)[0] == (f"default for {backbone} (auto; auto-eps where the steps draw no noise)", "")
    assert page._preset_info("", backbone).startswith("preset **auto**; auto-eps where the steps draw no noise: ")
    assert page._preset_info("auto", backbone).startswith("preset **auto**: ")  # chosen by name: auto, or one line


def test_the_default_entry_says_a_scheduler_that_draws_no_noise_runs_auto_eps():
    """The default entry names what a run gets (cli.spec.default_preset): auto, or auto-eps where the steps draw
    no noise (the menu said 'auto' while such a run used auto-eps)."""
    reg = get_registry()
    assert resolve_config(RunSpec(backbone="digits", guides=["-"], overrides={"scheduler": "dpm++"}), reg)[1] == "auto-eps"
    assert resolve_config(RunSpec(backbone="digits", guides=["-"]), reg)[1] == "auto"
    assert ui_app.Page(reg)._preset_choices("digits")[0] == ("default for digits (auto; auto-eps where the steps draw no noise)", "")


def test_closing_the_page_just_after_the_run_starts_stops_the_run(tmp_path, monkeypatch):
    """docs/ui.md, Concurrency: closing a page stops its run. _generate's first yield (right after the run starts)
    sits before its try/finally, so a page closed there leaves the run going (and in _RUNS)."""
    monkeypatch.chdir(tmp_path)
    page = ui_app.Page(get_registry())
    page.build()
    values = {k: c.value for k, c in page.fields.items()}
    values.update({"g0.name": "digit-robust", "g0.r0.number": 3, "knob.num_steps": 200, "num_images": 1, "batch_size": 1, "threads": 1})
    gen = page._generate(values, types.SimpleNamespace(session_hash="closed-early"), list(page.errors))
    next(gen)  # the run has started; the page goes away now
    run = ui_app._RUNS["closed-early"]
    gen.close()
    try:
        assert "closed-early" not in ui_app._RUNS
        deadline = time.monotonic() + 180
        while not run.watch.finished and time.monotonic() < deadline:
            run.wait_change(0.5)
        assert run.watch.stopped and run.watch.summary.written == 0
    finally:
        run.stop()
        ui_app._RUNS.pop("closed-early", None)
