"""Run specs, image records and what a run writes, held to their documented promises: every bad field is one line
before any work, a record holds what was run (preset, texts, batch, parameters, plugin versions), a record comes back
as the RunSpec that regenerates the right batch or image, and a run into a folder writes, resumes and refuses as
README.md "Use" and docs/architecture.md "One run, end to end" say.

Runs use the closed-form Gaussian backbone of tests/test_runs.py (a fraction of a second each).
"""

from __future__ import annotations

import json
import types
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from cli.outputs import save_image
from cli.records import versions
from cli.run import (
    LocalExecutor,
    RunSpec,
    generate,
    generate_to_dir,
    regenerate_from_record,
    spec_from_image_record,
    validate_spec,
)
from tests.test_runs import _pull_guide, local, tiny_registry, tiny_spec
from ugd_core import UgdError, hookimpl

# -- bad input: one line, before any work (cli/spec.py validate_spec, check_settings) -----------------------


@pytest.mark.parametrize("change, message", [
    (dict(overrides=dict(num_steps=2.5)), "num_steps=2.5 is not a valid int; write e.g. num_steps=10"),
    (dict(overrides=dict(zo_std=-0.1)), "zo_std=-0.1 must be >= 0"),
    (dict(overrides=dict(zo_probes=0)), "zo_probes=0 must be >= 1"),
    (dict(overrides=dict(forward_window=[0, 0.5, 1])), "forward_window=[0, 0.5, 1] is not a valid window"),
    (dict(seed=True), "seed True must be a whole number >= 0"),
    (dict(overrides=[("num_steps", 2)]), "must be a mapping of sampler settings"),
    (dict(sampler="ddim"), "sampler 'ddim' must be a mapping of sampler settings"),
    (dict(best_of=0), "best_of 0 must be a whole number >= 1"),
    (dict(seed=2**64 - 3, num_images=4), "the run's largest seed 18446744073709551616 passes"),
    (dict(device="cuda:x"), "is not one of cpu, cuda, cuda:N, mps, auto"),
])
def test_a_bad_field_is_one_line_naming_it_before_anything_is_sampled_or_written(tmp_path, monkeypatch, change, message):
    """README "Use": bad input ends in one line naming the problem and the fix, before anything is sampled or
    written (cli/spec.py check_settings: an int knob takes an integer, a window two numbers; the ranges it names)."""
    monkeypatch.setattr("cli.run.generate_batch", lambda *a, **k: pytest.fail("sampled before the input was checked"))
    with pytest.raises(UgdError) as err:
        generate_to_dir(replace(tiny_spec(n=2), **change), tmp_path / "o", local())
    assert message in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "o").exists()


def test_a_bad_setting_in_a_preset_file_is_one_line_naming_the_preset(tmp_path):
    """resolve_config type-checks every setting of a preset file (cli/spec.py resolve_config docstring), naming
    the preset and the fix."""
    preset = tmp_path / "mine.json"
    preset.write_text(json.dumps(dict(name="mine", settings=dict(num_steps="many"))))
    with pytest.raises(UgdError, match=r"preset 'mine' setting num_steps='many' is not a valid int; write e\.g\. num_steps=10"):
        validate_spec(replace(tiny_spec(), preset=str(preset)), tiny_registry())


def test_the_record_keeps_the_backbone_parameters_the_run_used(tmp_path):
    """The record names the backbone with its parameters (cli/records.py, module docstring), and a record so
    written passes check_record when regenerated."""
    spec = replace(tiny_spec(n=1, num_steps=2), backbone="tiny:crash_at=0")
    item = generate(spec, tiny_registry())[0]
    assert item.record["backbone"]["params"] == {"crash_at": "0"}
    png, _ = save_image(item, tmp_path)
    again, _ = regenerate_from_record(png, registry=tiny_registry())
    assert again.backbone == "tiny:crash_at=0"


def _own_defaults_registry():
    """The tiny registry plus a backbone with its own default preset and step count."""
    from tests.test_runs import _tiny_backbone

    reg = tiny_registry()
    plugin = types.ModuleType("ugd_test_own_defaults")

    def backbones(register):
        register("tiny-own", _tiny_backbone, description="tiny with its own defaults (tests)",
                 default_preset="forward-only", default_steps=5)

    plugin.ugd_register_backbones = hookimpl(backbones)
    reg.add_plugin(plugin, "own")
    return reg


