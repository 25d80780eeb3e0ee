"""Ray execution (optional: ``pip install 'ugd[ray]'``): :class:`RayExecutor` and benchmark cells on Ray.

:class:`RayExecutor` is the :class:`cli.run.Executor` that :func:`cli.run.generate_to_dir`
uses for ``--ray``; everything else about a run (validation, what to write, resume,
the contact sheet) is the same code as in-process. The unit of work is one batch of
consecutive seeds (:meth:`RunSpec.batches`), exactly as in-process: a pool of Ray
actors each builds the models once (:func:`cli.spec.build`) and samples batches with
:func:`cli.run.generate_batch`; results stream back to the driver (``ray.wait``),
which alone writes files. Same batches, same torch thread count and same weights
give byte-identical PNGs, whichever worker drew them.

Failures (see docs/distributed.md): actors restart when their process dies
(``max_restarts``) and the batch they held is retried (``max_task_retries``); if
retries run out the driver hands the batch to another actor, up to ``MAX_ATTEMPTS``
times per batch. Each image is still written once.

Ray is imported lazily: without it every other part of ugd works, and asking
for Ray is a :class:`UgdError` with the install command.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import warnings
from collections import deque
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from ugd_core.errors import UgdError
from ugd_core.registry import Registry, get_registry

from .bench import BenchmarkSuite, cell_key, load_cell, save_cell
from .progress import progress_bar

RAY_HINT = "--ray needs Ray: pip install 'ugd[ray]'"
MAX_ATTEMPTS = 3  # times the driver hands one work item out before giving up
IN_FLIGHT_PER_WORKER = 2  # queued items per actor, so a worker never waits on the driver

RegistryFactory = Callable[[], Registry]


# -- connecting ------------------------------------------------------------------------------


def require_ray() -> Any:
    """The ``ray`` module, or a UgdError with the install command."""
    try:
        import ray
    except ImportError:
        raise UgdError(RAY_HINT) from None
    return ray


def connect(address: str | None = None, num_cpus: int | None = None, num_gpus: int | None = None) -> tuple[Any, bool]:
    """Connect to Ray: ``None``/``'local'`` starts a private local cluster, anything else is an address
    (``'auto'``, ``'ray://host:10001'``, ``'host:6379'``). Returns ``(ray, started)``; an already
    initialised Ray is reused (``started`` False), so callers shut down only what they started.
    """
    ray = require_ray()
    if ray.is_initialized():
        return ray, False
    kwargs: dict[str, Any] = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    plugins = os.environ.get("UGD_LOAD_PLUGINS")
    if plugins is not None:
        kwargs["runtime_env"] = {"env_vars": {"UGD_LOAD_PLUGINS": plugins}}
    try:
        if address in (None, "", "local"):
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # a private cluster reports nothing, unless the user says
            ray.init(num_cpus=num_cpus or os.cpu_count() or 1, num_gpus=num_gpus, **kwargs)
        else:
            ray.init(address=address, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UgdError(
            f"cannot connect to Ray at {address!r} ({first}); start a cluster with `ray start --head` or pass --ray local"
        ) from None
    return ray, True


def _ray_errors(ray: Any) -> tuple[type, ...]:
    """Exceptions meaning 'the worker died', as opposed to an error raised by our code."""
    ex = ray.exceptions
    names = ("RayActorError", "ActorDiedError", "ActorUnavailableError", "WorkerCrashedError", "NodeDiedError", "OwnerDiedError")
    return tuple(getattr(ex, n) for n in names if hasattr(ex, n))


def _reraise_task_error(ray: Any, exc: Exception) -> None:
    """Turn a Ray-wrapped UgdError back into a UgdError; re-raise anything else as its cause."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, UgdError):
        raise UgdError(str(cause)) from None
    if isinstance(exc, ray.exceptions.RayTaskError):
        raise exc.as_instanceof_cause() from None
    raise exc


def _placement(spec_device: str, num_gpus_per_worker: float, ray: Any) -> tuple[float, str]:
    """GPUs per worker and the device string a worker uses (Ray sets CUDA_VISIBLE_DEVICES per actor)."""
    has_gpus = float(ray.cluster_resources().get("GPU", 0)) > 0
    wants_cuda = spec_device.startswith("cuda") or (spec_device == "auto" and has_gpus)
    if wants_cuda and not has_gpus:
        raise UgdError(f"device {spec_device!r} requested but the Ray cluster has no GPUs; use --device cpu or add GPU nodes")
    gpus = num_gpus_per_worker or (1.0 if wants_cuda else 0.0)
    device = "cuda" if wants_cuda else ("cpu" if spec_device == "auto" else spec_device)
    return gpus, device


