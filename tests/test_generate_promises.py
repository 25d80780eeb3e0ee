"""What a command turns into, image by image: each image is its own seed's, --best-of keeps and records the
candidate it says it keeps, --resume samples and accepts only what it should, --from-spec refuses options it
would ignore and regenerates what the record names, existing files are never replaced, and bad input is one
line before any work.

Runs use the closed-form Gaussian backbone of tests/test_runs.py (a fraction of a second each); its
denoiser works pixel by pixel, so an image sampled in a batch equals the same seed sampled alone.
"""

from __future__ import annotations

import json
import subprocess
import sys
import types
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from cli.main import app
from cli.outputs import default_out_dir, guide_slug, save_image, write_contact_sheet
from cli.run import (
    GeneratedImage,
    RunSpec,
    generate,
    generate_to_dir,
    regenerate_from_record,
    spec_from_image_record,
)
from tests.test_runs import _pull_guide, _register_backbones, _register_guides, local, tiny_registry, tiny_spec
from tests.test_startup import HEAVY, PROBE
from ugd_core import UgdError, hookimpl, load_registry, make_guide
from ugd_core import registry as registry_module
from ugd_core.guidance import guide_loss

runner = CliRunner()


# -- a registry with the tiny backbone and two guides that misbehave on purpose -----------------------


def _first_row_nan(device: str = "cpu"):
    """Pulls pixels toward -0.4, but its loss is NaN for the first image of every batch it sees."""

    def loss(out, y):
        per_image = (out - y).pow(2).flatten(1).mean(1)
        first = torch.arange(len(per_image), device=per_image.device) == 0
        return torch.where(first, torch.full_like(per_image, float("nan")), per_image)

    return make_guide("first-nan", f=lambda x: x, loss=loss, target=-0.4)


CALLS_LEFT = {"n": 10**9}


def _ctrl_c(device: str = "cpu"):
    """Pulls toward -0.4 and raises KeyboardInterrupt (Ctrl-C) once CALLS_LEFT guide calls are used up."""

    def f(x):
        CALLS_LEFT["n"] -= 1
        if CALLS_LEFT["n"] < 0:
            raise KeyboardInterrupt
        return x

    return make_guide("ctrl-c", f=f, loss=lambda out, y: (out - y).pow(2).flatten(1).mean(1), target=-0.4)


def _registry():
    plugin = types.ModuleType("ugd_test_more")

    def guides(register):
        _register_guides(register)
        register("first-nan", _first_row_nan, description="NaN loss for the first image of a batch (tests)")
        register("ctrl-c", _ctrl_c, description="Ctrl-C after some guide calls (tests)")

    plugin.ugd_register_backbones = hookimpl(_register_backbones)
    plugin.ugd_register_guides = hookimpl(guides)
    return load_registry([("tiny", plugin)], entry_points=False)


@pytest.fixture
def cli_on_tiny(monkeypatch):
    """`ugd` as the CLI runs it, on the tiny registry."""
    monkeypatch.setattr(registry_module, "_DEFAULT", _registry())
    CALLS_LEFT["n"] = 10**9
    yield
    CALLS_LEFT["n"] = 10**9


TINY_ARGS = ["-b", "tiny", "-g", "pull:target=-0.4", "--steps", "8", "--seed", "100", "--batch-size", "2"]


def _no_sampling(monkeypatch):
    monkeypatch.setattr("cli.run.generate_batch", lambda *a, **k: pytest.fail("sampled although nothing needed sampling"))


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# -- each image is its own seed's -------------------------------------------------------------------


def test_each_image_of_a_batch_is_the_image_of_its_own_seed():
    """Image i gets seed + i: in a batch, each image is (with this pixel-wise backbone, exactly) the image its
    seed gives alone, and not another seed's."""
    reg = tiny_registry()
    spec = tiny_spec(n=4)  # batches [100, 101], [102, 103]
    items = generate(spec, reg)
    assert [it.record["seed"] for it in items] == [100, 101, 102, 103]
    for it in items:
        alone = generate(replace(spec, seed=it.record["seed"], num_images=1), reg)[0]
        assert torch.allclose(it.image, alone.image, atol=1e-6), it.record["seed"]
        assert all(not torch.allclose(o.image, alone.image, atol=1e-3) for o in items if o is not it)


