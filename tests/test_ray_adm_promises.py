"""Ray runs and the ADM backbone do what docs/distributed.md and docs/backbones/adm.md promise.

Ray: work is split into batches of seeds and merged back in seed order, the same bytes as an in-process run,
up to two batches queued per worker, workers never more than batches, a worker that dies is replaced or its
batch handed on (and a batch that keeps killing its worker is one error naming its seeds), worker errors come
back as the same one-line error, thread counts and GPU placement as documented, and an initialised Ray is
reused, never shut down. These run on an in-process stand-in for the ``ray`` module (``_FakeRay``): its
actors are the real GenerationWorker / CellWorker in this process, its ``wait`` can hand results back out of
order, and it can make a worker die, so each promise is checked without starting a cluster
(tests/test_distributed.py runs the real one).

ADM: the release table and flags of docs/backbones/adm.md, the schedule for any step count, class labels,
the refusals, the noise-aware classifier's inputs (unscaled t, bilinear resize), on tiny random-weight
configs of guided-diffusion's real classes.
"""

from __future__ import annotations

import json
import os
import sys
import types
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

import cli.distributed as dist
from cli.distributed import RayExecutor, connect, generate_on_ray, run_bench_on_ray
from cli.run import LocalExecutor, generate_to_dir
from tests.test_runs import tiny_registry, tiny_spec
from ugd_core import UgdError
from ugd_core import registry as registry_module

# ---------------------------------------------------------------------------------------- a stand-in for Ray


class _Died(Exception):
    """Stands for ray.exceptions.RayActorError (the worker process died)."""


class _TaskError(Exception):
    """Stands for ray.exceptions.RayTaskError (our code raised on the worker)."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause

    def as_instanceof_cause(self) -> BaseException:
        """As Ray's: an instance of both this class and the cause's, whose text is the worker's traceback."""
        cause = self.cause
        text = f"ray::GenerationWorker.run() (pid=1)\n  File \"worker.py\", line 1, in run\n{type(cause).__name__}: {cause}"
        dual = type(f"RayTaskError({type(cause).__name__})", (_TaskError, type(cause)), {"__str__": lambda self: text})
        return dual(cause)


class _Ref:
    def __init__(self, actor: "_Actor", method: str, args: tuple) -> None:
        self.actor, self.method, self.args = actor, method, args

    def result(self) -> Any:
        actor, fake = self.actor, self.actor.fake
        if self.method == "__ray_ready__":
            if actor.dead:
                raise _Died("actor is dead for good")
            return True
        actor.inflight -= 1
        fate = fake.dies(actor.index, self.args[0])
        if actor.dead or fate:
            actor.dead = actor.dead or fate == "forever"
            raise _Died("worker died")
        actor.done.append(self.args[0])
        try:
            return getattr(actor.obj, self.method)(*self.args)
        except Exception as exc:  # noqa: BLE001 - as Ray wraps an error raised by the actor's method
            raise _TaskError(exc) from None


class _Method:
    def __init__(self, actor: "_Actor", name: str) -> None:
        self.actor, self.name = actor, name

    def remote(self, *args: Any) -> _Ref:
        actor, fake = self.actor, self.actor.fake
        if self.name != "__ray_ready__":
            fake.submitted += 1
            if fake.submitted > 50:
                raise AssertionError("work handed out over and over: the retry limit is not applied")
            actor.inflight += 1
            actor.max_inflight = max(actor.max_inflight, actor.inflight)
        return _Ref(actor, self.name, args)


class _Actor:
    def __init__(self, fake: "_FakeRay", index: int, obj: Any) -> None:
        self.fake, self.index, self.obj = fake, index, obj
        self.inflight = self.max_inflight = 0
        self.dead = False
        self.done: list[Any] = []

    @property
    def run(self) -> _Method:
        return _Method(self, "run")

    @property
    def __ray_ready__(self) -> _Method:
        return _Method(self, "__ray_ready__")


class _ActorClass:
    def __init__(self, fake: "_FakeRay", cls: type) -> None:
        self.fake, self.cls = fake, cls

    def options(self, **kwargs: Any) -> "_ActorClass":
        self.fake.options = kwargs
        return self

    def remote(self, *args: Any) -> _Actor:
        self.fake.actor_args.append(args)
        actor = _Actor(self.fake, len(self.fake.actors), self.cls(*args))
        self.fake.actors.append(actor)
        return actor