def _default_workers(ray: Any, cpus: float, gpus: float, items: int) -> int:
    res = ray.cluster_resources()
    n = int(float(res.get("GPU", 0)) // gpus) if gpus else int(float(res.get("CPU", 1)) // max(cpus, 1e-9))
    return max(1, min(n, items))


# -- workers ---------------------------------------------------------------------------------


class GenerationWorker:
    """A Ray actor body: builds the models of a spec (a CheckedSpec from the driver, or a RunSpec) once,
    then samples batches of seeds."""

    def __init__(self, spec: Any, registry_factory: RegistryFactory | None, threads: int) -> None:
        import torch

        from .spec import CheckedSpec, build

        torch.set_num_threads(max(1, threads))
        self.spec = spec.spec if isinstance(spec, CheckedSpec) else spec
        self.registry = registry_factory() if registry_factory is not None else get_registry()
        self.error: str | None = None
        try:
            self.built = build(spec, self.registry)
        except UgdError as exc:  # reported with the first batch, as a UgdError on the driver
            self.error = str(exc)

    def run(self, seeds: list[int]) -> tuple[str, Any, list[str]]:
        """('ok', images, warnings) or ('error', message, [])."""
        from .run import generate_batch

        if self.error is not None:
            return "error", self.error, []
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", RuntimeWarning)
            items = generate_batch(self.spec, seeds, self.built, self.registry)
        return "ok", items, sorted({str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)})

    def pid(self) -> int:
        """The worker's process id (tests kill it)."""
        return os.getpid()


class _Pool:
    """Actors with bounded in-flight work, streaming results, re-dispatching items whose worker died."""

    def __init__(self, ray: Any, actors: list[Any], method: str, describe: Callable[[Any], str]) -> None:
        self.ray, self.actors, self.method, self.describe = ray, list(actors), method, describe
        self.load = {i: 0 for i in range(len(actors))}
        self.inflight: dict[Any, tuple[int, Any, int]] = {}
        self.dead = _ray_errors(ray)

    def run(self, items: list[Any], on_result: Callable[[Any, Any], None]) -> None:
        queue: deque[tuple[Any, int]] = deque((it, 1) for it in items)
        try:
            while queue or self.inflight:
                self._fill(queue)
                ready, _ = self.ray.wait(list(self.inflight), num_returns=1)
                ref = ready[0]
                idx, item, attempt = self.inflight.pop(ref)
                if idx in self.load:  # a retired worker's other queued batches come back failed, to be handed on
                    self.load[idx] -= 1
                try:
                    result = self.ray.get(ref)
                except self.dead as exc:
                    if attempt >= MAX_ATTEMPTS:
                        raise UgdError(
                            f"work item {self.describe(item)} failed {attempt} times because its worker died "
                            f"({type(exc).__name__}); check worker memory (smaller --batch-size) and the Ray logs"
                        ) from None
                    self._retire_if_dead(idx)
                    queue.appendleft((item, attempt + 1))
                    continue
                except self.ray.exceptions.RayTaskError as exc:
                    _reraise_task_error(self.ray, exc)
                on_result(item, result)
        finally:
            for ref in list(self.inflight):
                try:
                    self.ray.cancel(ref)
                except Exception:
                    pass
            self.inflight.clear()

    def _fill(self, queue: deque[tuple[Any, int]]) -> None:
        if not self.load:
            raise UgdError("every Ray worker died and could not be restarted; check the Ray logs (`ray logs`)")
        while queue:
            idx = min(self.load, key=lambda i: self.load[i])
            if self.load[idx] >= IN_FLIGHT_PER_WORKER:
                return
            item, attempt = queue.popleft()
            ref = getattr(self.actors[idx], self.method).remote(item)
            self.inflight[ref] = (idx, item, attempt)
            self.load[idx] += 1

    def _retire_if_dead(self, idx: int) -> None:
        """Stop sending work to an actor that is dead for good (its restarts are used up)."""
        if idx not in self.load:
            return
        try:
            self.ray.get(self.actors[idx].__ray_ready__.remote(), timeout=60)
        except Exception:
            self.load.pop(idx, None)

    def close(self) -> None:
        for actor in self.actors:
            try:
                self.ray.kill(actor)
            except Exception:
                pass


