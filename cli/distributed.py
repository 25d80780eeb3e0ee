"""Run generation and benchmarks on a Ray cluster (optional: ``pip install 'ugd[ray]'``).

The unit of work is the same as in-process: one batch of consecutive seeds
(:meth:`RunSpec.batches`). A pool of Ray actors each builds the models once
(:func:`cli.run.build`) and samples batches with
:func:`cli.run.generate_batch`; results stream back to the driver
(``ray.wait``), which alone writes files, with :func:`cli.run.save_image`.
Every image depends only on its own seed, so the PNGs are byte-identical to the
in-process run's, whichever worker drew them (given the same torch thread
count and weights).

Resume and failure behaviour (see docs/distributed.md):

- An item is complete iff its PNG exists (``save_image`` renames the PNG into
  place last). :func:`plan_outputs` decides what to write: without ``overwrite``
  or ``resume`` any existing output is an error (nothing is run); with
  ``resume`` complete items whose record matches this spec are skipped, a
  complete item of a *different* spec is an error, and a half-written item (a
  sidecar without its PNG) is written again. A complete item is never rewritten
  unless ``overwrite``.
- Actors restart when their process dies (``max_restarts``) and the batch they
  held is retried (``max_task_retries``); if retries run out the driver hands
  the batch to another actor, up to ``MAX_ATTEMPTS`` times per batch.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from .bench import cell_key, load_cell, save_cell
from ugd_core.errors import UgdError
from ugd_core.registry import Registry, get_registry

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


# -- what to write (shared by the in-process and the Ray paths) -------------------------------


@dataclass
class OutputPlan:
    """Which batches to sample and which seeds to write."""

    batches: list[list[int]]
    write: list[int]
    skipped: list[int] = field(default_factory=list)
    partial: list[int] = field(default_factory=list)  # sidecar without PNG (an interrupted write): replaced


def spec_identity(spec: Any, registry: Registry | None = None) -> dict[str, Any]:
    """What an image record must match to count as 'made by this spec' (seed and batch aside)."""
    from .run import resolve_config

    config, _ = resolve_config(spec, registry or get_registry())
    return json.loads(
        json.dumps(
            dict(
                backbone=spec.backbone,
                guides=list(spec.guides),
                sampler=config.to_dict(),
                prompt=spec.prompt,
                negative_prompt=spec.negative_prompt,
            ),
            sort_keys=True,
        )
    )


def record_identity(record: dict[str, Any]) -> dict[str, Any]:
    """The :func:`spec_identity` fields of an image record."""
    return json.loads(
        json.dumps(
            dict(
                backbone=record.get("backbone", {}).get("spec"),
                guides=[g.get("spec") for g in record.get("guides", [])],
                sampler=record.get("sampler"),
                prompt=record.get("prompt"),
                negative_prompt=record.get("negative_prompt"),
            ),
            sort_keys=True,
        )
    )


def plan_outputs(
    spec: Any,
    out_dir: Path,
    seeds: Iterable[int] | None = None,
    overwrite: bool = False,
    resume: bool = False,
    registry: Registry | None = None,
) -> OutputPlan:
    """Decide what a run writes into ``out_dir``, checking everything before any work.

    - neither flag: any existing output file is a UgdError (the historical behaviour);
    - ``overwrite``: everything is sampled and replaced;
    - ``resume``: complete items (PNG present) of this very spec are skipped; a complete item
      of another spec is a UgdError; a sidecar left without its PNG is written again.
    """
    from .run import check_outputs_free, output_paths, read_image_record

    if overwrite and resume:
        raise UgdError("--overwrite and --resume contradict each other; --resume keeps existing images, --overwrite replaces them")
    wanted = list(spec.seeds() if seeds is None else seeds)
    write, skipped, partial = list(wanted), [], []
    if resume:
        identity = None
        write = []
        for seed, (png, side) in zip(wanted, output_paths(out_dir, wanted)):
            if not png.exists():
                write.append(seed)
                if side.exists():
                    partial.append(seed)
                continue
            identity = identity if identity is not None else spec_identity(spec, registry)
            record = read_image_record(side if side.exists() else png)
            mine = record_identity(record)
            if mine != identity or record.get("seed") != seed:
                diff = sorted(k for k in identity if identity[k] != mine.get(k)) or ["seed"]
                raise UgdError(
                    f"{png} was made by a different run spec (differs in {', '.join(diff)}); "
                    "--resume only completes the same command: choose another --out, or pass --overwrite"
                )
            skipped.append(seed)
    elif not overwrite:
        check_outputs_free(out_dir, wanted, overwrite=False)
    todo = set(write)
    batches = [b for b in spec.batches() if todo.intersection(b)]
    return OutputPlan(batches, write, skipped, partial)


def validate_spec(spec: Any, registry: Registry | None = None) -> None:
    """Check names, parameters and sampler settings of a RunSpec without building any model.

    Run on the driver before a cluster is started, so a typo costs no worker start-up.
    """
    from ugd_core.params import parse_spec, resolve_params
    from .run import DEFAULT_BACKBONE, _weight, build, resolve_config

    reg = registry or get_registry()
    bname, bparams = parse_spec(spec.backbone)
    if bname not in reg.entries["backbone"] and bname == DEFAULT_BACKBONE:
        build(spec, reg)  # raises the install hint for the default backbone
    resolve_params(bname, reg.get("backbone", bname).params, bparams)
    for text in spec.guides:
        gname, gparams = parse_spec(text)
        _weight(gparams.pop("weight", "1.0"), gname)
        resolve_params(gname, reg.get("guide", gname).params, gparams)
    resolve_config(spec, reg)


def save_planned(item: Any, out_dir: Path, plan: OutputPlan, overwrite: bool) -> tuple[Path, Path]:
    """Write one item of the plan; a complete (PNG) item is never replaced unless ``overwrite``."""
    from .run import output_paths, save_image

    seed = item.record["seed"]
    png, _ = output_paths(out_dir, [seed])[0]
    if not overwrite and png.exists():
        raise UgdError(f"{png} appeared while this run was writing; is another run using the same --out?")
    return save_image(item, out_dir, overwrite=overwrite or seed in plan.partial)


# -- workers ---------------------------------------------------------------------------------


class GenerationWorker:
    """A Ray actor body: builds the models of a RunSpec once, then samples batches of seeds."""

    def __init__(self, spec: Any, registry_factory: RegistryFactory | None, threads: int) -> None:
        import torch

        from .run import build

        torch.set_num_threads(max(1, threads))
        self.spec = spec
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


def _progress(console: Any) -> Any:
    """A rich progress bar on ``console``; disabled (quiet) when it is None."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=console is None,
    )