class _FakeRay(types.ModuleType):
    """The part of the ``ray`` module cli/distributed.py uses, run in this process.

    ``lifo``: ``wait`` returns the newest pending result first (results arrive out of order).
    ``dies(actor_index, item)``: None, "once" (the worker dies and is restarted) or "forever".
    """

    def __init__(self, cpus: int = 4, gpus: int = 0, initialized: bool = False, lifo: bool = False, dies: Any = None) -> None:
        super().__init__("ray")
        self.exceptions = types.SimpleNamespace(RayActorError=_Died, RayTaskError=_TaskError)
        self.resources = {"CPU": float(cpus), **({"GPU": float(gpus)} if gpus else {})}
        self.initialized, self.lifo = initialized, lifo
        self.dies = dies or (lambda index, item: None)
        self.init_kwargs: dict[str, Any] | None = None
        self.init_error: Exception | None = None
        self.shutdowns, self.submitted = 0, 0
        self.killed: list[int] = []
        self.actors: list[_Actor] = []
        self.actor_args: list[tuple] = []
        self.options: dict[str, Any] | None = None

    def is_initialized(self) -> bool:
        return self.initialized

    def init(self, address: Any = None, **kwargs: Any) -> None:
        if self.init_error is not None:
            raise self.init_error
        self.init_kwargs = dict(kwargs, address=address)
        self.initialized = True

    def shutdown(self) -> None:
        self.shutdowns += 1
        self.initialized = False

    def cluster_resources(self) -> dict[str, float]:
        return dict(self.resources)

    def remote(self, cls: type) -> _ActorClass:
        return _ActorClass(self, cls)

    def put(self, obj: Any) -> Any:
        return obj

    def wait(self, refs: list[_Ref], num_returns: int = 1) -> tuple[list[_Ref], list[_Ref]]:
        ref = refs[-1] if self.lifo else refs[0]
        return [ref], [r for r in refs if r is not ref]

    def get(self, ref: _Ref, timeout: float | None = None) -> Any:
        return ref.result()

    def cancel(self, ref: _Ref) -> None:
        pass

    def kill(self, actor: _Actor) -> None:
        self.killed.append(actor.index)


@pytest.fixture
def one_thread():
    """Workers set the torch thread count of this process (the stand-in's actors run here): restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def fake_ray(monkeypatch):
    """``fake_ray(**kw)`` installs a _FakeRay as the ``ray`` module and returns it."""

    def install(**kwargs: Any) -> _FakeRay:
        fake = _FakeRay(**kwargs)
        monkeypatch.setitem(sys.modules, "ray", fake)
        return fake

    return install


@pytest.fixture
def reference(tmp_path, one_thread):
    """The in-process run of tiny_spec() at one torch thread (the count each Ray worker runs by default)."""
    out = tmp_path / "in-process"
    generate_to_dir(tiny_spec(), out, LocalExecutor(tiny_registry()))
    return out


def _same_files(out: Path, reference: Path) -> None:
    names = sorted(p.name for p in reference.iterdir())
    assert sorted(p.name for p in out.iterdir()) == names
    for name in names:
        if name.endswith(".png"):
            assert (out / name).read_bytes() == (reference / name).read_bytes(), name
        else:
            a, b = json.loads((out / name).read_text()), json.loads((reference / name).read_text())
            a["stats"].pop("seconds"), b["stats"].pop("seconds")
            assert a == b, name


def _executor(workers: int | None = 2, **kwargs: Any) -> RayExecutor:
    return RayExecutor("local", workers, registry_factory=tiny_registry, **kwargs)


SEEDS = [f"ugd-{s:06d}.png" for s in range(100, 106)]

# ---------------------------------------------------------------------------------------- splitting and merging


def test_results_arriving_out_of_order_are_written_as_the_in_process_run(fake_ray, reference, tmp_path):
    """docs/distributed.md, 'How the work is split': batches of consecutive seeds, the PNGs byte-identical to the
    in-process run's whichever worker drew them; generate_on_ray returns the paths in seed order."""
    fake = fake_ray(lifo=True)
    paths = generate_on_ray(tiny_spec(), tmp_path / "ray", registry_factory=tiny_registry, num_workers=2)
    assert [p.name for p, _ in paths] == SEEDS and [s.name for _, s in paths] == [n.replace(".png", ".json") for n in SEEDS]
    _same_files(tmp_path / "ray", reference)
    assert sorted(tuple(b) for a in fake.actors for b in a.done) == [(100, 101), (102, 103), (104, 105)]  # each batch sampled once


def test_each_worker_has_at_most_two_batches_queued_and_every_worker_gets_work(fake_ray, one_thread, tmp_path):
    """docs/distributed.md: a pool of actors, each with up to two batches queued so it never waits on the driver."""
    fake = fake_ray()
    generate_to_dir(tiny_spec(n=10), tmp_path, _executor(2))  # 5 batches: more than 2 workers x 2 queued
    assert len(fake.actors) == 2
    assert all(a.max_inflight <= 2 for a in fake.actors), [a.max_inflight for a in fake.actors]
    assert all(a.done for a in fake.actors), "a worker of the pool got no batch"
    assert sorted(s for a in fake.actors for b in a.done for s in b) == list(range(100, 110))