# -- generation ------------------------------------------------------------------------------


class RayExecutor:
    """An :class:`cli.run.Executor` that samples batches on a Ray cluster.

    ``address``: None/``'local'`` starts a private local cluster (of ``num_cpus``), else a Ray
    address (``'auto'``, ``'ray://host:10001'``, ``'host:6379'``); an already initialised Ray
    is reused. ``workers``: actors to start (default: cluster CPUs / ``cpus_per_worker``, or
    GPUs / ``gpus_per_worker``, never more than batches). Each worker runs
    ``cpus_per_worker`` torch threads (or the spec's ``threads``). ``registry_factory``: a
    picklable zero-argument callable each worker (and the driver, for validation) calls to
    get its registry; default the installed plugins. Progress units are images. Warnings
    raised by the sampler on workers are re-issued once on the driver as RuntimeWarnings.
    """

    def __init__(
        self,
        address: str | None = None,
        workers: int | None = None,
        cpus_per_worker: float = 1,
        gpus_per_worker: float = 0,
        *,
        registry_factory: RegistryFactory | None = None,
        num_cpus: int | None = None,
        max_restarts: int = 3,
    ) -> None:
        self.address, self.workers = address, workers
        self.cpus_per_worker, self.gpus_per_worker = cpus_per_worker, gpus_per_worker
        self.registry_factory, self.num_cpus, self.max_restarts = registry_factory, num_cpus, max_restarts
        self._registry: Registry | None = None

    def registry(self) -> Registry:
        """The driver's registry: ``registry_factory()`` or the installed plugins."""
        if self._registry is None:
            self._registry = self.registry_factory() if self.registry_factory is not None else get_registry()
        return self._registry

    def check(self, spec: Any) -> None:
        """Ray must be installed (the device is checked against the cluster once connected)."""
        require_ray()

    def run(self, checked: Any, batches: list[list[int]], on_batch: Callable[[list[Any]], None], progress: Callable[[int, int], None]) -> None:
        """Start the actors (each builds the validated spec's models once), stream the batches through
        them, shut down what was started."""
        spec = checked.spec
        ray, started = connect(self.address, num_cpus=self.num_cpus)
        pool = None
        try:
            gpus, device = _placement(spec.device, self.gpus_per_worker, ray)
            worker_spec = checked if device == spec.device else replace(checked, spec=replace(spec, device=device))
            n = self.workers or _default_workers(ray, self.cpus_per_worker, gpus, len(batches))
            Actor = ray.remote(GenerationWorker).options(
                num_cpus=self.cpus_per_worker, num_gpus=gpus, max_restarts=self.max_restarts, max_task_retries=self.max_restarts
            )
            threads = spec.threads or int(max(1, self.cpus_per_worker))
            actors = [Actor.remote(worker_spec, self.registry_factory, threads) for _ in range(n)]
            pool = _Pool(ray, actors, "run", lambda s: f"seeds {s[0]}..{s[-1]}")
            total, done, seen = sum(len(b) for b in batches), [0], set()

            def on_result(batch: list[int], result: tuple[str, Any, list[str]]) -> None:
                status, payload, warns = result
                if status == "error":
                    raise UgdError(payload)
                for w in warns:
                    if w not in seen:
                        warnings.warn(w, RuntimeWarning, stacklevel=2)
                    seen.add(w)
                on_batch(payload)
                done[0] += len(batch)
                progress(done[0], total)

            pool.run(batches, on_result)
        finally:
            if pool is not None:
                pool.close()
            if started:
                ray.shutdown()


def generate_on_ray(
    spec: Any,
    out_dir: Path | str,
    address: str | None = None,
    overwrite: bool = False,
    console: Any = None,
    num_workers: int | None = None,
    num_cpus_per_worker: float = 1,
    num_gpus_per_worker: float = 0,
    *,
    resume: bool = False,
    registry_factory: RegistryFactory | None = None,
    num_cpus: int | None = None,
    max_restarts: int = 3,
    on_item: Callable[[Path, Path], None] | None = None,
) -> list[tuple[Path, Path]]:
    """:func:`cli.run.generate_to_dir` with a :class:`RayExecutor`; returns the (png, json) paths
    written, in seed order. ``console``: a rich Console for a progress bar (None: quiet)."""
    from .progress import tracking
    from .run import generate_to_dir

    executor = RayExecutor(
        address, num_workers, num_cpus_per_worker, num_gpus_per_worker,
        registry_factory=registry_factory, num_cpus=num_cpus, max_restarts=max_restarts,
    )
    written: list[tuple[Path, Path]] = []

    def keep(png: Path, side: Path) -> None:
        written.append((png, side))
        if on_item is not None:
            on_item(png, side)

    with tracking(console, "sampling on Ray") as update:
        generate_to_dir(spec, out_dir, executor, overwrite=overwrite, resume=resume, progress=update, on_image=keep)
    return sorted(written)



