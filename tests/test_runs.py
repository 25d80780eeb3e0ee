"""Runs to folders (`cli.run.generate_to_dir`) in-process: files, records, contact sheet, summary,
per-run folders, every bad input as one line before any work, regeneration from a record, Ctrl-C.

A closed-form Gaussian backbone (ugd_core.testing) keeps each run to a fraction of a second.
The plugin here is also what tests/test_distributed.py ships to its Ray workers.
"""

from __future__ import annotations

import json
import dataclasses
from dataclasses import replace
import os
import types
from pathlib import Path

import pytest
import torch

from cli.bench import mean_spread, save_labelled_grid
from cli.outputs import default_out_dir, sheet_name
from cli.run import (
    SHEET_NAME,
    LocalExecutor,
    RunInterrupted,
    RunSpec,
    generate,
    generate_to_dir,
    regenerate_from_record,
    save_image,
    validate_spec,
)
from ugd_core import CallableBackbone, Param, UgdError, hookimpl, load_registry, make_guide
from ugd_core.testing import LinearDDPMSchedule, gaussian_eps

MU, S = 0.3, 0.5


def _tiny_backbone(device: str = "cpu", crash_file: str = "", crash_at: int = 0) -> CallableBackbone:
    """Closed-form denoiser of N(MU, S^2) on 1x8x8 'images'; optionally dies once (os._exit) mid-run."""
    sched = LinearDDPMSchedule()
    exact = gaussian_eps(sched.alphas_cumprod, MU, S)
    calls = [0]

    def eps(z, t, cond):
        calls[0] += 1
        if crash_file and calls[0] == crash_at and not os.path.exists(crash_file):
            Path(crash_file).write_text(str(os.getpid()))
            os._exit(1)  # a worker dying without a goodbye
        return exact(z, t, cond)

    return CallableBackbone(eps, (1, 8, 8), sched, device=device)


def _pull_guide(target: float = -0.5, device: str = "cpu"):
    return make_guide("pull", f=lambda x: x, loss=lambda out, y: (out - y).pow(2).flatten(1).mean(1), target=target)


def _register_backbones(register):
    register(
        "tiny",
        _tiny_backbone,
        description="closed-form Gaussian denoiser (tests)",
        params=[Param("crash_file", "str", "", "die once, leaving this file"), Param("crash_at", "int", 0, "at this eps call")],
    )


def _register_guides(register):
    register("pull", _pull_guide, description="pull pixels toward a value (tests)", params=[Param("target", "float", -0.5, "value")])


def tiny_registry():
    """The test plugin 'tiny' alone (no entry points: fast and hermetic); Ray workers call it too."""
    plugin = types.ModuleType("ugd_test_tiny")
    plugin.ugd_register_backbones = hookimpl(_register_backbones)
    plugin.ugd_register_guides = hookimpl(_register_guides)
    return load_registry([("tiny", plugin)], entry_points=False)


def tiny_spec(n: int = 6, backbone: str = "tiny", **overrides) -> RunSpec:
    knobs = dict(num_steps=8)
    knobs.update(overrides)
    # one lane: batches complete in order (tests/test_lanes.py runs several at once)
    return RunSpec(backbone=backbone, guides=["pull:target=-0.4"], overrides=knobs, seed=100, num_images=n, batch_size=2, lanes=1)


def local() -> LocalExecutor:
    """An in-process executor on the tiny registry."""
    return LocalExecutor(tiny_registry())


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_a_run_writes_images_records_a_contact_sheet_and_a_summary(tmp_path):
    out = tmp_path / "run"
    summary = generate_to_dir(tiny_spec(n=4), out, local())
    names = [f"ugd-{s:06d}" for s in range(100, 104)]
    sheet = "contact-sheet-100-103.png"  # under --out the sheet is the run's own, named for its seeds
    assert _files(out) == sorted([sheet] + [n + ".json" for n in names] + [n + ".png" for n in names])
    assert (summary.out, summary.written, summary.skipped, summary.interrupted) == (out, 4, 0, False)
    assert summary.contact_sheet == out / sheet
    line = summary.line()
    assert line.startswith("4 images (preset auto) in ") and line.endswith(f"-> {out}; contact sheet {sheet}")
    record = json.loads((out / "ugd-000101.json").read_text())
    # the record names the plugin behind each name, and the thread count the pixels depend on
    assert record["guides"][0]["plugin"] == "tiny" and record["backbone"]["plugin"] == "tiny"
    assert record["torch_threads"] == torch.get_num_threads() and record["batch_seeds"] == [100, 101]
    from PIL import Image

    with Image.open(out / sheet) as im:  # 4 tiles of >= 96 px, a title with the guide spec
        assert im.width >= 2 * 96 and im.height >= 2 * 96
        top = im.convert("L").crop((0, 0, im.width, 14))
        assert min(top.getdata()) < 128  # text was drawn in the title band