def test_progress_counts_images(fake_ray, one_thread, tmp_path):
    """docs/distributed.md: `progress(done, total)` counts images on Ray."""
    fake_ray()
    calls = []
    generate_to_dir(tiny_spec(), tmp_path, _executor(2), progress=lambda done, total: calls.append((done, total)))
    assert calls == [(2, 6), (4, 6), (6, 6)]


def test_workers_default_to_cluster_cpus_per_worker_never_more_than_batches(fake_ray, one_thread, tmp_path):
    """docs/distributed.md: workers default to cluster CPUs / num_cpus_per_worker, never more than there are batches."""
    fake = fake_ray(cpus=8)
    generate_to_dir(tiny_spec(n=4), tmp_path / "a", _executor(None))  # 2 batches on 8 CPUs
    assert len(fake.actors) == 2
    fake = fake_ray(cpus=8)
    generate_to_dir(tiny_spec(n=6), tmp_path / "b", _executor(None, cpus_per_worker=4))  # 3 batches, 4 CPUs each
    assert len(fake.actors) == 2
    assert dist._default_workers(_FakeRay(cpus=8, gpus=2), 1, 1.0, 5) == 2  # GPU workers: GPUs / gpus per worker


# ---------------------------------------------------------------------------------------- threads and GPUs


def _threads_recorded(out: Path) -> set[int]:
    return {json.loads(p.read_text())["torch_threads"] for p in out.glob("*.json")}


def test_a_worker_runs_cpus_per_worker_threads_or_the_specs(fake_ray, one_thread, tmp_path):
    """docs/distributed.md, 'Thread count': a worker runs `cpus_per_worker` threads, or the spec's `threads` when set;
    every record stores the count it was sampled at."""
    fake_ray()
    generate_to_dir(tiny_spec(n=4), tmp_path / "cpus", _executor(1, cpus_per_worker=2))
    assert _threads_recorded(tmp_path / "cpus") == {2}
    torch.set_num_threads(1)
    fake_ray()
    spec = tiny_spec(n=4)
    spec.threads = 3
    generate_to_dir(spec, tmp_path / "spec", _executor(1, cpus_per_worker=1))
    assert _threads_recorded(tmp_path / "spec") == {3}


class _StopWorker:
    """A worker that records what it was given and stops the run with a one-line error on its first batch."""

    def __init__(self, spec: Any, registry_factory: Any, threads: int) -> None:
        self.spec, self.threads = getattr(spec, "spec", spec), threads  # a CheckedSpec from the driver

    def run(self, seeds: list[int]) -> tuple[str, Any, list[str]]:
        return "error", "stopped by the test", []


def test_cuda_gives_each_worker_one_gpu_and_its_own_cuda_device(fake_ray, monkeypatch, tmp_path):
    """docs/distributed.md, 'GPU placement': --device cuda (or cuda:N) gives each worker one whole GPU, the :N index
    is replaced (Ray picks the GPU), workers default to the number of GPUs."""
    monkeypatch.setattr(dist, "GenerationWorker", _StopWorker)
    fake = fake_ray(cpus=16, gpus=2)
    spec = tiny_spec(n=10)
    spec.device = "cuda:1"
    with pytest.raises(UgdError, match="stopped by the test"):
        generate_to_dir(spec, tmp_path, _executor(None))
    assert fake.options["num_gpus"] == 1.0
    assert len(fake.actors) == 2  # 2 GPUs, 5 batches
    assert {a.obj.spec.device for a in fake.actors} == {"cuda"}
    fake = fake_ray(cpus=16, gpus=2)
    spec.device = "auto"  # auto on a cluster that has GPUs: the same
    with pytest.raises(UgdError, match="stopped by the test"):
        generate_to_dir(spec, tmp_path, _executor(None))
    assert fake.options["num_gpus"] == 1.0 and {a.obj.spec.device for a in fake.actors} == {"cuda"}


def test_cuda_on_a_cluster_without_gpus_is_an_error_before_anything_runs(fake_ray, monkeypatch, tmp_path):
    """docs/distributed.md: `--device cuda` on a cluster without GPUs is an error before anything runs."""
    monkeypatch.setattr(dist, "GenerationWorker", _StopWorker)
    fake = fake_ray(cpus=4)
    spec = tiny_spec(n=4)
    spec.device = "cuda"
    with pytest.raises(UgdError, match="no GPUs"):
        generate_to_dir(spec, tmp_path / "out", _executor(None))
    assert fake.actors == [] and not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------- failures