# -- generation ------------------------------------------------------------------------------


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
    seeds: Iterable[int] | None = None,
    registry_factory: RegistryFactory | None = None,
    num_cpus: int | None = None,
    max_restarts: int = 3,
    on_item: Callable[[Path, Path], None] | None = None,
    plan: OutputPlan | None = None,
) -> list[tuple[Path, Path]]:
    """Sample a RunSpec's images on a Ray cluster; returns the (png, json) paths written, in seed order.

    ``address``: ``'local'``/None (a private local cluster of ``num_cpus``) or a Ray address.
    ``registry_factory``: a picklable zero-argument callable each worker calls to get its
    registry (default: :func:`get_registry`, i.e. the installed plugins). ``seeds`` restricts
    which seeds are written (their whole batches are sampled). ``resume``/``overwrite`` as in
    :func:`plan_outputs` (or pass a ``plan`` made by it). ``on_item(png, json)`` is called after
    each item is written. ``console``: a rich Console for the progress bar (None = quiet).
    """
    ray = require_ray()
    out = Path(out_dir)
    registry = registry_factory() if registry_factory is not None else None
    validate_spec(spec, registry)
    planned_here = plan is None
    plan = plan or plan_outputs(spec, out, seeds, overwrite, resume, registry)
    if console is not None and plan.skipped and planned_here:
        console.print(f"resuming: {len(plan.skipped)} images already complete, {len(plan.write)} to go")
    if not plan.batches:
        return []
    ray, started = connect(address, num_cpus=num_cpus)
    pool = None
    try:
        gpus, device = _placement(spec.device, num_gpus_per_worker, ray)
        worker_spec = _replace_device(spec, device)
        n = num_workers or _default_workers(ray, num_cpus_per_worker, gpus, len(plan.batches))
        Actor = ray.remote(GenerationWorker).options(
            num_cpus=num_cpus_per_worker, num_gpus=gpus, max_restarts=max_restarts, max_task_retries=max_restarts
        )
        actors = [Actor.remote(worker_spec, registry_factory, int(max(1, num_cpus_per_worker))) for _ in range(n)]
        pool = _Pool(ray, actors, "run", lambda s: f"seeds {s[0]}..{s[-1]}")
        todo = set(plan.write)
        written: dict[int, tuple[Path, Path]] = {}
        seen_warnings: set[str] = set()
        with _progress(console) as progress:
            task = progress.add_task(f"sampling on {n} Ray worker{'s' * (n > 1)}", total=len(todo))

            def on_result(batch: list[int], result: tuple[str, Any, list[str]]) -> None:
                status, payload, warns = result
                if status == "error":
                    raise UgdError(payload)
                for w in warns:
                    if w not in seen_warnings and console is not None:
                        console.print(f"[yellow]warning:[/] {w}")
                    seen_warnings.add(w)
                for item in payload:
                    seed = item.record["seed"]
                    if seed not in todo or seed in written:
                        continue
                    paths = save_planned(item, out, plan, overwrite)
                    written[seed] = paths
                    progress.advance(task)
                    if on_item is not None:
                        on_item(*paths)

            pool.run(plan.batches, on_result)
        return [written[s] for s in sorted(written)]
    finally:
        if pool is not None:
            pool.close()
        if started:
            ray.shutdown()


def _replace_device(spec: Any, device: str) -> Any:
    from dataclasses import replace

    return spec if device == spec.device else replace(spec, device=device)


# -- benchmarks ------------------------------------------------------------------------------


def build_suite(name: str, params: dict[str, Any]) -> Any:
    """A benchmark suite from the installed plugins (what Ray workers call to rebuild one)."""
    return get_registry().build("benchmark", name, params)


class CellWorker:
    """A Ray actor body holding one benchmark suite; runs its cells."""

    def __init__(self, suite: Any, suite_factory: Callable[[], Any] | None, threads: int) -> None:
        import torch

        torch.set_num_threads(max(1, threads))
        self.suite = suite_factory() if suite_factory is not None else suite

    def run(self, cell: dict[str, Any]) -> dict[str, Any]:
        """One cell's result dict."""
        return self.suite.run_cell(cell)


def run_bench_on_ray(
    suite: Any,
    out_dir: Path | str,
    address: str | None = None,
    *,
    suite_factory: Callable[[], Any] | None = None,
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
            with _progress(console) as progress:
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


def suite_factory_for(name: str, params: dict[str, Any]) -> Callable[[], Any]:
    """A picklable factory that rebuilds the named suite from a worker's installed plugins."""
    return functools.partial(build_suite, name, dict(params))
