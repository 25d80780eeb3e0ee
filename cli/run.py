"""Runs to folders: one :func:`generate_to_dir` for in-process and Ray runs alike.

A Python user's one call::

    from cli.run import RunSpec, generate_to_dir
    summary = generate_to_dir(RunSpec(guides=["digit:label=7"], num_images=16))
    print(summary.line())   # 16 images (preset ...) in 48.2 s -> outputs/<date>/0001-digit-label-7; ...

:func:`generate_to_dir` validates everything first (the spec, the output folder, what
already exists there), then lets an :class:`Executor` sample the batches of seeds
(:class:`LocalExecutor` in this process, :class:`cli.distributed.RayExecutor` on a Ray
cluster) while this process alone writes the PNGs and records, and finally draws
``contact-sheet.png``. :func:`generate` returns images in memory instead.

This module also re-exports the names of :mod:`cli.spec` (what a run is),
:mod:`cli.records` (image records) and :mod:`cli.outputs` (what a run writes).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, runtime_checkable

import torch

from ugd_core.errors import UgdError
from ugd_core.registry import Registry, get_registry
from ugd_core.sampler import sample

from .best_of import candidate_seeds, pick
from .lanes import run_in_lanes, torch_threads
from .outputs import (
    SHEET_NAME,
    OutputPlan,
    check_out_dir,
    check_outputs_free,
    default_out_dir,
    image_name,
    labelled_grid,
    make_out_dir,
    output_paths,
    plan_outputs,
    remove_temporaries,
    save_image,
    save_planned,
    sheet_name,
    to_pil,
    write_contact_sheet,
)
from .records import (
    SPEC_VERSION,
    check_record,
    image_record,
    read_image_record,
    regenerate_from_record,
    spec_from_image_record,
    versions,
)
from .spec import (
    DEFAULT_BACKBONE,
    Built,
    CheckedSpec,
    Part,
    RunSpec,
    build,
    build_guide,
    check_settings,
    resolve_config,
    resolve_device,
    validate_spec,
)

__all__ = [
    # runs to folders
    "Executor", "GeneratedImage", "LocalExecutor", "RunInterrupted", "RunSummary", "StepHook", "StepView", "generate", "generate_batch",
    "generate_to_dir", "spec_to_dict", "torch_threads",
    # cli.spec
    "DEFAULT_BACKBONE", "Built", "CheckedSpec", "Part", "RunSpec", "build", "build_guide", "check_settings", "resolve_config", "resolve_device",
    "validate_spec",
    # cli.records
    "SPEC_VERSION", "check_record", "image_record", "read_image_record", "regenerate_from_record",
    "spec_from_image_record", "versions",
    # cli.outputs
    "SHEET_NAME", "OutputPlan", "check_out_dir", "check_outputs_free", "default_out_dir", "image_name", "labelled_grid",
    "output_paths", "plan_outputs", "remove_temporaries", "save_image", "save_planned", "to_pil", "write_contact_sheet",
]

Progress = Callable[[int, int], None]


@dataclass
class StepView:
    """The end of one sampler step of one batch, for live views (``LocalExecutor(on_step=...)``).

    ``x0`` is the step's x0_hat in the backbone's latent space (``built.backbone.decode`` gives
    images); ``step`` counts from 1. A hook that raises KeyboardInterrupt stops the run as Ctrl-C does.
    """

    seeds: list[int]
    step: int
    timestep: int
    x0: torch.Tensor
    built: "Built"


StepHook = Callable[[StepView], None]


@dataclass
class GeneratedImage:
    """One image (CHW in [-1, 1]), its reproducible record, and what its batch cost."""

    image: torch.Tensor
    record: dict[str, Any]
    stats: dict[str, Any] = field(default_factory=dict)


def generate_batch(
    spec: RunSpec,
    seeds: list[int],
    built: Built | None = None,
    registry: Registry | None = None,
    progress: Progress | None = None,
    on_step: StepHook | None = None,
) -> list[GeneratedImage]:
    """Sample the images of one batch of seeds (the unit of work of every executor).

    ``progress(step, steps)`` is the sampler's per-step callback; ``on_step`` sees each step's x0_hat.
    """
    reg = registry or get_registry()
    b = built or build(spec, reg)

    def hook(i: int, t: int, tensors: dict[str, torch.Tensor]) -> None:
        assert on_step is not None
        on_step(StepView(seeds, i + 1, t, tensors["x0"], b))

    n = spec.best_of if b.guides else 1
    run_seeds = candidate_seeds(seeds, n) if n > 1 else seeds
    result = sample(
        b.backbone, b.guides, b.config, num_images=len(run_seeds), seed=run_seeds,
        prompt=spec.prompt, negative_prompt=spec.negative_prompt, progress=progress,
        callback_on_step_end=hook if on_step is not None else None,
    )
    common = image_record(spec, b, seeds, reg)
    stats = result.stats.to_dict()
    skipped = stats.pop("skipped_every_step", None) or [False] * len(run_seeds)
    finite = torch.isfinite(result.images.flatten(1)).all(1).tolist()

    def image_stats(j: int) -> dict[str, Any]:
        # a failed image: guidance skipped (non-finite) at every guided step, or the image itself not finite (the
        # chain diverged, e.g. a huge but finite guidance step fed the denoiser an input it turned into NaN)
        return dict(stats, guidance_failed=skipped[j], image_finite=finite[j])

    if n == 1:
        return [GeneratedImage(result.images[i].cpu(), dict(common, seed=s), image_stats(i)) for i, s in enumerate(seeds)]
    best, candidates = pick(result.images, b.guides, seeds, n)
    return [GeneratedImage(result.images[best[i] * len(seeds) + i].cpu(),
                           dict(common, seed=s, best_of=dict(n=n, kept=best[i], candidates=candidates[i])),
                           image_stats(best[i] * len(seeds) + i))
            for i, s in enumerate(seeds)]


def generate(spec: RunSpec, registry: Registry | None = None, progress: Progress | None = None) -> list[GeneratedImage]:
    """All images of a RunSpec in memory, batch by batch, models built once (nothing written)."""
    reg = registry or get_registry()
    built = build(spec, reg)
    batches = spec.batches()
    done: dict[int, list[GeneratedImage]] = {}
    with torch_threads(spec.threads):
        _sample_batches(spec, batches, built, reg, done.__setitem__, progress or (lambda _done, _total: None), None)
    return [item for k in range(len(batches)) for item in done[k]]


def _sample_batches(spec: RunSpec, batches: list[list[int]], built: Built, reg: Registry,
                    on_batch: Callable[[int, list[GeneratedImage]], None], progress: Progress, on_step: StepHook | None) -> None:
    """Every batch through :func:`generate_batch`, side by side in ``spec.lanes`` lanes (:mod:`cli.lanes`), each
    lane on its share of the torch threads."""
    run_in_lanes(batches, spec.lanes, resolve_device(spec.device),
                 lambda seeds, step: generate_batch(spec, seeds, built, reg, step, on_step), on_batch, progress)


# -- executors -------------------------------------------------------------------------------


@runtime_checkable
class Executor(Protocol):
    """Where the batches of a run are sampled; the images stream back to the caller, which writes them."""

    def registry(self) -> Registry:
        """The registry the run's names are checked against (the workers' plugins)."""
        ...

    def check(self, spec: RunSpec) -> None:
        """Checks only this executor can make (device, Ray installed), before any work."""
        ...

    def run(self, checked: CheckedSpec, batches: list[list[int]], on_batch: Callable[[list[GeneratedImage]], None], progress: Progress) -> None:
        """Sample ``batches`` of seeds of a validated spec, calling ``on_batch(images)`` as each batch arrives and
        ``progress(done, total)`` as work completes (units are the executor's)."""
        ...


class LocalExecutor:
    """Samples in this process: models built once, then the batches, side by side in ``spec.lanes`` lanes
    (:mod:`cli.lanes`; by default one per torch thread on a CPU).

    Progress units are sampler steps over the whole run. Sampler warnings (e.g.
    non-finite gradients skipped) are ordinary Python ``RuntimeWarning``\\ s.
    ``on_step`` (optional) sees every step's x0_hat (:class:`StepView`; the browser UI's previews).
    """

    def __init__(self, registry: Registry | None = None, on_step: StepHook | None = None) -> None:
        self._registry = registry
        self._on_step = on_step

    def registry(self) -> Registry:
        """The given registry, else the installed plugins'."""
        return self._registry or get_registry()

    def check(self, spec: RunSpec) -> None:
        """The device must exist in this process."""
        resolve_device(spec.device)

    def run(self, checked: CheckedSpec, batches: list[list[int]], on_batch: Callable[[list[GeneratedImage]], None], progress: Progress) -> None:
        """Build the models once, then sample the batches and hand over each as it completes."""
        reg, spec = self.registry(), checked.spec
        with torch_threads(spec.threads):
            built = build(checked, reg)
            _sample_batches(spec, batches, built, reg, lambda k, items: on_batch(items), progress, self._on_step)


# -- runs to a folder ------------------------------------------------------------------------


@dataclass
class RunSummary:
    """What :func:`generate_to_dir` did: the folder, images written and skipped (``--resume``),
    wall seconds, the preset used, the contact sheet (None if not drawn), and whether it was
    interrupted."""

    out: Path
    written: int
    skipped: int
    seconds: float
    preset: str | None
    contact_sheet: Path | None
    interrupted: bool = False
    failed: int = 0  # images whose guidance was skipped (non-finite) at every guided step: the run has failed
    diverged: int = 0  # images that are not finite (NaN or inf, written black): the run has failed

    def line(self) -> str:
        """The one-line summary, e.g. ``16 images (preset digits-full) in 48.2 s -> outputs/...; contact sheet contact-sheet.png``;
        a failed run (:attr:`failed`) starts with ``failed:`` and says why."""
        if self.interrupted:
            return f"interrupted: {self.written} image{'s' * (self.written != 1)} written to {self.out}; rerun with --resume"
        kept = f", {self.skipped} already there" if self.skipped else ""
        preset = f" (preset {self.preset})" if self.preset else ""
        sheet = f"; contact sheet {self.contact_sheet.name}" if self.contact_sheet is not None else ""
        line = f"{self.written} image{'s' * (self.written != 1)}{kept}{preset} in {self.seconds:.1f} s -> {self.out}{sheet}"
        why = []
        if self.failed:
            why.append(f"guidance was skipped at every step (non-finite gradients) for {self.failed} of {self.written} "
                       "images, so they are unguided or blank")
        if self.diverged:
            why.append(f"{self.diverged} of {self.written} images are not finite (the chain diverged; written black)")
        if why:
            return f"failed: {'; '.join(why)}; lower the guidance strength or check the guide ({line})"
        return line


class RunInterrupted(KeyboardInterrupt):
    """Raised by :func:`generate_to_dir` on Ctrl-C (KeyboardInterrupt), after removing its
    temporary files. ``summary`` counts the complete images written; ``str(exc)`` is the
    one line to print ("interrupted: N images written to OUT; rerun with --resume").
    A KeyboardInterrupt, so code that does not catch it stops as on any Ctrl-C."""

    def __init__(self, summary: RunSummary) -> None:
        super().__init__(summary.line())
        self.summary = summary


def generate_to_dir(
    spec: RunSpec,
    out: Path | str | None = None,
    executor: Executor | None = None,
    *,
    overwrite: bool = False,
    resume: bool = False,
    progress: Progress | None = None,
    on_image: Callable[[Path, Path], None] | None = None,
) -> RunSummary:
    """Generate a RunSpec's images into a folder; the one path for in-process and Ray runs.

    - ``out``: the folder; None = a new one per run, ``outputs/<date>/<NNNN>-<guide slug>``
      (:func:`default_out_dir`).
    - ``executor``: None = :class:`LocalExecutor` (this process); or
      ``cli.distributed.RayExecutor(address, workers, ...)``.
    - ``overwrite`` / ``resume``: as :func:`plan_outputs` (neither: any existing output of a
      requested seed is an error; ``resume`` keeps complete images of this same spec).
    - ``progress(done, total)``: called as work completes (sampler steps in-process, images
      on Ray); ``on_image(png, json)`` after each image is written.

    Before any sampling, raises a one-line :class:`UgdError` for any bad input: the spec
    (:func:`validate_spec`), the executor's checks, the folder (:func:`check_out_dir`),
    existing outputs. Each image is a PNG with its record plus a JSON sidecar; at the end
    ``contact-sheet.png`` shows the run's images (with ``out``, a folder other runs may share, the
    sheet is the run's own: ``contact-sheet-FIRST-LAST.png``, by :func:`sheet_name`). On Ctrl-C the temporary files are
    removed and :class:`RunInterrupted` (a KeyboardInterrupt) carries the summary.
    """
    executor = executor if executor is not None else LocalExecutor()
    registry = executor.registry()
    checked = validate_spec(spec, registry)
    executor.check(spec)
    if overwrite and resume:
        raise UgdError("--overwrite and --resume contradict each other; --resume keeps existing images, --overwrite replaces them")
    if out is None:
        if resume:
            raise UgdError("--resume completes an earlier run: pass its folder with --out")
        folder, created = default_out_dir(spec), True
    else:
        folder = Path(out)
        check_out_dir(folder)
        created = not folder.exists()
    plan = plan_outputs(spec, folder, None, overwrite, resume, registry)
    preset = checked.preset
    summary = RunSummary(folder, 0, len(plan.skipped), 0.0, preset, None)
    todo = set(plan.write)
    start = time.perf_counter()

    def on_batch(items: list[GeneratedImage]) -> None:
        for item in items:
            seed = item.record["seed"]
            if seed in todo:  # a retried batch on Ray may arrive twice: each image is written once
                todo.discard(seed)
                paths = save_planned(item, folder, plan, overwrite)
                summary.written += 1
                summary.failed += bool(item.stats.get("guidance_failed"))
                summary.diverged += not item.stats.get("image_finite", True)
                if on_image is not None:
                    on_image(*paths)

    try:
        if plan.batches:
            make_out_dir(folder)  # a folder that refuses (/sys, read-only) is one line, before any model is built
            executor.run(checked, plan.batches, on_batch, progress or (lambda done, total: None))
        summary.contact_sheet = write_contact_sheet(folder, spec, preset, sheet_name(spec.seeds(), own_folder=out is None))
    except KeyboardInterrupt:
        remove_temporaries(folder, spec.seeds())
        summary.interrupted, summary.seconds = True, time.perf_counter() - start
        raise RunInterrupted(summary) from None
    except BaseException:
        remove_temporaries(folder, spec.seeds())
        raise
    finally:
        if created and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()  # a run that wrote nothing leaves no folder behind
    summary.seconds = time.perf_counter() - start
    return summary


def spec_to_dict(spec: RunSpec) -> dict[str, Any]:
    """JSON-ready RunSpec."""
    return asdict(spec)