def test_a_worker_dead_for_good_hands_its_batch_to_the_others(fake_ray, one_thread, tmp_path):
    """docs/distributed.md, 'Failure behaviour': if a worker's restarts run out, the driver hands its batches to the
    remaining workers; every image is written exactly once, the same as in-process."""
    reference = tmp_path / "in-process"
    generate_to_dir(tiny_spec(n=4), reference, LocalExecutor(tiny_registry()))
    fake = fake_ray(dies=lambda index, item: "forever" if index == 0 else None)  # one batch each: [100, 101] dies
    written = []
    summary = generate_to_dir(tiny_spec(n=4), tmp_path / "ray", _executor(2), on_image=lambda p, s: written.append(p.name))
    assert sorted(written) == SEEDS[:4] and summary.written == 4
    assert fake.actors[0].done == [] and sorted(fake.actors[1].done) == [[100, 101], [102, 103]]
    _same_files(tmp_path / "ray", reference)


def test_a_batch_that_kills_its_worker_three_times_stops_the_run_naming_its_seeds(fake_ray, one_thread, tmp_path):
    """docs/distributed.md: a batch that kills its worker three times stops the run with an error naming its seeds
    and suggesting a smaller --batch-size."""
    fake_ray(dies=lambda index, item: "once" if item == [102, 103] else None)
    with pytest.raises(UgdError) as err:
        generate_to_dir(tiny_spec(), tmp_path, _executor(2))
    msg = str(err.value)
    assert "seeds 102..103" in msg and "3 times" in msg and "--batch-size" in msg and "\n" not in msg


def test_every_worker_dead_is_one_error(fake_ray, one_thread, tmp_path):
    """cli/distributed.py (module docstring, docs/distributed.md 'Failure behaviour'): when no worker is left to
    take the work, the run stops with a one-line UgdError pointing at the Ray logs."""
    fake_ray(dies=lambda index, item: "forever")
    with pytest.raises(UgdError, match="every Ray worker died"):
        generate_to_dir(tiny_spec(), tmp_path, _executor(1))


def test_actors_restart_and_retry_their_batches_three_times(fake_ray, one_thread, tmp_path):
    """docs/distributed.md: Ray restarts a dead actor (`max_restarts=3`) and retries the batches it held
    (`max_task_retries=3`)."""
    fake = fake_ray()
    generate_to_dir(tiny_spec(n=2), tmp_path, _executor(1))
    assert fake.options["max_restarts"] == 3 and fake.options["max_task_retries"] == 3
    assert fake.options["num_cpus"] == 1


def test_a_user_error_on_a_worker_is_the_same_one_line_error(fake_ray, monkeypatch, one_thread, tmp_path):
    """docs/distributed.md: a user error on a worker (a guide that cannot load its weights there) comes back as the
    same one-line error; nothing is written."""
    import cli.spec

    fake_ray()

    def no_weights(spec, registry):
        raise UgdError("weights for 'w.pt' not found on this node")

    monkeypatch.setattr(cli.spec, "build", no_weights)  # what the worker calls to build its models
    with pytest.raises(UgdError) as err:
        generate_to_dir(tiny_spec(), tmp_path / "out", _executor(2))
    assert str(err.value) == "weights for 'w.pt' not found on this node"
    assert not list((tmp_path / "out").glob("*.png"))


class _RefusingWorker(dist.GenerationWorker):
    """A real worker whose sampling refuses its input (a UgdError raised inside the Ray task)."""

    def run(self, seeds):
        raise UgdError("adm: class [1000] out of range; give an integer 0..999")


def test_a_user_error_raised_while_sampling_on_a_worker_is_the_same_one_line_error(fake_ray, monkeypatch, one_thread, tmp_path):
    """docs/distributed.md, 'Failure behaviour': a user error on a worker comes back as the same one-line error (not
    Ray's wrapped traceback)."""
    monkeypatch.setattr(dist, "GenerationWorker", _RefusingWorker)
    fake_ray()
    with pytest.raises(UgdError) as err:
        generate_to_dir(tiny_spec(), tmp_path, _executor(2))
    assert str(err.value) == "adm: class [1000] out of range; give an integer 0..999"


class _WarningWorker(dist.GenerationWorker):
    """A real worker whose every batch also reports a sampler warning."""

    def run(self, seeds):
        status, items, warns = super().run(seeds)
        return status, items, sorted(set(warns) | {"guidance skipped: non-finite gradient"})


def test_worker_warnings_are_reissued_once_on_the_driver(fake_ray, monkeypatch, one_thread, tmp_path):
    """docs/distributed.md, 'Failure behaviour': warnings raised by the sampler on workers are re-issued once on the
    driver as Python RuntimeWarnings."""
    monkeypatch.setattr(dist, "GenerationWorker", _WarningWorker)
    fake_ray()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        generate_to_dir(tiny_spec(), tmp_path, _executor(2))
    mine = [w for w in caught if "non-finite gradient" in str(w.message)]
    assert len(mine) == 1 and mine[0].category is RuntimeWarning


# ---------------------------------------------------------------------------------------- connecting