def test_a_backbones_own_default_preset_and_steps_apply_where_the_run_names_none():
    """cli/spec.py default_preset: a run with guides and no --preset gets the backbone's own default; ugd_core
    registry Entry.default_steps: the step count when neither the preset nor --steps sets one."""
    from cli.spec import resolve_config

    reg = _own_defaults_registry()
    cfg, name = resolve_config(RunSpec(backbone="tiny-own", guides=["pull"]), reg)
    assert (name, cfg.num_steps) == ("forward-only", 5)
    cfg, name = resolve_config(RunSpec(backbone="tiny-own", guides=["pull"], preset="auto"), reg)  # a preset without num_steps
    assert (name, cfg.num_steps) == ("auto", 5)
    cfg, _ = resolve_config(RunSpec(backbone="tiny-own", guides=["pull"], overrides=dict(num_steps=3)), reg)
    assert cfg.num_steps == 3


# -- what a record holds (cli/records.py image_record) -------------------------------------------------------


def test_the_record_keeps_the_prompt_and_the_negative_prompt_each_in_its_own_field():
    """The record is what the run used: prompt and negative prompt each where its name says, and the RunSpec a
    record gives back carries both."""
    spec = replace(tiny_spec(n=1, num_steps=2), prompt="a seven", negative_prompt="a one")
    record = generate(spec, tiny_registry())[0].record
    assert (record["prompt"], record["negative_prompt"]) == ("a seven", "a one")
    again, _ = spec_from_image_record(record)
    assert (again.prompt, again.negative_prompt) == ("a seven", "a one")


def test_the_record_names_the_version_of_every_plugin_used():
    """versions(): ugd, torch, ... and the plugins that were used, the guides' plugin too (cli/records.py)."""
    reg = tiny_registry()
    plugin = types.ModuleType("ugd_test_versioned")

    def guides(register):
        register("pull2", lambda target=-0.5, device="cpu": _pull_guide(target, device), description="pull (tests)")

    plugin.ugd_register_guides = hookimpl(guides)
    reg.add_plugin(plugin, "versioned", "1.2.3")
    spec = replace(tiny_spec(n=1, num_steps=2), guides=["pull2"])
    record = generate(spec, reg)[0].record
    assert record["guides"][0]["plugin"] == "versioned"
    assert record["versions"]["plugin:versioned"] == "1.2.3"


def test_the_regenerated_record_names_the_preset_of_the_original():
    """A record names the preset its settings came from (docs/architecture.md: the summary names the preset), and
    an image regenerated from it records the same preset and settings, not none."""
    reg = tiny_registry()
    record = generate(tiny_spec(n=2, num_steps=2), reg)[1].record
    assert record["preset"] == "auto"  # no --preset: the default, named
    again, index = spec_from_image_record(record)
    assert again.preset == "auto"
    redone = generate(again, reg)[index].record
    assert (redone["preset"], redone["sampler"]) == (record["preset"], record["sampler"])


# -- check_record: every field a user may have edited ---------------------------------------------------------


def _record(tmp_path: Path) -> Path:
    item = generate(tiny_spec(n=2, num_steps=2), tiny_registry())[1]  # seed 101 of batch [100, 101]
    _, side = save_image(item, tmp_path / "orig")
    return side


EDITS = {
    "no ugd_spec": (lambda r: r.pop("ugd_spec"), "is not a ugd image spec (no 'ugd_spec': 1)"),
    "threads": (lambda r: r.update(torch_threads=0), "torch_threads 0 must be a whole number >= 1"),
    "device": (lambda r: r.update(device=5), "device 5 must be a text such as \"cpu\""),
    "prompt": (lambda r: r.update(prompt=7), "prompt 7 must be a text or null"),
    "guides": (lambda r: r.update(guides="pull"), "guides 'pull' must be a list"),
    "weight as text": (lambda r: r["guides"][0].update(weight="1.0"), "weight '1.0' contradicts its spec"),
    "param dropped": (lambda r: r["guides"][0].update(params={}), "params target='(absent)' contradicts its spec 'pull:target=-0.4'"),
    "callable": (lambda r: r["sampler"].update(forward_schedule="<callable f>"), "sampler forward_schedule was a Python function"),
    "no seed": (lambda r: r.pop("seed"), "missing field 'seed'"),
    "empty batch": (lambda r: r.update(batch_seeds=[]), "batch_seeds [] must be a list of whole numbers >= 0"),
}


@pytest.mark.parametrize("case", sorted(EDITS))
def test_an_edited_record_with_a_bad_field_is_one_line_naming_it(tmp_path, case):
    """check_record checks every field (types, ranges, spec against name/params/weight): one UgdError line
    naming the field (cli/records.py check_record; README "Use")."""
    edit, message = EDITS[case]
    record = json.loads(_record(tmp_path).read_text())
    edit(record)
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(record))
    with pytest.raises(UgdError) as err:
        regenerate_from_record(path, registry=tiny_registry())
    assert message in str(err.value) and "\n" not in str(err.value)