# -- --best-of ---------------------------------------------------------------------------------------


def test_best_of_writes_the_candidate_it_records_as_kept():
    """The written image is the kept candidate: the guide's loss on it is the recorded loss of that candidate,
    the lowest, and it is the image the candidate's recorded seed (s + j * 2^32) gives in a plain run."""
    reg = tiny_registry()
    spec = replace(tiny_spec(n=2), seed=110, best_of=3)  # seeds where candidates other than the first win
    items = generate(spec, reg)
    kept = [it.record["best_of"]["kept"] for it in items]
    assert kept != [0, 0]
    guide = _pull_guide(-0.4)
    for it in items:
        bo, s = it.record["best_of"], it.record["seed"]
        seeds = [c["seed"] for c in bo["candidates"]]
        assert seeds == [s + j * 2**32 for j in range(3)]
        losses = [c["losses"]["pull"] for c in bo["candidates"]]
        assert losses[bo["kept"]] == min(losses)
        own = float(guide_loss(guide, it.image[None]).item())
        assert own == pytest.approx(losses[bo["kept"]], rel=1e-5)
        plain = generate(replace(spec, seed=seeds[bo["kept"]], num_images=1, best_of=1), reg)[0]
        assert torch.allclose(it.image, plain.image, atol=1e-6)


@pytest.mark.filterwarnings("ignore:non-finite guidance gradient:RuntimeWarning")
def test_best_of_records_the_kept_candidates_own_guidance_outcome():
    """A candidate whose guidance was skipped at every step (NaN loss) is never kept; the image's record
    reports the kept candidate's outcome, so the run does not fail for a candidate it threw away."""
    reg = _registry()
    spec = RunSpec(backbone="tiny", guides=["first-nan"], preset="forward-only", overrides=dict(num_steps=4),
                   seed=110, num_images=2, batch_size=2, lanes=1)
    plain = generate(spec, reg)
    assert [it.stats["guidance_failed"] for it in plain] == [True, False]  # the NaN row: the batch's first image
    items = generate(replace(spec, best_of=3), reg)  # candidate-major: the NaN row is image 0's candidate 0
    first = items[0].record["best_of"]
    assert first["kept"] != 0 and first["candidates"][0]["score"] == float("inf")
    assert [it.stats["guidance_failed"] for it in items] == [False, False]
    assert all(it.stats["image_finite"] for it in items)


def test_best_of_on_an_unguided_run_samples_each_image_once():
    """With no guide there is no loss to pick by: --best-of N gives the plain run's images."""
    reg = tiny_registry()
    spec = RunSpec(backbone="tiny", overrides=dict(num_steps=4), seed=3, num_images=2, batch_size=2, lanes=1)
    plain = generate(spec, reg)
    picked = generate(replace(spec, best_of=3), reg)
    for a, b in zip(plain, picked):
        assert torch.equal(a.image, b.image) and "best_of" not in b.record


# -- the record ----------------------------------------------------------------------------------------


def test_the_record_names_the_device_the_image_was_sampled_on():
    """`--device auto` is resolved before sampling; the record says where the image was drawn."""
    item = generate(RunSpec(backbone="tiny", guides=["pull"], overrides=dict(num_steps=2), device="auto"), tiny_registry())[0]
    assert item.record["device"] == ("cuda" if torch.cuda.is_available() else "cpu")


def test_regenerating_pins_the_recorded_thread_count():
    """Pixels depend on the torch thread count, so the spec rebuilt from a record runs at the recorded count
    (here a lane's share of the run's threads, not the run's)."""
    items = generate(replace(tiny_spec(n=4), lanes=2, threads=4), tiny_registry())
    record = items[3].record
    assert record["torch_threads"] == 2
    again, index = spec_from_image_record(record)
    assert (again.threads, again.seed, again.num_images, index) == (2, 102, 2, 1)