def test_local_starts_a_private_cluster_of_num_cpus(fake_ray):
    """docs/distributed.md: `address` None or 'local' starts a private local cluster of `num_cpus` CPUs (private: no
    dashboard, whose HTTP job API would let anyone on the machine submit work to it)."""
    for address in (None, "local"):
        fake = fake_ray()
        ray, started = connect(address, num_cpus=3)
        assert ray is fake and started
        assert fake.init_kwargs["num_cpus"] == 3 and fake.init_kwargs["address"] is None, address
        assert fake.init_kwargs["include_dashboard"] is False


def test_a_private_cluster_sends_no_usage_statistics_unless_the_user_asks(fake_ray, monkeypatch):
    """docs/distributed.md: the private local cluster runs with Ray's usage statistics off (RAY_USAGE_STATS_ENABLED=0)
    unless the user has set that variable; a user's own cluster is left as it is configured."""
    monkeypatch.delenv("RAY_USAGE_STATS_ENABLED", raising=False)
    fake_ray()
    connect("ray://head:10001")
    assert "RAY_USAGE_STATS_ENABLED" not in os.environ
    fake_ray()
    connect(None, num_cpus=1)
    assert os.environ["RAY_USAGE_STATS_ENABLED"] == "0"
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "1")
    fake_ray()
    connect("local", num_cpus=1)
    assert os.environ["RAY_USAGE_STATS_ENABLED"] == "1"


def test_an_address_is_passed_and_an_unreachable_one_is_one_line(fake_ray):
    """docs/distributed.md: anything else is a Ray address; a cluster that cannot be reached is a one-line UgdError
    saying how to start one (README.md: bad input is one line, exit 2)."""
    fake = fake_ray()
    connect("ray://head:10001")
    assert fake.init_kwargs["address"] == "ray://head:10001" and "num_cpus" not in fake.init_kwargs
    for exc in (ConnectionError("could not find any running Ray instance"), RuntimeError("timed out")):
        fake = fake_ray()
        fake.init_error = exc
        with pytest.raises(UgdError) as err:
            connect("auto")
        assert "'auto'" in str(err.value) and "ray start --head" in str(err.value) and "\n" not in str(err.value)


def test_workers_load_the_plugins_the_driver_loads(fake_ray, monkeypatch):
    """docs/plugins.md: UGD_LOAD_PLUGINS=a,b loads only those plugins; RayExecutor's docstring: workers and the driver
    use the same registry, so the selection travels to the workers' environment."""
    monkeypatch.setenv("UGD_LOAD_PLUGINS", "digits")
    fake = fake_ray()
    connect("local")
    assert fake.init_kwargs["runtime_env"] == {"env_vars": {"UGD_LOAD_PLUGINS": "digits"}}


def test_an_initialised_ray_is_reused_and_not_shut_down(fake_ray, one_thread, tmp_path):
    """docs/distributed.md: an initialised Ray is reused (connect: callers shut down only what they started); the
    run's own actors are shut down when it ends."""
    fake = fake_ray(initialized=True)
    assert connect("local") == (fake, False)
    generate_to_dir(tiny_spec(n=4), tmp_path / "a", _executor(2))
    assert fake.init_kwargs is None and fake.shutdowns == 0 and fake.initialized
    assert sorted(fake.killed) == [0, 1]
    fake = fake_ray()
    generate_to_dir(tiny_spec(n=4), tmp_path / "b", _executor(2))
    assert fake.init_kwargs is not None and fake.shutdowns == 1


def test_cli_ray_address_reaches_ray_and_worker_errors_exit_2(fake_ray, monkeypatch, one_thread, tmp_path):
    """docs/distributed.md: `ugd generate ... --ray auto` runs on the existing cluster at that address; a user error on
    a worker comes back as the same one-line error and exit status 2."""
    import cli.main as cli_main
    import cli.spec

    monkeypatch.setattr(registry_module, "_DEFAULT", tiny_registry())
    args = ["generate", "-b", "tiny", "-g", "pull:target=-0.4", "--steps", "8", "--seed", "100", "-n", "4",
            "--batch-size", "2", "--ray", "auto"]
    fake = fake_ray()
    result = CliRunner().invoke(cli_main.app, args + ["--out", str(tmp_path / "a")])
    assert result.exit_code == 0, result.output
    assert fake.init_kwargs["address"] == "auto" and len(list((tmp_path / "a").glob("ugd-*.png"))) == 4

    def no_weights(spec, registry):
        raise UgdError("weights for 'w.pt' not found on this node")

    monkeypatch.setattr(cli.spec, "build", no_weights)
    fake_ray()
    result = CliRunner().invoke(cli_main.app, args + ["--out", str(tmp_path / "b")])
    assert result.exit_code == 2 and "weights for 'w.pt' not found on this node" in result.output, result.output


# ---------------------------------------------------------------------------------------- benchmark cells