def test_two_runs_with_other_seeds_into_one_out_keep_their_own_contact_sheets(tmp_path):
    """Runs of different seeds may share an --out (they write different images, even at once): each draws
    its own sheet, named for its seeds, so neither replaces the other's."""
    out = tmp_path / "shared"
    first = generate_to_dir(tiny_spec(n=2), out, local())
    second = generate_to_dir(replace(tiny_spec(n=2), seed=200), out, local())
    assert first.contact_sheet == out / "contact-sheet-100-101.png" and second.contact_sheet == out / "contact-sheet-200-201.png"
    assert first.contact_sheet.exists() and second.contact_sheet.exists()
    assert sheet_name([7], own_folder=False) == "contact-sheet-7.png" and sheet_name([0, 1], own_folder=True) == SHEET_NAME


def test_two_identical_runs_without_out_get_two_folders(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = generate_to_dir(tiny_spec(n=2), executor=local())
    second = generate_to_dir(tiny_spec(n=2), executor=local())
    assert first.out != second.out and first.out.parent == second.out.parent
    assert first.out.parent.parent == Path("outputs")
    assert [first.out.name, second.out.name] == ["0001-pull-target-0.4", "0002-pull-target-0.4"]
    for s in (first, second):
        assert (s.out / SHEET_NAME).exists() and (s.out / "ugd-000101.png").exists()
    assert default_out_dir(tiny_spec(), "elsewhere").name == "0001-pull-target-0.4"


def _record_file(tmp_path: Path) -> Path:
    out = tmp_path / "orig"
    for item in generate(tiny_spec(n=4, num_steps=4), tiny_registry()):
        save_image(item, out)
    return out / "ugd-000102.json"


def _edited(path: Path, edit) -> Path:
    rec = json.loads(path.read_text())
    edit(rec)
    p = path.parent / "edited.json"
    p.write_text(json.dumps(rec))
    return p


SPEC_EDITS = {
    "num_steps": (lambda r: r["sampler"].update(num_steps="abc"), "num_steps='abc' is not a valid int"),
    "strength": (lambda r: r["sampler"].update(forward_strength="lots"), "forward_strength='lots' is not a valid float"),
    "no sampler": (lambda r: r.pop("sampler"), "missing field 'sampler'"),
    "seed text": (lambda r: r.update(seed="seven"), "seed 'seven' must be a whole number >= 0"),
    "seed negative": (lambda r: r.update(seed=-5), "seed -5 must be a whole number >= 0"),
    "params": (lambda r: r["guides"][0]["params"].update(target="0.9"), "params target='0.9' contradicts its spec 'pull:target=-0.4'"),
    "weight": (lambda r: r["guides"][0].update(weight=3.0), "weight 3.0 contradicts its spec 'pull:target=-0.4' (weight 1.0)"),
    "name": (lambda r: r["guides"][0].update(name="push"), "name 'push' contradicts its spec 'pull:target=-0.4'"),
}


@pytest.mark.parametrize("case", sorted(SPEC_EDITS))
def test_a_bad_spec_file_is_one_line_before_anything_is_written(tmp_path, case):
    edit, message = SPEC_EDITS[case]
    path = _edited(_record_file(tmp_path), edit)
    out = tmp_path / "again"
    with pytest.raises(UgdError) as err:
        spec, _ = regenerate_from_record(path, registry=tiny_registry())
        generate_to_dir(spec, out, local())
    assert message in str(err.value) and "\n" not in str(err.value)
    assert not out.exists()


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(seed=-5), "seed -5 must be a whole number >= 0"),
        (dict(seed="seven"), "seed 'seven' must be a whole number >= 0"),
        (dict(overrides=dict(num_steps="abc")), "num_steps='abc' is not a valid int"),
        (dict(overrides=dict(forward_strength="lots")), "forward_strength='lots' is not a valid float"),
        (dict(overrides=dict(eta=-1.0)), "eta=-1.0 must be >= 0"),
        (dict(guides=["pull:weight=lots"]), "pull: weight='lots' is not a number"),
        (dict(guides=["nope"]), "unknown guide 'nope'"),
        (dict(num_images=0), "num_images 0 must be a whole number >= 1"),
    ],
)
def test_a_bad_run_spec_is_one_line_before_anything_is_written(tmp_path, change, message):
    spec = tiny_spec()
    for k, v in change.items():
        setattr(spec, k, v)
    with pytest.raises(UgdError) as err:
        generate_to_dir(spec, tmp_path / "o", local())
    assert message in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "o").exists()