def test_record_params_equal_as_numbers_are_accepted(tmp_path):
    """_same: values equal as written or as numbers ('0.50' == 0.5) agree with the spec text."""
    record = json.loads(_record(tmp_path).read_text())
    record["guides"][0]["params"]["target"] = "-0.40"
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(record))
    spec, _ = regenerate_from_record(path, registry=tiny_registry())
    assert spec.guides == ["pull:target=-0.4"]


# -- back to a RunSpec (regenerate_from_record) ------------------------------------------------------------


def test_from_spec_regenerates_a_batch_larger_than_the_default_batch_size_as_one_batch(tmp_path):
    """--from-spec regenerates the image's whole batch, bit-exact (README "Use"): one batch holding exactly the
    recorded seeds, whatever the default batch size."""
    spec = replace(tiny_spec(n=10, num_steps=2), batch_size=10)
    item = generate(spec, tiny_registry())[3]
    png, _ = save_image(item, tmp_path)
    again, what = regenerate_from_record(png, registry=tiny_registry())
    assert again.batches() == [list(range(100, 110))] and "whole batch of 10 images" in what


def test_single_regenerates_the_image_itself_not_the_first_of_its_batch(tmp_path):
    """--single samples that image alone, as a batch of one (README "Use"), for any position in its batch."""
    side = _record(tmp_path)  # seed 101, second in batch [100, 101]
    spec, what = regenerate_from_record(side, single=True, registry=tiny_registry())
    assert spec.seeds() == [101] and spec.batches() == [[101]]
    assert what.startswith("regenerating only ugd-000101 (seed 101) as a batch of one")


def test_a_record_names_a_plugin_change_only_where_there_is_one(tmp_path):
    """Where an installed plugin other than the recorded one now supplies a name, regenerating says so (backbone
    and guides alike, docs/plugins.md: each record names the plugin of each part); otherwise it says nothing more."""
    side = _record(tmp_path)
    _, what = regenerate_from_record(side, registry=tiny_registry())
    assert "supplied by plugin" not in what
    record = json.loads(side.read_text())
    record["guides"][0]["plugin"] = "older"
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(record))
    _, what = regenerate_from_record(path, registry=tiny_registry())
    assert "guide 'pull' was supplied by plugin 'older', now by 'tiny': pixels may differ" in what


def record_versions() -> dict:  # type: ignore[type-arg]
    return versions(tiny_registry())


def test_a_record_names_the_machine_and_regenerating_says_where_it_differs(tmp_path):
    """A record keeps the CPU kernels torch dispatched to (and, on a GPU, its name), since another machine may round
    the same run differently (README, "The two commands"); regenerating names each recorded version or kernel set
    that differs here, and nothing where none does."""
    side = _record(tmp_path)
    record = json.loads(side.read_text())
    assert record["machine"] == {"cpu_capability": torch.backends.cpu.get_cpu_capability()}
    _, what = regenerate_from_record(side, registry=tiny_registry())
    assert "pixels may differ" not in what
    record["machine"]["cpu_capability"] = "NO-SUCH-KERNELS"
    record["versions"]["torch"] = "0.0.1"
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(record))
    _, what = regenerate_from_record(path, registry=tiny_registry())
    here = torch.backends.cpu.get_cpu_capability()
    assert f"recorded on CPU kernels NO-SUCH-KERNELS, here {here}: pixels may differ" in what
    assert f"recorded with torch 0.0.1, here {record_versions()['torch']}: pixels may differ" in what
    assert what.count("pixels may differ") == 2


def test_regenerating_on_another_device_says_so_and_never_fails_on_the_device(tmp_path, monkeypatch):
    """--device with --from-spec: the note compares the device the run will use (a CUDA record run on the CPU may
    differ); a device this machine lacks or cannot parse leaves the note to the CPU and the error to the run."""
    side = _record(tmp_path)
    record = json.loads(side.read_text())
    record["device"] = "cuda:1"
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(record))
    spec, what = regenerate_from_record(path, registry=tiny_registry(), device="cpu")
    assert spec.device == "cpu" and "recorded on device cuda:1, run on cpu: pixels may differ" in what
    for device in (None, "cuda:x"):  # the recorded cuda:1, or an unparsable one: no traceback here
        spec, what = regenerate_from_record(path, registry=tiny_registry(), device=device)
        assert spec.device == (device or "cuda:1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)  # one GPU: cuda:1 is not here
    spec, what = regenerate_from_record(path, registry=tiny_registry())
    assert spec.device == "cuda:1"


@pytest.mark.parametrize("field, value", [("machine", ["AVX2"]), ("versions", {"torch": 2})])
def test_an_edited_machine_or_versions_field_is_one_line(tmp_path, field, value):
    record = json.loads(_record(tmp_path).read_text())
    record[field] = value
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(record))
    with pytest.raises(UgdError, match=f"{field} .* must be a mapping of names to texts, as `ugd generate` writes it; or delete it$"):
        regenerate_from_record(path, registry=tiny_registry())