def test_a_spec_file_with_non_consecutive_batch_seeds_is_refused(tmp_path):
    """A batch is consecutive seeds; an edit that breaks that is one line naming batch_seeds, nothing run."""
    item = generate(tiny_spec(n=2, num_steps=2), tiny_registry())[1]
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(dict(item.record, seed=105, batch_seeds=[100, 105])))
    with pytest.raises(UgdError, match=r"batch_seeds \[100, 105\] are not consecutive") as err:
        regenerate_from_record(path, registry=tiny_registry())
    assert "\n" not in str(err.value)


# -- bad input: one line, before any work --------------------------------------------------------------


@pytest.mark.parametrize("field, value", [("batch_size", 0), ("batch_size", 1.5), ("threads", 0), ("threads", -1), ("threads", "two")])
def test_a_bad_batch_size_or_thread_count_is_one_line_before_anything_is_written(tmp_path, monkeypatch, field, value):
    _no_sampling(monkeypatch)
    with pytest.raises(UgdError, match=rf"{field} .* must be a whole number >= 1") as err:
        generate_to_dir(replace(tiny_spec(), **{field: value}), tmp_path / "o", local())
    assert "\n" not in str(err.value) and not (tmp_path / "o").exists()


def test_an_out_that_is_a_file_is_refused_before_torch_loads(tmp_path):
    """The output folder is checked with the other inputs, before torch is imported."""
    blocker = tmp_path / "taken"
    blocker.write_text("x")
    code = PROBE.format(args=["generate", "--guide", "digit:label=3", "--out", str(blocker)], heavy=HEAVY)
    code = code.replace("assert res.exit_code == 0", "assert res.exit_code == 2 and 'is a file' in res.output")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "", f"imported {done.stdout.strip()} before the error"
    assert blocker.read_text() == "x"


@pytest.mark.parametrize("extra, option", [
    (["--best-of", "2"], "best-of"), (["--seed", "3"], "seed"), (["-n", "2"], "num-images"),
    (["--seed", "0"], "seed"), (["-n", "1"], "num-images"),  # given at their default values: still not what the record says
    (["--backbone", "tiny"], "backbone"), (["--batch-size", "4"], "batch-size"), (["--lanes", "1"], "lanes"),
])
def test_from_spec_refuses_an_option_it_would_ignore(tmp_path, cli_on_tiny, extra, option):
    item = generate(tiny_spec(n=1, num_steps=2), tiny_registry())[0]
    png, _ = save_image(item, tmp_path / "orig")
    res = runner.invoke(app, ["generate", "--from-spec", str(png), *extra, "--out", str(tmp_path / "o")])
    assert res.exit_code == 2, res.output
    assert res.output.strip() == (f"error: --from-spec reproduces the recorded settings, so --{option} has no effect; "
                                  "drop it, or edit the spec file's JSON")
    assert not (tmp_path / "o").exists()