def test_an_output_folder_that_is_a_file_or_under_one_is_refused_before_sampling(tmp_path, monkeypatch):
    afile = tmp_path / "taken"
    afile.write_text("x")
    monkeypatch.setattr("cli.run.generate_batch", lambda *a, **k: pytest.fail("sampled before the folder was checked"))
    with pytest.raises(UgdError, match=r"is a file, not a folder"):
        generate_to_dir(tiny_spec(), afile, local())
    with pytest.raises(UgdError, match=r"lies under .*taken, which is a file"):
        generate_to_dir(tiny_spec(), afile / "sub" / "dir", local())
    with pytest.raises(UgdError, match="contradict"):
        generate_to_dir(tiny_spec(), tmp_path / "o", local(), overwrite=True, resume=True)
    with pytest.raises(UgdError, match="--resume completes an earlier run"):
        generate_to_dir(tiny_spec(), None, local(), resume=True)
    assert _files(tmp_path) == ["taken"]


def test_regenerating_reproduces_the_whole_batch_bit_exact_or_one_image_on_request(tmp_path):
    side = _record_file(tmp_path)  # seeds 100..103 in batches of 2: seed 102 is in batch [102, 103]
    reg = tiny_registry()
    spec, what = regenerate_from_record(side.with_suffix(".png"), registry=reg)
    assert (spec.seed, spec.num_images, spec.batch_size) == (102, 2, 2)
    assert what == (
        "regenerating the whole batch of 2 images (seeds 102-103) that ugd-000102 belongs to, "
        "for bit-exact output; pass --single to regenerate only this image"
    )
    again = generate_to_dir(spec, tmp_path / "again", local())
    for s in (102, 103):
        name = f"ugd-{s:06d}.png"
        assert (again.out / name).read_bytes() == (side.parent / name).read_bytes()
    one, what = regenerate_from_record(side, single=True, registry=reg)
    assert (one.seed, one.num_images, one.batch_size) == (102, 1, 1) and "as a batch of one" in what


def test_a_spec_whose_only_edit_is_the_seed_is_accepted(tmp_path):
    path = _edited(_record_file(tmp_path), lambda r: r.update(seed=104))
    spec, what = regenerate_from_record(path, registry=tiny_registry())
    assert (spec.seed, spec.num_images) == (104, 1) and "seed 104 alone" in what
    summary = generate_to_dir(spec, tmp_path / "s", local())
    assert summary.written == 1 and (tmp_path / "s" / "ugd-000104.png").exists()


def test_ctrl_c_removes_temporary_files_and_resume_completes_the_run(tmp_path, monkeypatch):
    import cli.outputs as outputs

    reference = generate_to_dir(tiny_spec(n=4), tmp_path / "ref", local())
    out = tmp_path / "o"
    real = outputs.to_pil
    calls = [0]

    class Torn:
        """The PNG of the third image: its temporary file is half written when Ctrl-C arrives."""

        def __init__(self, image):
            self.image = real(image)

        def save(self, path, **kw):
            Path(path).write_bytes(b"half")
            raise KeyboardInterrupt

    def to_pil(image):
        calls[0] += 1
        return Torn(image) if calls[0] == 3 else real(image)

    monkeypatch.setattr(outputs, "to_pil", to_pil)
    with pytest.raises(RunInterrupted) as err:
        generate_to_dir(tiny_spec(n=4), out, local())
    assert isinstance(err.value, KeyboardInterrupt)
    assert err.value.summary.written == 2 and err.value.summary.interrupted
    assert str(err.value) == f"interrupted: 2 images written to {out}; rerun with --resume"
    assert not list(out.glob("*.tmp")) and _files(out) == ["ugd-000100.json", "ugd-000100.png", "ugd-000101.json", "ugd-000101.png"]
    monkeypatch.setattr(outputs, "to_pil", real)
    done = generate_to_dir(tiny_spec(n=4), out, local(), resume=True)
    assert (done.written, done.skipped) == (2, 2) and "2 images, 2 already there" in done.line()
    for s in range(100, 104):
        name = f"ugd-{s:06d}.png"
        assert (out / name).read_bytes() == (reference.out / name).read_bytes()