class _CountingSuite:
    """Four independent cells; summarize keeps the order it is given."""

    def cells(self) -> list[dict]:
        return [dict(task="t", method="m", seed=s) for s in range(4)]

    def run_cell(self, cell: dict) -> dict:
        return dict(cell, value=10 * cell["seed"])

    def summarize(self, results: list[dict], out_dir: Path) -> dict:
        return dict(markdown="", results=[r["seed"] for r in results])


def test_bench_cells_come_back_in_cells_order_and_cached_cells_need_no_cluster(fake_ray, one_thread, tmp_path):
    """cli/bench.py (BenchmarkSuite.summarize: results in cells() order); docs/distributed.md: `ugd bench --ray` reuses
    the cached result of an identical cell, so a rerun with everything cached computes nothing."""
    fake = fake_ray(lifo=True)
    first = run_bench_on_ray(_CountingSuite(), tmp_path, num_workers=2)
    assert first["results"] == [0, 1, 2, 3]
    assert sorted(c["seed"] for a in fake.actors for c in a.done) == [0, 1, 2, 3]
    fake = fake_ray()
    again = run_bench_on_ray(_CountingSuite(), tmp_path, num_workers=2)
    assert again["results"] == [0, 1, 2, 3]
    assert fake.init_kwargs is None and fake.actors == []  # nothing left to run: no cluster, no worker


# ---------------------------------------------------------------------------------------- ADM

SIZE = 16


def _adm():
    pytest.importorskip("guided_diffusion")
    import ugd_adm.backbone as backbone
    import ugd_adm.classifier as classifier
    import ugd_adm.configs as configs

    return backbone, classifier, configs


def _randomize(net: torch.nn.Module) -> None:
    """Random values for every weight: guided-diffusion zero-initialises its output convolutions (zero_module), so a
    freshly built network returns zeros, whatever its timestep, label or output half."""
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0.0, 0.05)


def _tiny_adm(release: str, seed: int = 0, **extra: Any):
    """A release's flags at 16x16 with 32 base channels (as ugd_plugins/adm/tests/test_adm.py)."""
    backbone, _, configs = _adm()
    flags = dict(configs.RELEASES[release].flags, image_size=SIZE, num_channels=32, channel_mult="1,2,2", **extra)
    if flags.get("num_head_channels", -1) != -1:
        flags["num_head_channels"] = 16
    torch.manual_seed(seed)
    net, diffusion = backbone.build_unet(configs.Resolved(f"tiny-{release}", "model", flags))
    _randomize(net)
    return backbone.AdmBackbone(net, backbone.adm_scheduler(**diffusion), name=f"tiny {release}")


def test_release_table_sizes_conditioning_and_schedules():
    """docs/backbones/adm.md, 'Checkpoints' table: each release's image size, conditioning and schedule."""
    _, _, configs = _adm()
    table = {  # config: (image size, class-conditional, schedule)
        "256-uncond": (256, False, "linear"), "256": (256, True, "linear"), "128": (128, True, "linear"),
        "64": (64, True, "cosine"), "512": (512, True, "linear"), "lsun": (256, False, "linear"),
        "lsun-nodropout": (256, False, "linear"),
    }
    for name, (size, cond, schedule) in table.items():
        kw, diffusion = configs.model_kwargs(configs.RELEASES[name].flags)
        assert (kw["image_size"], kw["class_cond"], diffusion) == (size, cond, dict(steps=1000, schedule=schedule)), name
    for size in (64, 128, 256, 512):
        assert configs.RELEASES[f"{size}-classifier"].flags["image_size"] == size


def test_release_64_flags_follow_the_readme():
    """docs/backbones/adm.md, 'Flags': `64` differs by --num_channels 192 --num_res_blocks 3
    --use_new_attention_order True --dropout 0.1 --noise_schedule cosine."""
    _, _, configs = _adm()
    kw, _ = configs.model_kwargs(configs.RELEASES["64"].flags)
    assert (kw["num_channels"], kw["num_res_blocks"], kw["use_new_attention_order"], kw["dropout"]) == (192, 3, True, 0.1)


def test_unknown_flags_in_a_json_config_are_refused():
    """docs/backbones/adm.md: a JSON config holds guided-diffusion's flag names; a misspelt flag is refused, naming
    it (create_model would otherwise drop it silently and build another network)."""
    _, _, configs = _adm()
    with pytest.raises(UgdError, match="unknown model flag.*num_channel\\b"):
        configs.model_kwargs(dict(num_channel=32))
    with pytest.raises(UgdError, match="unknown classifier flag.*classifier_widht"):
        configs.classifier_kwargs(dict(classifier_widht=32))


