"""Generation on a local Ray cluster: same pixels as in-process, resume, a worker killed mid-run, no Ray.

One small local cluster (2 CPUs) serves the whole module. Workers rebuild the
registry through ``registry_factory``; this module is pickled by value so they
get the tiny closed-form backbone registered here without installing anything.
"""

from __future__ import annotations

import json
import os
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from ugd_core import CallableBackbone, Param, UgdError, hookimpl, load_registry, make_guide

ray = pytest.importorskip("ray")

from cli.distributed import generate_on_ray, plan_outputs  # noqa: E402
from cli.run import RunSpec, generate, save_image  # noqa: E402
from ugd_core.testing import LinearDDPMSchedule, gaussian_eps  # noqa: E402

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
    """What each worker calls to rebuild the registry (no entry points: fast and hermetic)."""
    plugin = types.ModuleType("ugd_test_tiny")
    plugin.ugd_register_backbones = hookimpl(_register_backbones)
    plugin.ugd_register_guides = hookimpl(_register_guides)
    return load_registry([("tiny", plugin)], entry_points=False)


def _spec(n: int = 6, backbone: str = "tiny", **overrides) -> RunSpec:
    knobs = dict(num_steps=8)
    knobs.update(overrides)
    return RunSpec(backbone=backbone, guides=["pull:target=-0.4"], overrides=knobs, seed=100, num_images=n, batch_size=2)


@pytest.fixture(scope="module")
def cluster():
    torch.set_num_threads(1)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=80 * 1024 * 1024)
    yield ray
    ray.shutdown()
    ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The in-process run of _spec(): what every Ray run must reproduce."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("inproc")
    for item in generate(_spec(), tiny_registry()):
        save_image(item, out)
    return out


def _pixels(png: Path) -> bytes:
    from PIL import Image

    with Image.open(png) as im:
        return np.asarray(im).tobytes()


def _record(side: Path) -> dict:
    rec = json.loads(side.read_text())
    rec["stats"].pop("seconds")  # wall time: the one field that differs between runs
    return rec


def _assert_same_as_reference(out: Path, reference: Path) -> None:
    names = sorted(p.name for p in reference.iterdir())
    assert sorted(p.name for p in out.iterdir()) == names
    for name in names:
        if name.endswith(".png"):  # the PNG holds pixels and the spec only: byte-identical
            assert (out / name).read_bytes() == (reference / name).read_bytes(), name
        else:
            assert _record(out / name) == _record(reference / name), name


def _stat(out: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.iterdir()}


def test_ray_run_reproduces_the_in_process_images(cluster, reference, tmp_path):
    paths = generate_on_ray(_spec(), tmp_path, address="local", registry_factory=tiny_registry, num_workers=2)
    assert [p.name for p, _ in paths] == [f"ugd-{s:06d}.png" for s in range(100, 106)]
    _assert_same_as_reference(tmp_path, reference)


def test_interrupted_run_resumes_writing_only_missing_items(cluster, reference, tmp_path):
    done = []

    def stop_after_two(png, side):
        done.append(png)
        if len(done) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        generate_on_ray(_spec(), tmp_path, registry_factory=tiny_registry, num_workers=1, on_item=stop_after_two)
    complete = sorted(p.name for p in tmp_path.glob("*.png"))
    assert len(complete) == 2
    # a torn item, as if killed between the sidecar and the PNG rename: completed on resume
    (tmp_path / "ugd-000105.json").write_text("{}")

    with pytest.raises(UgdError, match="already exists"):  # a plain rerun refuses, as before
        generate_on_ray(_spec(), tmp_path, registry_factory=tiny_registry)
    with pytest.raises(UgdError, match="different run spec .*sampler"):  # another spec is never mixed in
        generate_on_ray(_spec(num_steps=9), tmp_path, registry_factory=tiny_registry, resume=True)

    before = {k: v for k, v in _stat(tmp_path).items() if k.replace(".json", ".png") in complete}
    paths = generate_on_ray(_spec(), tmp_path, registry_factory=tiny_registry, resume=True, num_workers=1)
    assert sorted(p.name for p, _ in paths) == sorted(set(f"ugd-{s:06d}.png" for s in range(100, 106)) - set(complete))
    after = _stat(tmp_path)
    assert {k: after[k] for k in before} == before  # complete items untouched: same inode, same mtime
    _assert_same_as_reference(tmp_path, reference)

    again = generate_on_ray(_spec(), tmp_path, registry_factory=tiny_registry, resume=True)
    assert again == [] and _stat(tmp_path) == after  # nothing left to do, nothing rewritten


def test_a_worker_killed_mid_run_is_replaced_and_every_item_is_written_once(cluster, reference, tmp_path):
    marker = tmp_path.parent / f"{tmp_path.name}-crashed"
    # 8 steps x recurrence 3 = 24 eps calls per batch: the worker dies inside its second batch
    spec = _spec(backbone=f"tiny:crash_file={marker},crash_at=30", recurrence=3)
    ref = _spec(recurrence=3)
    written = []
    paths = generate_on_ray(spec, tmp_path, registry_factory=tiny_registry, num_workers=1, on_item=lambda p, s: written.append(p.name))
    assert marker.exists(), "the worker was expected to die once"
    seeds = [f"ugd-{s:06d}.png" for s in range(100, 106)]
    assert sorted(written) == seeds and [p.name for p, _ in paths] == seeds  # each exactly once
    # same pixels as an undisturbed in-process run
    torch.set_num_threads(1)
    for item in generate(ref, tiny_registry()):
        png = tmp_path / f"ugd-{item.record['seed']:06d}.png"
        from cli.run import to_pil

        assert np.asarray(to_pil(item.image)).tobytes() == _pixels(png)


def test_plan_refuses_overwrite_with_resume(tmp_path):
    with pytest.raises(UgdError, match="contradict"):
        plan_outputs(_spec(), tmp_path, overwrite=True, resume=True, registry=tiny_registry())


def test_user_errors_surface_before_any_worker_starts_and_from_workers(tmp_path):
    from cli.distributed import GenerationWorker

    bad = RunSpec(backbone="tiny", guides=["nope"], overrides=dict(num_steps=2), num_images=2)
    with pytest.raises(UgdError, match="unknown guide 'nope'"):  # checked on the driver: no cluster needed
        generate_on_ray(bad, tmp_path, address="ray://nowhere:1", registry_factory=tiny_registry)
    with pytest.raises(UgdError, match="unknown parameter 'strength'"):
        generate_on_ray(_spec(backbone="tiny:strength=2"), tmp_path, registry_factory=tiny_registry)
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