def test_validate_spec_needs_no_model(monkeypatch):
    reg = tiny_registry()
    built: list[tuple] = []
    monkeypatch.setattr(reg, "build", lambda *a, **k: built.append(a))
    validate_spec(tiny_spec(), reg)  # a good spec passes
    with pytest.raises(UgdError, match="target"):  # a bad guide parameter is found without building anything
        validate_spec(RunSpec(backbone="tiny", guides=["pull:target=lots"], seed=100), reg)
    assert built == []


def test_a_local_run_parses_each_text_once(tmp_path, monkeypatch):
    """validate_spec parses the backbone and guide texts; the executor builds from that CheckedSpec."""
    import cli.spec as spec_module

    texts: list[str] = []
    real = spec_module.parse_spec
    monkeypatch.setattr(spec_module, "parse_spec", lambda text: texts.append(text) or real(text))
    spec = dataclasses.replace(tiny_spec(n=2), guides=["pull:target=-0.4", "pull:target=-0.6,weight=0.5"])
    generate_to_dir(spec, tmp_path / "o", local())
    assert sorted(texts) == sorted([spec.backbone, *spec.guides])


def test_bench_tables_say_one_seed_has_no_spread_and_grids_carry_labels(tmp_path):
    assert mean_spread(0.8, 0.0, 1) == "0.800 ± n/a (1 seed)"
    assert mean_spread(0.8, 0.01, 3) == "0.800 ± 0.010"
    assert (mean_spread(float("nan"), 0.0, 3), mean_spread(float("inf"), 0.0, 3)) == ("nan", "inf")  # never a blank
    from PIL import Image

    images = torch.zeros(4, 1, 8, 8)  # black tiles: anything dark in the margins is a label
    path = save_labelled_grid(images, tmp_path / "g.png", 2, row_labels=["label 3", "label 7"], col_labels=["s0", "s1"])
    with Image.open(path) as im:
        gray = im.convert("L")
        assert gray.width > 2 * 96 and gray.height > 2 * 96
        left = gray.crop((0, 40, 30, gray.height))  # the row-label column
        assert min(left.getdata()) < 128


def _imported_roots(path: Path) -> set[str]:
    """The top-level package of every absolute import in a file (lazy imports inside functions included)."""
    import ast

    roots = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_the_layers_import_only_downwards():
    """docs/architecture.md: the kernel imports neither the application layer, nor a plugin, nor ugd-kit,
    nor rich/typer/ray/optuna; the application layer imports no plugin by name; a plugin's code and
    tests import the kernel, ugd-kit and their own package, never another plugin (nor `cli`, except
    a benchmark suite's module)."""
    root = Path(__file__).resolve().parents[1]
    folders = [p for p in (root / "ugd_plugins").iterdir() if p.is_dir() and (p / "pyproject.toml").exists()]
    package = {p: next(q.name for q in p.iterdir() if q.name.startswith("ugd_") and (q / "__init__.py").exists()) for p in folders}
    plugins = set(package.values()) | {p.name for p in folders}
    forbidden = {"kernel": {"cli", "rich", "typer", "ray", "optuna", "ugd_plugins"} | plugins, "cli": {"ugd_plugins"} | plugins}
    for layer, folder in (("kernel", "ugd_core"), ("cli", "cli")):
        for path in sorted((root / folder).glob("*.py")):
            bad = _imported_roots(path) & forbidden[layer]
            assert not bad, f"{path.relative_to(root)} imports {bad}"
    for folder, own in package.items():
        others = plugins - {own, "ugd_kit"}
        for path in sorted(folder.rglob("*.py")):
            rel = path.relative_to(root)
            bad = _imported_roots(path) & (others | ({"cli"} if path.name != "bench.py" else set()))
            assert not bad, f"{rel} imports {bad}: a plugin reaches another plugin only through the registry"