def test_a_classifier_release_is_not_a_backbone_and_back():
    """docs/backbones/adm.md: the NxN_classifier.pt files are for the `classifier` guide, the others are backbones."""
    _, _, configs = _adm()
    with pytest.raises(UgdError, match="'256-classifier' is a classifier config, not a model"):
        configs.resolve("256-classifier", "mine.pt", "model")
    with pytest.raises(UgdError, match="'256' is a model config, not a classifier"):
        configs.resolve("", "256x256_diffusion.pt", "classifier")


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_scheduler_matches_guided_diffusion_at_any_step_count(schedule):
    """docs/backbones/adm.md, 'How it runs': linear betas 1e-4..0.02 (x1000/steps) or squaredcos_cap_v2, equal to
    guided-diffusion's get_named_beta_schedule."""
    backbone, _, _ = _adm()
    import numpy as np
    from guided_diffusion.gaussian_diffusion import get_named_beta_schedule

    ref = np.cumprod(1 - get_named_beta_schedule(schedule, 250))
    ours = backbone.adm_scheduler(250, schedule).alphas_cumprod.double().numpy()
    assert np.abs(ours - ref).max() < 1e-6
    with pytest.raises(UgdError, match="noise_schedule='sigmoid' is not one of linear, cosine"):
        backbone.adm_scheduler(1000, "sigmoid")