# -- benchmarks ------------------------------------------------------------------------------


def build_suite(name: str, params: dict[str, Any]) -> BenchmarkSuite:
    """A benchmark suite from the installed plugins (what Ray workers call to rebuild one)."""
    return get_registry().build("benchmark", name, params)


class CellWorker:
    """A Ray actor body holding one benchmark suite; runs its cells."""

    def __init__(self, suite: BenchmarkSuite | None, suite_factory: Callable[[], BenchmarkSuite] | None, threads: int) -> None:
        import torch

        torch.set_num_threads(max(1, threads))
        self.suite = suite_factory() if suite_factory is not None else suite

    def run(self, cell: dict[str, Any]) -> dict[str, Any]:
        """One cell's result dict."""
        return self.suite.run_cell(cell)


def run_bench_on_ray(
    suite: BenchmarkSuite,
    out_dir: Path | str,
    address: str | None = None,
    *,
    suite_factory: Callable[[], BenchmarkSuite] | None = None,
    num_workers: int | None = None,
    num_cpus_per_worker: float = 1,
    num_gpus_per_worker: float = 0,
    console: Any = None,
    resume: bool = True,
    num_cpus: int | None = None,
    max_restarts: int = 3,
) -> dict[str, Any]:
    """Run ``suite.cells()`` as Ray work, then ``suite.summarize`` on the driver; returns its dict.

    Workers get the suite pickled, or call ``suite_factory()`` (picklable, e.g.
    ``functools.partial(build_suite, name, params)``) so models load on the worker.
    Each cell's result is also written to ``out_dir/cells/`` as it arrives (the cache
    of :mod:`cli.bench`); with ``resume`` (the default, as in-process) cached
    results of identical cells are reused instead of rerun.
    """
    ray = require_ray()
    out = Path(out_dir)
    cache = out / "cells"
    cells = list(suite.cells())
    results: dict[int, dict[str, Any]] = {}
    if resume:
        for i, cell in enumerate(cells):
            cached = load_cell(cache, cell)
            if cached is not None:
                results[i] = cached
    todo = [i for i in range(len(cells)) if i not in results]
    if todo:
        ray, started = connect(address, num_cpus=num_cpus)
        pool = None
        try:
            gpus = float(num_gpus_per_worker)
            n = num_workers or _default_workers(ray, num_cpus_per_worker, gpus, len(todo))
            Actor = ray.remote(CellWorker).options(
                num_cpus=num_cpus_per_worker, num_gpus=gpus, max_restarts=max_restarts, max_task_retries=max_restarts
            )
            suite_ref = None if suite_factory is not None else ray.put(suite)
            actors = [Actor.remote(suite_ref, suite_factory, int(max(1, num_cpus_per_worker))) for _ in range(n)]
            pool = _Pool(ray, actors, "run", lambda c: json.dumps(c, default=str))
            cache.mkdir(parents=True, exist_ok=True)
            index = {cell_key(cells[i]): i for i in todo}
            with progress_bar(console) as progress:
                task = progress.add_task(f"benchmark cells on {n} Ray worker{'s' * (n > 1)}", total=len(todo))

                def on_result(cell: dict[str, Any], result: dict[str, Any]) -> None:
                    results[index[cell_key(cell)]] = result
                    save_cell(cache, cell, result)
                    progress.advance(task)

                pool.run([cells[i] for i in todo], on_result)
        finally:
            if pool is not None:
                pool.close()
            if started:
                ray.shutdown()
    return suite.summarize([results[i] for i in range(len(cells))], out)


def suite_factory_for(name: str, params: dict[str, Any]) -> Callable[[], BenchmarkSuite]:
    """A picklable factory that rebuilds the named suite from a worker's installed plugins."""
    return functools.partial(build_suite, name, dict(params))
