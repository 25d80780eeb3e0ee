"""One run of the page, in a background thread: :func:`cli.run.generate_to_dir` as the CLI calls it,
plus the live views the page shows (progress, x0_hat previews, the guides' losses) and a Stop.

Stop raises :class:`StopRequested` (a KeyboardInterrupt) from the sampler's step hook, so the run
ends as on Ctrl-C: temporary files removed, the complete images kept, :class:`RunInterrupted`.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ugd_core.errors import UgdError

from ..outputs import labelled_grid, to_pil
from ..run import LocalExecutor, RunInterrupted, RunSpec, RunSummary, StepView, generate_to_dir


class StopRequested(KeyboardInterrupt):
    """The page's Stop button: ends a run as Ctrl-C ends ``ugd generate``."""


def preview_every(steps: int) -> int:
    """Preview after the first step, then every this many steps (about 12 previews per batch)."""
    return max(1, steps // 12)


@dataclass
class Preview:
    """x0_hat of one batch at one step, and each guide's mean loss there."""

    seeds: list[int]
    step: int
    image: Any  # PIL grid of the batch's x0_hat, captioned with seeds
    losses: dict[str, float]


@dataclass
class Watch:
    """What the page shows of a run, updated by the run's thread (read it under ``lock``)."""

    spec: RunSpec
    recurrence: int = 1
    done: int = 0
    total: int = 0
    batches: int = 1
    preview: Preview | None = None
    previews: int = 0
    losses: list[dict[str, Any]] = field(default_factory=list)  # rows: step (over the run), guide, loss
    images: list[Path] = field(default_factory=list)
    summary: RunSummary | None = None
    error: str | None = None
    stopped: bool = False
    finished: bool = False
    started: float = field(default_factory=time.perf_counter)
    first_preview_s: float | None = None
    first_preview_step: int | None = None  # the run's step count when the first preview was drawn


class Run:
    """A run in a thread; ``stop()`` asks it to end after the current step."""

    def __init__(self, spec: RunSpec, steps: int, recurrence: int = 1) -> None:
        self.watch = Watch(spec, recurrence, batches=len(spec.batches()))
        self.lock = threading.Lock()
        self.changed = queue.Queue[None]()
        self._stop = threading.Event()
        self._steps = steps
        self._every = preview_every(steps)
        self._thread = threading.Thread(target=self._run, name="ugd-ui-run", daemon=True)

    def start(self) -> "Run":
        self._thread.start()
        return self

    def stop(self) -> None:
        """End the run after the step in progress (complete images stay)."""
        self._stop.set()

    def wait_change(self, timeout: float) -> None:
        """Block until the run changed something (or ``timeout`` seconds)."""
        try:
            self.changed.get(timeout=timeout)
        except queue.Empty:
            pass

    def _notify(self) -> None:
        self.changed.put(None)

    # -- the run's thread --------------------------------------------------------------------

    def _progress(self, done: int, total: int) -> None:
        with self.lock:
            self.watch.done, self.watch.total = done, total
        self._notify()

    def _on_image(self, png: Path, sidecar: Path) -> None:
        with self.lock:
            self.watch.images.append(png)
        self._notify()

    def _on_step(self, view: StepView) -> None:
        if self._stop.is_set():
            raise StopRequested()
        if view.step != 1 and view.step % self._every and view.step != self._steps:
            return
        with torch.no_grad():
            images = view.built.backbone.decode(view.x0).float().clamp(-1, 1).cpu()
            try:
                losses = {name: float(v.mean()) for name, v in view.built.guides.losses(images.to(view.x0.device)).items()}
            except Exception:  # a guide that cannot score a decoded x0_hat (e.g. one on z_t) is left off the chart
                losses = {}
        captions = [[f"seed {s}" for s in view.seeds]] if len(view.seeds) == len(images) else None
        grid = labelled_grid([[to_pil(im) for im in images]], captions=captions, tile=96)
        w = self.watch
        with self.lock:
            batch = (view.seeds[0] - w.spec.seed) // w.spec.batch_size  # the batch's place in the run (lanes run several at once)
            w.preview = Preview(list(view.seeds), view.step, grid, losses)
            w.previews += 1
            if w.first_preview_s is None:
                w.first_preview_s, w.first_preview_step = time.perf_counter() - w.started, view.step
            run_step = batch * self._steps + view.step
            w.losses.extend(dict(step=run_step, guide=name, loss=value) for name, value in losses.items())
        self._notify()

    def _run(self) -> None:
        w = self.watch
        try:
            executor = LocalExecutor(on_step=self._on_step)
            summary = generate_to_dir(w.spec, None, executor, progress=self._progress, on_image=self._on_image)
            with self.lock:
                w.summary = summary
        except RunInterrupted as exc:
            with self.lock:
                w.summary, w.stopped = exc.summary, True
        except UgdError as exc:
            with self.lock:
                w.error = str(exc)
        except Exception as exc:  # shown on the page rather than lost in the server log
            with self.lock:
                w.error = f"{type(exc).__name__}: {exc}"
        finally:
            with self.lock:
                w.finished = True
            self._notify()