def test_from_spec_runs_a_gpu_record_on_the_device_given(tmp_path, cli_on_tiny):
    """A record made on a GPU is regenerated where ``--device`` says, even when that is the default ``cpu``; without
    ``--device`` on a machine with no GPU the one line names the fix."""
    item = generate(tiny_spec(n=1, num_steps=2), tiny_registry())[0]
    png, sidecar = save_image(item, tmp_path / "orig")
    gpu = tmp_path / "gpu.json"
    gpu.write_text(json.dumps(dict(json.loads(sidecar.read_text()), device="cuda")))
    res = runner.invoke(app, ["generate", "--from-spec", str(gpu), "--device", "cpu", "--out", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "o" / png.name).read_bytes() == png.read_bytes()
    if not torch.cuda.is_available():
        res = runner.invoke(app, ["generate", "--from-spec", str(gpu), "--out", str(tmp_path / "p")])
        assert res.exit_code == 2 and "--device cpu" in res.output and not (tmp_path / "p").exists()


# -- existing files ------------------------------------------------------------------------------------


def test_a_lone_sidecar_in_out_is_refused_before_sampling(tmp_path, monkeypatch):
    """Without --overwrite or --resume any existing output file of a requested seed, a JSON sidecar too, is
    an error before any sampling, and it is left as it was."""
    (tmp_path / "ugd-000101.json").write_text("mine")
    _no_sampling(monkeypatch)
    with pytest.raises(UgdError, match=r"ugd-000101.json already exists"):
        generate_to_dir(tiny_spec(n=4), tmp_path, local())
    assert _files(tmp_path) == ["ugd-000101.json"] and (tmp_path / "ugd-000101.json").read_text() == "mine"


def test_save_image_never_replaces_an_existing_sidecar(tmp_path):
    (tmp_path / "ugd-000003.json").write_text("mine")
    item = GeneratedImage(torch.zeros(1, 8, 8), {"seed": 3}, {})
    with pytest.raises(UgdError, match="already exists; pass --overwrite"):
        save_image(item, tmp_path)
    assert _files(tmp_path) == ["ugd-000003.json"] and (tmp_path / "ugd-000003.json").read_text() == "mine"


def test_a_png_that_appears_during_a_resumed_run_is_never_replaced(tmp_path):
    """Even where --resume completes a torn item (a sidecar left without its PNG), a PNG that another run
    writes meanwhile is kept: the run stops with one line instead."""
    out = tmp_path / "o"
    out.mkdir()
    (out / "ugd-000102.json").write_text("{}")  # torn: the PNG was never renamed into place

    def other_run_writes(png, side):
        if png.name == "ugd-000101.png":
            (out / "ugd-000102.png").write_bytes(b"another run's image")

    with pytest.raises(UgdError, match="ugd-000102.png appeared while this run was writing"):
        generate_to_dir(tiny_spec(n=4), out, local(), resume=True, on_image=other_run_writes)
    assert (out / "ugd-000102.png").read_bytes() == b"another run's image"


# -- --resume ------------------------------------------------------------------------------------------


def test_resume_samples_only_the_batches_with_missing_images(tmp_path, monkeypatch):
    import cli.run as run

    out = tmp_path / "o"
    generate_to_dir(tiny_spec(n=6), out, local())  # batches [100, 101], [102, 103], [104, 105]
    (out / "ugd-000103.png").unlink()
    sampled: list[list[int]] = []
    real = run.generate_batch
    monkeypatch.setattr(run, "generate_batch", lambda spec, seeds, *a, **k: sampled.append(list(seeds)) or real(spec, seeds, *a, **k))
    done = generate_to_dir(tiny_spec(n=6), out, local(), resume=True)
    assert (done.written, done.skipped) == (1, 5) and sampled == [[102, 103]]
    sampled.clear()
    again = generate_to_dir(tiny_spec(n=6), out, local(), resume=True)  # complete: nothing to sample
    assert (again.written, again.skipped) == (0, 6) and sampled == []


def test_resume_refuses_an_image_made_with_other_guides(tmp_path):
    out = tmp_path / "o"
    generate_to_dir(tiny_spec(n=2), out, local())
    before = (out / "ugd-000100.png").read_bytes()
    other = replace(tiny_spec(n=4), guides=["pull:target=-0.6"])
    with pytest.raises(UgdError, match=r"ugd-000100.png was made by a different run spec \(differs in guides\)"):
        generate_to_dir(other, out, local(), resume=True)
    assert (out / "ugd-000100.png").read_bytes() == before and not (out / "ugd-000102.png").exists()


def test_resume_refuses_an_image_recorded_under_another_seed(tmp_path):
    """An image whose file name and recorded seed disagree (copied or renamed) is not this run's image."""
    out = tmp_path / "o"
    generate_to_dir(tiny_spec(n=1), out, local())  # seed 100 only
    for ext in ("png", "json"):
        (out / f"ugd-000101.{ext}").write_bytes((out / f"ugd-000100.{ext}").read_bytes())
    with pytest.raises(UgdError, match=r"ugd-000101.png was made by a different run spec \(differs in seed\)"):
        generate_to_dir(tiny_spec(n=4), out, local(), resume=True)


# -- the run's folder and Ctrl-C ---------------------------------------------------------------------


def test_a_new_run_folder_counts_on_from_the_highest_number_of_the_day(tmp_path):
    """Run folders of a day are numbered on from the highest one there, whatever was deleted before it."""
    spec = tiny_spec()
    first = default_out_dir(spec, tmp_path)
    day = first.parent
    first.rmdir()
    (day / "0002-older-run").mkdir()  # 0001 was deleted
    assert default_out_dir(spec, tmp_path) == day / f"0003-{guide_slug(spec.guides)}"


def test_ctrl_c_in_a_run_of_its_own_folder_says_how_to_resume_it(tmp_path, monkeypatch, cli_on_tiny):
    """Without --out the interrupted line names the run's folder in its --resume hint, and that hint,
    followed, completes the run."""
    monkeypatch.chdir(tmp_path)
    args = ["generate", "-b", "tiny", "-g", "ctrl-c", "--preset", "forward-only", "--steps", "2", "-n", "3",
            "--batch-size", "1", "--lanes", "1"]
    CALLS_LEFT["n"] = 3  # 2 guide calls an image: Ctrl-C while sampling the second
    res = runner.invoke(app, args)
    assert res.exit_code == 130, res.output
    (folder,) = [p for p in (tmp_path / "outputs").glob("*/*") if p.is_dir()]
    last = res.output.strip().splitlines()[-1]
    assert last == f"interrupted: 1 image written to {folder.relative_to(tmp_path)}; rerun with --resume --out {folder.relative_to(tmp_path)}"
    CALLS_LEFT["n"] = 10**9
    hint = last.split("rerun with ")[1].split()
    res = runner.invoke(app, args + hint)
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in folder.glob("ugd-*.png")) == ["ugd-000000.png", "ugd-000001.png", "ugd-000002.png"]


