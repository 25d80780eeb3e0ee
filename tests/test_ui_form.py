"""The browser UI's form without a browser: texts from typed fields, the CLI's checks with their
fields, and records back to forms (cli/ui/form.py; no gradio needed)."""

from __future__ import annotations

import pytest

from cli.run import RunSpec
from cli.ui.form import FieldError, Form, GuideForm, check_form, from_record, knobs, part_text, to_spec
from ugd_core.params import Param
from ugd_core.registry import get_registry

pytest.importorskip("ugd_digits", reason="the digits plugin is not installed")


def test_typed_fields_make_the_cli_texts():
    params = [Param("box", "str", None, "", required=True), Param("label", "int"), Param("weights", "path")]
    assert part_text("digit-box", params, {"box": "4,4,20,28", "label": None, "weights": ""}) == 'digit-box:box="4,4,20,28"'
    assert part_text("digit-box", params, {"box": "1,2,3,4", "label": 3.0}, weight=2.5) == 'digit-box:box="1,2,3,4",label=3,weight=2.5'
    assert part_text("digits", [], {}) == "digits"


def test_knobs_carry_their_choices_from_the_sampler_settings():
    by_name = {k.name: k for k in knobs()}
    assert by_name["forward_normalize"].choices == ("none", "grad", "loss")
    assert by_name["num_steps"].kind == "int" and by_name["forward_window"].kind == "window"
    assert "ddim" in by_name["scheduler"].choices


def _form(**changes) -> Form:
    base = dict(guides=[GuideForm("digit-robust", {"label": 3}), GuideForm("digit-box", {"box": "4,4,20,28"})],
                preset="digits", knobs={"num_steps": 4, "scheduler": "ddim"}, num_images=4)
    return Form(**{**base, **changes})


def test_a_form_is_the_cli_spec():
    spec = to_spec(_form(), get_registry())
    assert spec.guides == ["digit-robust:label=3", 'digit-box:box="4,4,20,28"']
    assert spec.preset == "digits" and spec.overrides == {"num_steps": 4} and spec.num_images == 4 and spec.threads is None


@pytest.mark.parametrize("change, where, text", [
    (dict(guides=[GuideForm("digit-robust", {"label": "x"})]), "guide:0", "digit-robust: parameter label='x' is not a valid int"),
    (dict(guides=[GuideForm("digit-robust", {}), GuideForm("digit-box", {})]), "guide:0", "missing required parameter 'label'"),
    (dict(knobs={"num_steps": 4, "scheduler": "nope"}), "knob:scheduler", "scheduler='nope' is not a diffusers scheduler"),
    (dict(knobs={"num_steps": 0}), "knob:num_steps", "num_steps must be >= 1"),
    (dict(knobs={"forward_window": "[0, 2]"}), "knob:forward_window", "forward_window=(0, 2) must satisfy"),
    (dict(preset="no-such-preset"), "preset", "unknown preset 'no-such-preset'"),
])
def test_a_bad_field_gets_the_cli_line(change, where, text):
    with pytest.raises(FieldError) as info:
        check_form(_form(**change), get_registry())
    assert info.value.where == where and text in str(info.value) and "\n" not in str(info.value)


def test_a_record_restores_the_form_that_regenerates_its_batch():
    reg = get_registry()
    spec = check_form(_form(), reg)
    from cli.spec import build
    from cli.records import image_record

    record = dict(image_record(spec, build(RunSpec(backbone="digits", guides=spec.guides, preset="digits", overrides={"num_steps": 4}), reg),
                               [0, 1, 2, 3], reg), seed=2)
    form = from_record(record, reg)
    assert (form.seed, form.num_images, form.batch_size, form.preset) == (0, 4, 4, "digits")
    assert [(g.name, g.values, g.weight) for g in form.guides] == [("digit-robust", {"label": 3}, 1.0), ("digit-box", {"box": "4,4,20,28"}, 1.0)]
    again = to_spec(form, reg)
    assert again.guides == spec.guides and again.overrides == {"num_steps": 4}


def test_a_plugin_message_lands_beside_the_guide_whose_value_it_names():
    from cli.ui.form import where_of

    form = _form(guides=[GuideForm("digit-robust", {"label": 3}), GuideForm("digit", {"label": 3, "weights": "/nope.safetensors"})])
    assert where_of("digit_classifier: weights file '/nope.safetensors' not found; ...", form) == "guide:1"
    assert where_of("digit-robust: label=11 is not a digit class; use an integer 0..9", form) == "guide:0"