def test_eps_is_the_epsilon_half_of_the_output_at_the_unscaled_timestep():
    """docs/backbones/adm.md, 'How it runs': learned-variance outputs (6 channels) keep their first 3, and the UNet
    sees the training timestep t unscaled (rescale_timesteps=False); class-conditional releases get the label."""
    bb = _tiny_adm("256-uncond")
    z, t = torch.randn(2, 3, SIZE, SIZE), torch.tensor([700, 15])
    with torch.no_grad():
        raw = bb.unet(z, t)
        assert raw.shape[1] == 6 and not torch.allclose(raw[:, :3], raw[:, 3:])
        assert not torch.allclose(raw, bb.unet(z, t // 2))  # the output depends on t
        torch.testing.assert_close(bb.eps(z, t, None), raw[:, :3], rtol=1e-5, atol=1e-6)
    cond = _tiny_adm("256")
    y = cond.condition(["5", "9"], None, 2, 1.0)
    with torch.no_grad():
        raw = cond.unet(z, t, y=torch.tensor([5, 9]))
        assert not torch.allclose(raw, cond.unet(z, t, y=torch.tensor([9, 5])))  # the output depends on the label
        torch.testing.assert_close(cond.eps(z, t, y), raw[:, :3], rtol=1e-5, atol=1e-6)


def test_class_labels_one_or_one_per_image_in_range():
    """docs/backbones/adm.md: class-conditional releases take the class index as the prompt, one index or one per
    image; anything else is a one-line error."""
    bb = _tiny_adm("256")
    assert bb.condition(["3", "7"], None, 2, 1.0).tolist() == [3, 7]
    for bad, match in ((-1, "out of range"), ([1, 2, 3], "3 class labels for 2 images"), ("", "class-conditional")):
        with pytest.raises(UgdError, match=match):
            bb.condition(bad, None, 2, 1.0)


def test_adm_eps_is_deterministic_for_a_dropout_release():
    """README.md / docs/distributed.md: the same seed gives the same pixels; a release trained with dropout (`lsun`,
    `64`) runs its network frozen (eval mode), so the denoiser is a function of its input."""
    from ugd_core import SamplerConfig, sample

    bb = _tiny_adm("lsun")
    z, t = torch.randn(2, 3, SIZE, SIZE), torch.tensor([500, 20])
    with torch.no_grad():
        torch.testing.assert_close(bb.eps(z, t, None), bb.eps(z, t, None), rtol=0, atol=0)
    a = sample(bb, None, SamplerConfig(num_steps=2), num_images=1, seed=3).images
    b = sample(bb, None, SamplerConfig(num_steps=2), num_images=1, seed=3).images
    assert torch.equal(a, b)


def test_a_config_that_builds_no_network_is_one_line(tmp_path):
    """ugd_adm.backbone.build_unet / classifier.build_classifier: a config that does not build (an image size without
    channel multipliers) is a one-line UgdError naming it."""
    backbone, classifier, configs = _adm()
    with pytest.raises(UgdError, match="config 'odd' does not build a UNet"):
        backbone.build_unet(configs.Resolved("odd", "model", dict(image_size=48, num_channels=32)))
    with pytest.raises(UgdError, match="classifier config 'odd' does not build"):
        classifier.build_classifier(configs.Resolved("odd", "classifier", dict(image_size=48, classifier_width=32)))


def test_a_custom_classifier_config_builds_the_release_network_it_states():
    """docs/backbones/adm.md: classifier JSON configs may also set classifier_channel_mult and
    classifier_num_head_channels, which the releases fix; stating the release's values builds the release's network
    (guided-diffusion script_util.create_classifier: attention at image_size // resolution)."""
    _, classifier, configs = _adm()
    from guided_diffusion import script_util

    flags = dict(image_size=64, classifier_width=64, classifier_depth=1)
    release = script_util.create_classifier(64, False, 64, 1, "32,16,8", True, True, "attention")
    custom, _ = classifier.build_classifier(configs.Resolved("c", "classifier", dict(flags, classifier_channel_mult="1,2,3,4")))
    shapes = lambda net: {k: tuple(v.shape) for k, v in net.state_dict().items()}  # noqa: E731
    assert shapes(custom) == shapes(release)


def _tiny_classifier():
    _, classifier, configs = _adm()
    torch.manual_seed(0)
    flags = dict(image_size=SIZE, classifier_width=32, classifier_depth=1, classifier_channel_mult="1,2,2",
                 classifier_num_head_channels=16)
    net, size = classifier.build_classifier(configs.Resolved("tiny", "classifier", flags))
    _randomize(net)
    return net, size


def test_classifier_sees_the_training_timestep_and_resized_images():
    """docs/backbones/adm.md, 'Classifier guidance': the classifier is called on z_t with the training timestep t
    (unscaled); images of another size are resized (bilinear, antialiased) before it; loss -log p(y | z_t, t)."""
    _, classifier, _ = _adm()
    import torch.nn.functional as F

    from ugd_core.guidance import guide_loss

    net, size = _tiny_classifier()
    net.eval().requires_grad_(False)
    guide = classifier.make_classifier_guide(net, size, 7)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    t = torch.tensor([900, 30])
    small = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    expected = -torch.log_softmax(net(small, t), dim=1)[:, 7]
    torch.testing.assert_close(guide_loss(guide, x, t), expected, rtol=1e-5, atol=1e-5)


def test_classifier_label_must_be_an_imagenet_class_index():
    """The `classifier` guide's `label`: an ImageNet class index 0..999 (plugin.py Param; docs/backbones/adm.md)."""
    _, classifier, _ = _adm()
    for bad in (-1, True, 1000):
        with pytest.raises(UgdError, match="is not an ImageNet class"):
            classifier.classifier_guide(bad)


def test_a_loaded_classifier_is_frozen(tmp_path):
    """ugd_adm.classifier.load_classifier: the release's classifier, frozen (eval mode, no parameter gradients)."""
    _, classifier, _ = _adm()
    net, _ = _tiny_classifier()
    ckpt, cfg = tmp_path / "c.pt", tmp_path / "c.json"
    torch.save(net.state_dict(), ckpt)
    cfg.write_text(json.dumps(dict(image_size=SIZE, classifier_width=32, classifier_depth=1, classifier_channel_mult="1,2,2",
                                   classifier_num_head_channels=16)))
    loaded, size = classifier.load_classifier(str(ckpt), str(cfg))
    assert size == SIZE and not loaded.training
    assert not any(p.requires_grad for p in loaded.parameters())


def test_classifier_guidance_presets_are_the_documented_settings():
    """docs/backbones/adm.md: `classifier-guidance` is s=10, 250 steps, eta=1 on z_t with sqrt(1-a_t);
    `classifier-guidance-fast` uses 50 steps at the same scale."""
    pytest.importorskip("guided_diffusion")
    from ugd_adm.plugin import PRESETS

    full, fast = PRESETS["classifier-guidance"][1], PRESETS["classifier-guidance-fast"][1]
    assert full == dict(num_steps=250, eta=1.0, cfg_scale=1.0, forward_strength=10.0, forward_schedule="sqrt_1m_abar",
                        forward_input="zt")
    assert fast == dict(full, num_steps=50)


# ---------------------------------------------------------------------- a bug the audit found, fixed


def test_a_worker_dead_for_good_with_two_batches_queued_hands_both_to_the_others(fake_ray, one_thread, tmp_path):  # noqa: F811
    """docs/distributed.md, 'Failure behaviour': if a worker's restarts run out, the driver hands those batches (all
    it held: each worker has up to two queued) to the remaining workers; every image is written exactly once.

    cli/distributed.py _Pool.run: the first failed batch retires the dead worker (`self.load.pop(idx)`), and its second
    queued batch then fails at `self.load[idx] -= 1` with KeyError instead of being handed on."""
    reference = tmp_path / "in-process"
    generate_to_dir(tiny_spec(), reference, LocalExecutor(tiny_registry()))
    # 3 batches on 2 workers: worker 0 holds [100, 101] and [104, 105], then dies for good
    fake = fake_ray(dies=lambda index, item: "forever" if index == 0 else None)
    written = []
    summary = generate_to_dir(tiny_spec(), tmp_path / "ray", _executor(2), on_image=lambda p, s: written.append(p.name))
    assert sorted(written) == SEEDS and summary.written == 6
    assert fake.actors[0].done == [] and len(fake.actors[1].done) == 3
    _same_files(tmp_path / "ray", reference)
