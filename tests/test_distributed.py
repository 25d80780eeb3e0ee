"""Generation on a local Ray cluster: same pixels as in-process, resume, a worker killed mid-run, no Ray.

One small local cluster (2 CPUs) serves the whole module. Workers rebuild the
registry through ``registry_factory``; the test plugin's module (tests/test_runs.py)
is pickled by value so they get its tiny closed-form backbone without installing anything.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ugd_core import UgdError

ray = pytest.importorskip("ray")

import test_runs  # noqa: E402
from cli.distributed import RayExecutor, generate_on_ray  # noqa: E402
from cli.outputs import plan_outputs  # noqa: E402
from cli.run import LocalExecutor, RunInterrupted, RunSpec, generate, generate_to_dir, to_pil  # noqa: E402
from test_runs import tiny_registry, tiny_spec as _spec  # noqa: E402


@pytest.fixture(scope="module")
def cluster():
    torch.set_num_threads(1)
    for mod in (sys.modules[__name__], test_runs):
        ray.cloudpickle.register_pickle_by_value(mod)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=80 * 1024 * 1024)
    yield ray
    ray.shutdown()
    for mod in (sys.modules[__name__], test_runs):
        ray.cloudpickle.unregister_pickle_by_value(mod)


def _ray(workers: int | None = None, address: str | None = None) -> RayExecutor:
    return RayExecutor(address, workers, registry_factory=tiny_registry)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The in-process run of _spec() at one torch thread: what every Ray run must reproduce."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("inproc")
    generate_to_dir(_spec(), out, LocalExecutor(tiny_registry()))
    return out


def _pixels(png: Path) -> bytes:
    from PIL import Image

    with Image.open(png) as im:
        return np.asarray(im).tobytes()


def _record(side: Path) -> dict:
    import json

    rec = json.loads(side.read_text())
    rec["stats"].pop("seconds")  # wall time: the one field that differs between runs
    return rec


def _assert_same_as_reference(out: Path, reference: Path) -> None:
    names = sorted(p.name for p in reference.iterdir())
    assert sorted(p.name for p in out.iterdir()) == names
    for name in names:
        if name.endswith(".png"):  # the PNG holds pixels and the record only (the sheet: pixels): byte-identical
            assert (out / name).read_bytes() == (reference / name).read_bytes(), name
        else:
            assert _record(out / name) == _record(reference / name), name


def _stat(out: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.iterdir() if not p.name.startswith("contact-sheet")}


def test_ray_run_reproduces_the_in_process_images(cluster, reference, tmp_path):
    summary = generate_to_dir(_spec(), tmp_path, RayExecutor("local", 2, registry_factory=tiny_registry))
    assert (summary.written, summary.contact_sheet) == (6, tmp_path / "contact-sheet-100-105.png")  # the run's own, under --out
    _assert_same_as_reference(tmp_path, reference)  # images, records (thread count included) and contact sheet
    paths = generate_on_ray(_spec(), tmp_path / "again", registry_factory=tiny_registry, num_workers=1)
    assert [p.name for p, _ in paths] == [f"ugd-{s:06d}.png" for s in range(100, 106)]  # the older call still works


def test_interrupted_run_resumes_writing_only_missing_items(cluster, reference, tmp_path):
    done = []

    def stop_after_two(png, side):
        done.append(png)
        if len(done) == 2:
            raise KeyboardInterrupt

    with pytest.raises(RunInterrupted) as err:
        generate_to_dir(_spec(), tmp_path, _ray(1), on_image=stop_after_two)
    assert str(err.value) == f"interrupted: 2 images written to {tmp_path}; rerun with --resume"
    complete = sorted(p.name for p in tmp_path.glob("*.png"))
    assert len(complete) == 2 and not list(tmp_path.glob("*.tmp"))
    # a torn item, as if killed between the sidecar and the PNG rename: completed on resume
    (tmp_path / "ugd-000105.json").write_text("{}")

    with pytest.raises(UgdError, match="already exists"):  # a plain rerun refuses, as before
        generate_to_dir(_spec(), tmp_path, _ray())
    with pytest.raises(UgdError, match="different run spec .*sampler"):  # another spec is never mixed in
        generate_to_dir(_spec(num_steps=9), tmp_path, _ray(), resume=True)

    before = {k: v for k, v in _stat(tmp_path).items() if k.replace(".json", ".png") in complete}
    summary = generate_to_dir(_spec(), tmp_path, _ray(1), resume=True)
    assert (summary.written, summary.skipped) == (4, 2)
    after = _stat(tmp_path)
    assert {k: after[k] for k in before} == before  # complete items untouched: same inode, same mtime
    _assert_same_as_reference(tmp_path, reference)

    again = generate_to_dir(_spec(), tmp_path, _ray(), resume=True)
    assert again.written == 0 and _stat(tmp_path) == after  # nothing left to do, nothing rewritten


def test_a_worker_killed_mid_run_is_replaced_and_every_item_is_written_once(cluster, reference, tmp_path):
    marker = tmp_path.parent / f"{tmp_path.name}-crashed"
    # 8 steps x recurrence 3 = 24 eps calls per batch: the worker dies inside its second batch
    spec = _spec(backbone=f"tiny:crash_file={marker},crash_at=30", recurrence=3)
    ref = _spec(recurrence=3)
    written = []
    summary = generate_to_dir(spec, tmp_path, _ray(1), on_image=lambda p, s: written.append(p.name))
    assert marker.exists(), "the worker was expected to die once"
    seeds = [f"ugd-{s:06d}.png" for s in range(100, 106)]
    assert sorted(written) == seeds and summary.written == 6  # each exactly once
    # same pixels as an undisturbed in-process run
    torch.set_num_threads(1)
    for item in generate(ref, tiny_registry()):
        png = tmp_path / f"ugd-{item.record['seed']:06d}.png"
        assert np.asarray(to_pil(item.image)).tobytes() == _pixels(png)


def test_plan_refuses_overwrite_with_resume(tmp_path):
    with pytest.raises(UgdError, match="contradict"):
        plan_outputs(_spec(), tmp_path, overwrite=True, resume=True, registry=tiny_registry())


def test_user_errors_surface_before_any_worker_starts_and_from_workers(tmp_path):
    from cli.distributed import GenerationWorker

    bad = RunSpec(backbone="tiny", guides=["nope"], overrides=dict(num_steps=2), num_images=2)
    with pytest.raises(UgdError, match="unknown guide 'nope'"):  # checked on the driver: no cluster needed
        generate_to_dir(bad, tmp_path, _ray(address="ray://nowhere:1"))
    with pytest.raises(UgdError, match="unknown parameter 'strength'"):
        generate_to_dir(_spec(backbone="tiny:strength=2"), tmp_path, _ray())
    # a failure only a worker can see (building the models) comes back as ('error', message)
    worker = GenerationWorker(bad, tiny_registry, 1)
    assert worker.run([0]) == ("error", worker.error, []) and "unknown guide 'nope'" in worker.error
    assert not list(tmp_path.iterdir())


def test_without_ray_the_cli_exits_2_with_the_install_hint(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from cli.main import app

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    runner = CliRunner()
    for args in (
        ["generate", "--ray", "local", "-n", "2", "--out", str(tmp_path / "g")],
        ["bench", "digits", "--ray", "local", "--quick", "--out", str(tmp_path / "b")],
        ["tune", "digits", "--strategy", "random", "--out", str(tmp_path / "t")],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert "pip install 'ugd[ray]'" in result.output, result.output
    assert not (tmp_path / "g").exists()


def test_cli_resume_without_ray_skips_complete_items(tmp_path, monkeypatch):
    """--resume is the same contract in-process: complete items are kept, missing ones written."""
    from typer.testing import CliRunner

    import cli.main as cli
    from ugd_core import registry as registry_mod

    monkeypatch.setattr(registry_mod, "_DEFAULT", tiny_registry())
    args = ["generate", "-b", "tiny", "-g", "pull:target=-0.4", "--steps", "8", "--seed", "100", "-n", "4", "--batch-size", "2", "--out", str(tmp_path)]
    runner = CliRunner()
    assert runner.invoke(cli.app, args).exit_code == 0
    (tmp_path / "ugd-000103.png").unlink()
    before = _stat(tmp_path)
    assert runner.invoke(cli.app, args).exit_code == 2  # plain rerun: existing outputs are an error
    result = runner.invoke(cli.app, args + ["--resume"])
    assert result.exit_code == 0, result.output
    after = _stat(tmp_path)
    assert {k: after[k] for k in before if k != "ugd-000103.json"} == {k: v for k, v in before.items() if k != "ugd-000103.json"}
    assert "ugd-000103.png" in after