def test_an_out_folder_that_existed_before_a_failed_run_is_left_in_place(tmp_path, monkeypatch):
    """A run that writes nothing removes only a folder it created itself, never the user's own --out."""
    out = tmp_path / "mine"
    out.mkdir()

    def broken(*a, **k):
        raise RuntimeError("the guide broke")

    monkeypatch.setattr("cli.run.generate_batch", broken)
    with pytest.raises(RuntimeError, match="the guide broke"):
        generate_to_dir(tiny_spec(n=2), out, local())
    assert out.is_dir() and _files(out) == []
    with pytest.raises(RuntimeError, match="the guide broke"):
        generate_to_dir(tiny_spec(n=2), tmp_path / "new", local())
    assert not (tmp_path / "new").exists()  # one it made itself: removed


def test_the_contact_sheet_shows_the_first_64_images(tmp_path, monkeypatch):
    import cli.outputs as outputs

    spec = RunSpec(backbone="tiny", seed=10, num_images=65)
    for s in spec.seeds():
        save_image(GeneratedImage(torch.zeros(1, 8, 8), {"seed": s}, {}), tmp_path)
    drawn = {}
    real = outputs.labelled_grid
    monkeypatch.setattr(outputs, "labelled_grid", lambda rows, **kw: drawn.update(kw, rows=rows) or real(rows, **kw))
    assert write_contact_sheet(tmp_path, spec, None, "sheet.png") == tmp_path / "sheet.png"
    assert [c for row in drawn["captions"] for c in row] == [f"seed {s}" for s in range(10, 74)]
    assert sum(len(r) for r in drawn["rows"]) == 64 and drawn["title"][-1] == "seeds 10-74 (first 64 of 65 shown)"