# -- a run into a folder (cli/run.py generate_to_dir) ----------------------------------------------------------


class _Twice(LocalExecutor):
    """Delivers every batch twice, as a retried batch on Ray may arrive."""

    def run(self, checked, batches, on_batch, progress):
        super().run(checked, batches, lambda items: (on_batch(items), on_batch(items)), progress)


def test_a_batch_that_arrives_twice_is_written_once(tmp_path):
    """Only the caller writes, each image once (cli/run.py generate_to_dir: a retried batch may arrive twice)."""
    summary = generate_to_dir(tiny_spec(n=2, num_steps=2), tmp_path / "o", _Twice(tiny_registry()))
    assert summary.written == 2 and not summary.failed
    assert sorted(p.name for p in (tmp_path / "o").glob("ugd-*.png")) == ["ugd-000100.png", "ugd-000101.png"]


class _NoDevice(LocalExecutor):
    def check(self, spec):
        raise UgdError("no such device here")

    def run(self, *a, **k):
        pytest.fail("ran although the executor's check failed")


def test_the_executors_check_comes_before_any_work(tmp_path):
    """docs/architecture.md, step 1: the executor's check is made before any work; nothing is written."""
    with pytest.raises(UgdError, match="no such device here"):
        generate_to_dir(tiny_spec(n=2), tmp_path / "o", _NoDevice(tiny_registry()))
    assert not (tmp_path / "o").exists()


def test_resume_redraws_the_runs_own_contact_sheet(tmp_path):
    """Under --out the contact sheet is the run's own, named for its seeds (README "Use"); --resume of the same
    run draws that same sheet again, not one named for the seeds it happened to write."""
    out = tmp_path / "o"
    generate_to_dir(tiny_spec(n=4, num_steps=2), out, local())
    (out / "ugd-000103.png").unlink()
    done = generate_to_dir(tiny_spec(n=4, num_steps=2), out, local(), resume=True)
    assert done.contact_sheet == out / "contact-sheet-100-103.png"
    assert sorted(p.name for p in out.glob("contact-sheet*")) == ["contact-sheet-100-103.png"]


def test_the_contact_sheet_title_names_the_preset(tmp_path, monkeypatch):
    """docs/architecture.md, step 5: the contact sheet is titled with the guide specs, backbone, preset and seeds."""
    import cli.outputs as outputs

    drawn = {}
    real = outputs.labelled_grid
    monkeypatch.setattr(outputs, "labelled_grid", lambda rows, **kw: drawn.update(kw) or real(rows, **kw))
    generate_to_dir(tiny_spec(n=2, num_steps=2), tmp_path / "o", local())
    assert drawn["title"] == ["guides: pull:target=-0.4", "backbone tiny, preset auto", "seeds 100-101"]


def test_resume_completes_an_item_left_with_a_sidecar_and_no_png(tmp_path):
    """plan_outputs with resume: a sidecar left without its PNG (an interrupted write) is written again."""
    out = tmp_path / "o"
    generate_to_dir(tiny_spec(n=2, num_steps=2), out, local())
    (out / "ugd-000101.png").unlink()
    (out / "ugd-000101.json").write_text("{}")  # torn
    done = generate_to_dir(tiny_spec(n=2, num_steps=2), out, local(), resume=True)
    assert (done.written, done.skipped) == (1, 1)
    assert json.loads((out / "ugd-000101.json").read_text())["seed"] == 101


def test_a_failed_write_leaves_no_temporary_file(tmp_path, monkeypatch):
    """Any failure, not only Ctrl-C, removes the run's temporary files (docs/architecture.md, step 4: a PNG is
    written as *.png.tmp and renamed last, so a PNG that exists is complete)."""
    import cli.outputs as outputs

    real = outputs.to_pil

    class Broken:
        def __init__(self, image):
            self.image = real(image)

        def save(self, path, **kw):
            Path(path).write_bytes(b"half")
            raise OSError("disk full")

    monkeypatch.setattr(outputs, "to_pil", Broken)
    out = tmp_path / "o"
    with pytest.raises(OSError, match="disk full"):
        generate_to_dir(tiny_spec(n=2, num_steps=2), out, local())
    assert not list(out.glob("*.tmp"))
