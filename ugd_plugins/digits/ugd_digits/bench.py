"""``ugd bench digits``: tasks x methods on the digits world, judged by independent evaluators.

Tasks (each a guide spec built from held-out references, never from training digits):
label (all ten classes), mask, box, identity, style, inpainting + label.
Methods: unguided, naive (the clean guide's gradient on the noisy z_t), forward,
forward + backward, forward + backward + recurrence, and the dps / freedom /
mpgd presets. Every method is a set of knobs of the one sampler.

Judges (BENCHMARKS.md): family-B evaluators (ResNetSmall, seed 2) for class,
identity, style and FID features; mask and box IoU are model-free (ink > 0 and its
tight box). FID is computed in the evaluator classifier's 64-d pooled feature
space against held-out real digits (of the same classes for the label task), and
is comparable only between rows with equal sample counts.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cli.bench import run_cells
from ugd_core.config import SamplerConfig
from ugd_core.registry import Registry, get_registry
from cli.run import to_pil
from ugd_core.sampler import sample

from .data import foreground_mask, tight_boxes
from .targets import heldout_canvases, ref_canvas, ref_label
from .train_guides import WEIGHTS_DIR

TASKS = ("label", "mask", "box", "identity", "style", "inpaint")

# Guide weights per task: bring each guide's loss to a comparable gradient scale.
# Set once from the guides' own losses (a pilot on seeds outside the reported ones),
# never from the evaluators' scores.
# Median gradient norms of the guides' losses on held-out digits (docs/digits-guides.md):
# digit 9, digit-mask 0.08, digit-box (box terms only) 0.2, digit-id 0.7, digit-style 1.1, inpaint 0.03.
# The box task composes two guides, digit-box for the location and digit for the class: with the class
# inside digit-box its cross-entropy swamped the box terms. Box weight 20 was chosen among 1/5/20/100/400
# by the guide detector's own IoU to the target on pilot seeds 500-501 (0.35/0.43/0.50/0.40/0.28).
TASK_WEIGHTS = {"label": 1.0, "mask": 100.0, "box": 20.0, "identity": 12.0, "style": 8.0, "inpaint": 300.0}

# s(t) proportional to a_t ("increase", rescaled to mean 1): on this cosine-schedule backbone the
# sqrt(1 - a_t) schedule lets the z_t-gradient (which carries 1/sqrt(a_t) through x0_hat) blow
# samples up in the first steps; a pilot on seeds 500+ (never reported) chose strength 5.
FORWARD = dict(forward_strength=5.0, forward_schedule="increase")
BACKWARD = dict(backward_steps=3, backward_lr=0.2, backward_optimizer="sgd")
DEFAULT_SETTINGS = dict(FORWARD, **BACKWARD)
METHODS: dict[str, dict[str, Any] | None] = {
    "unguided": None,
    "naive": dict(FORWARD, forward_input="zt"),
    "forward": dict(FORWARD),
    "forward+backward": dict(FORWARD, **BACKWARD),
    "forward+backward+recurrence": dict(FORWARD, **BACKWARD, recurrence=3),
    "dps": dict(forward_strength=5.0, forward_schedule="increase", forward_normalize="loss", eta=1.0),
    "freedom": dict(forward_strength=0.3, forward_normalize="grad", forward_window=(0.0, 0.8), recurrence=3, recurrence_window=(0.1, 0.5)),
    "mpgd": dict(backward_steps=1, backward_lr=0.5),
}
HIGHER_IS_BETTER = {"label": True, "mask": True, "box": True, "identity": True, "style": False, "inpaint": False}
METRIC_NAME = {
    "label": "target accuracy",
    "mask": "mask IoU",
    "box": "box IoU",
    "identity": "identity cosine",
    "style": "style distance",
    "inpaint": "known-pixel MSE",
}


@dataclass
class Case:
    """One target: the guide specs and what the metrics compare against."""

    guides: list[str]
    label: int | None = None
    ref: int | None = None


def task_cases(task: str, seed: int, n_cases: int) -> list[Case]:
    """Targets of a task for one seed (held-out references chosen by the seed)."""
    w = TASK_WEIGHTS[task]
    if task == "label":
        return [Case([f"digit:label={c},weight={w}"], label=c) for c in range(10)]
    refs = [(seed * 7919 + j * 104729) % 1000 for j in range(n_cases)]
    cases = []
    for r in refs:
        lab = ref_label(r)
        if task == "mask":
            cases.append(Case([f"digit-mask:ref={r},weight={w}"], lab, r))
        elif task == "box":
            b = tight_boxes(foreground_mask(ref_canvas(r)))[0].int().tolist()
            cases.append(Case([f'digit-box:box="{b[0]},{b[1]},{b[2]},{b[3]}",weight={w}', f"digit:label={lab},weight={TASK_WEIGHTS['label']}"], lab, r))
        elif task == "identity":
            cases.append(Case([f"digit-id:ref={r},weight={w}"], lab, r))
        elif task == "style":
            cases.append(Case([f"digit-style:ref={r},weight={w}"], lab, r))
        elif task == "inpaint":
            cases.append(Case([f"inpaint:ref={r},region=left,weight={w}", f"digit:label={lab},weight={TASK_WEIGHTS['label']}"], lab, r))
    return cases


class DigitsBench:
    """The digits benchmark suite (also the objective ``ugd tune`` optimises)."""

    tasks = TASKS
    methods = METHODS

    def __init__(
        self,
        samples: int = 4,
        cases: int = 4,
        seeds: tuple[int, ...] = (0, 1, 2),
        steps: int = 50,
        tasks: tuple[str, ...] = TASKS,
        methods: tuple[str, ...] | dict[str, dict[str, Any] | None] = tuple(METHODS),
        registry: Registry | None = None,
        device: str = "cpu",
    ):
        self.samples, self.n_cases, self.seeds, self.steps = samples, cases, seeds, steps
        self.tasks = tuple(tasks)
        self.methods = dict(methods) if isinstance(methods, dict) else method_settings(tuple(methods), registry)
        self.reg = registry or get_registry()
        self.device = device
        self._backbone = None
        self._evaluators = None
        self._real: dict[str, torch.Tensor] = {}

    # -- shared resources ------------------------------------------------------------------

    @property
    def backbone(self) -> Any:
        if self._backbone is None:
            self._backbone = self.reg.build("backbone", "digits", {}, device=self.device)
        return self._backbone

    @property
    def evaluators(self) -> Any:
        if self._evaluators is None:
            from .evaluators import Evaluators

            self._evaluators = Evaluators(self.device)
        return self._evaluators

    def real_features(self, classes: tuple[int, ...] | None = None) -> torch.Tensor:
        """Evaluator features of held-out real digits (class-balanced when ``classes`` is given)."""
        key = "all" if classes is None else ",".join(map(str, classes))
        if key not in self._real:
            images, labels = heldout_canvases(1000)
            if classes is not None:
                per = min(int((labels == c).sum()) for c in classes)
                idx = torch.cat([torch.nonzero(labels == c).flatten()[:per] for c in classes])
                images = images[idx]
            self._real[key] = self.evaluators.features(images)
        return self._real[key]

    def real_reference(self) -> dict[str, float]:
        """The evaluator on the 1,000 held-out real digits: what 'confident' and accuracy are for real data."""
        images, labels = heldout_canvases(1000)
        pred, probs = self.evaluators.classify(images)
        confident = probs.max(1).values >= 0.9
        return dict(confident=float(confident.float().mean()), accuracy=float((pred == labels).float().mean()), n=len(labels))

    # -- one cell -------------------------------------------------------------------------

    def config(self, settings: dict[str, Any] | None) -> SamplerConfig:
        return SamplerConfig.from_dict(dict(settings or {}, num_steps=self.steps))

    def generate(self, task: str, settings: dict[str, Any] | None, seed: int, n: int | None = None) -> tuple[list[Case], torch.Tensor, dict[str, Any]]:
        """Samples for every case of a task: (cases, images [cases*n, 1, 32, 32], cost)."""
        n = n or self.samples
        cases = task_cases(task, seed, self.n_cases)
        cfg = self.config(settings)
        images, secs, fwd, bwd = [], 0.0, 0, 0
        for ci, case in enumerate(cases):
            guides = [] if settings is None else [self._guide(spec) for spec in case.guides]
            seeds = [seed * 100_000 + ci * 1000 + j for j in range(n)]
            t0 = time.perf_counter()
            out = sample(self.backbone, guides, cfg, num_images=n, seed=seeds)
            secs += time.perf_counter() - t0
            fwd += out.stats.denoiser_forward * n
            bwd += out.stats.denoiser_backward * n
            images.append(out.images.cpu())
        total = n * len(cases)
        cost = dict(seconds_per_sample=secs / total, denoiser_forward_per_sample=fwd / total, denoiser_backward_per_sample=bwd / total)
        return cases, torch.cat(images), cost

    def _guide(self, spec: str) -> Any:
        from cli.run import build_guide

        return build_guide(spec, self.reg, self.device)[0]

    def score(self, task: str, cases: list[Case], images: torch.Tensor, n: int) -> dict[str, float]:
        """Task metric(s) and FID of one cell's images."""
        ev = self.evaluators
        labels = torch.tensor([c.label for c in cases for _ in range(n)])
        pred, probs = ev.classify(images)
        prob = probs.max(1).values
        # Backbone-quality signal for every cell: confidently some digit, whatever the target.
        out: dict[str, float] = {"confident": float((prob >= 0.9).float().mean()),
                                 "nonfinite": int((~torch.isfinite(images).flatten(1).all(1)).sum())}
        if task in ("label", "box", "inpaint"):
            out["class_accuracy"] = float((pred == labels).float().mean())
            out["accuracy_at_0.9"] = float(((pred == labels) & (prob >= 0.9)).float().mean())
        refs = torch.cat([ref_canvas(c.ref) for c in cases for _ in range(n)]) if cases[0].ref is not None else None
        if task == "label":
            out["metric"] = out["class_accuracy"]
        elif task == "mask":
            out["metric"] = float(ev.mask_iou(images, foreground_mask(refs)).mean())
        elif task == "box":
            out["metric"] = float(ev.box_metrics(images, tight_boxes(foreground_mask(refs)))["iou"].mean())
        elif task == "identity":
            out["metric"] = float(ev.identity_cosine(images, refs).mean())
        elif task == "style":
            out["metric"] = float(ev.style_distance(images, refs).mean())
        elif task == "inpaint":
            known = torch.zeros_like(images, dtype=torch.bool)
            known[..., : images.shape[-1] // 2] = True
            err = ((images - refs) ** 2 * known).flatten(1).sum(1) / known.flatten(1).sum(1)
            out["metric"] = float(err.mean())
        classes = tuple(range(10)) if task == "label" else None
        out["fid"] = ev.fid(ev.features(images), self.real_features(classes))
        return out

    def cells(self) -> list[dict[str, Any]]:
        """Every (task, method, seed) cell: JSON-able work items."""
        return [dict(task=t, method=m, seed=s, n=self.samples, version=self._version(m))
                for t in self.tasks for m in self.methods for s in self.seeds]

    def run_cell(self, cell: dict[str, Any]) -> dict[str, Any]:
        """Generate and score one cell."""
        settings = self.methods[cell["method"]]
        cases, images, cost = self.generate(cell["task"], settings, cell["seed"], cell["n"])
        result = dict(cell, **self.score(cell["task"], cases, images, cell["n"]), **cost, samples=len(images))
        result["_images"] = images
        return result

    def evaluate(self, task: str, settings: dict[str, Any], seed: int, n: int) -> dict[str, float]:
        """Objective for tuning: 'metric' (higher is better), 'quality' (FID), 'seconds_per_sample'."""
        cases, images, cost = self.generate(task, settings, seed, n)
        s = self.score(task, cases, images, n)
        sign = 1.0 if HIGHER_IS_BETTER[task] else -1.0
        return dict(s, metric=sign * s["metric"], raw_metric=s["metric"], quality=s["fid"], **cost)

    # -- the whole suite ------------------------------------------------------------------

    def __call__(self, out_dir: Path, progress: Any = None) -> dict[str, Any]:
        """Run every cell (reusing cached ones in ``out_dir/cells``) and write the tables and grids."""
        return run_cells(self, out_dir, progress)

    def _version(self, method: str) -> str:
        """Hash of what a cell's result depends on beyond its name: the method's settings, the step
        and case counts and the shipped weights, so a cached cell is never reused after any changes."""
        blob = json.dumps([self.methods[method], self.steps, self.n_cases, weights_digest()], sort_keys=True, default=str)
        return hashlib.sha1(blob.encode()).hexdigest()[:12]

    def summarize(self, results: list[dict[str, Any]], out_dir: Path) -> dict[str, Any]:
        """Write results.md, results.json and one PNG grid per (task, method)."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        for r in results:
            images = r.pop("_images", None)
            if images is not None and r["seed"] == min(self.seeds):
                save_grid(images, out_dir / f"grid-{r['task']}-{_slug(r['method'])}.png", ncol=self.samples)
        rows = aggregate(results)
        real = self.real_reference()
        md = (f"Held-out real digits under the same evaluator: confident (p ≥ 0.9) {real['confident']:.3f}, "
              f"accuracy {real['accuracy']:.3f} (n = {real['n']}).\n" + markdown_table(rows, self))
        (out_dir / "results.md").write_text(md)
        (out_dir / "results.json").write_text(
            json.dumps(dict(settings=dict(samples=self.samples, cases=self.n_cases, seeds=list(self.seeds), steps=self.steps,
                                          task_weights=TASK_WEIGHTS, methods=self.methods), real_reference=real, rows=rows, raw=results),
                       indent=2, default=str)
        )
        return dict(markdown=md, rows=rows)


def aggregate(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and std across seeds of every numeric field, per (task, method)."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault((r["task"], r["method"]), []).append(r)
    rows = []
    for (task, method), rs in groups.items():
        row: dict[str, Any] = dict(task=task, method=method, seeds=len(rs), samples=sum(r["samples"] for r in rs))
        for key in rs[0]:
            vals = [r[key] for r in rs if isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool)]
            if key in ("seed", "n", "samples") or len(vals) != len(rs):
                continue
            arr = np.asarray(vals, dtype=np.float64)  # a nan (a diverged cell's FID) stays nan
            row[key] = float(arr.mean())
            row[key + "_std"] = float(arr.std())
        rows.append(row)
    return rows


def markdown_table(rows: list[dict[str, Any]], bench: DigitsBench) -> str:
    """One table per task: methods as rows, metric / FID / cost as columns (mean ± std over seeds)."""
    lines = []
    for task in bench.tasks:
        trs = [r for r in rows if r["task"] == task]
        if not trs:
            continue
        arrow = "↑" if HIGHER_IS_BETTER[task] else "↓"
        extra = " | class acc ↑ | acc@p≥0.9 ↑" if task in ("label", "box", "inpaint") else ""
        lines += [f"\n### {task}: {METRIC_NAME[task]}\n",
                  f"| method | {METRIC_NAME[task]} {arrow}{extra} | confident ↑ | FID ↓ | s/sample | denoiser fwd / bwd per sample |",
                  "|---|---|" + ("---|---|" if extra else "") + "---|---|---|---|"]
        for r in trs:
            cells = [r["method"], _pm(r, "metric")]
            if extra:
                cells += [_pm(r, "class_accuracy"), _pm(r, "accuracy_at_0.9")]
            cells += [_pm(r, "confident") if "confident" in r else "–", _pm(r, "fid", 2), f"{r['seconds_per_sample']:.3f}",
                      f"{r['denoiser_forward_per_sample']:.0f} / {r['denoiser_backward_per_sample']:.0f}"]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _pm(r: dict[str, Any], key: str, digits: int = 3) -> str:
    return f"{r[key]:.{digits}f} ± {r[key + '_std']:.{digits}f}"


@functools.lru_cache(maxsize=1)
def weights_digest() -> str:
    """SHA-1 over the plugin's shipped weight files (backbone, guides, evaluators)."""
    h = hashlib.sha1()
    for f in sorted(WEIGHTS_DIR.glob("*.safetensors")):
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:12]


def _slug(method: str) -> str:
    """A method name (or preset path) as a file-name part."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", method).strip("_")


def save_grid(images: torch.Tensor, path: Path, ncol: int = 8) -> None:
    """Images [N, C, H, W] in [-1, 1] as one PNG grid (nearest-upscaled x2)."""
    from torchvision.utils import make_grid

    grid = make_grid(images, nrow=max(1, ncol), padding=2, pad_value=0.0)
    to_pil(grid[:1] if images.shape[1] == 1 else grid).resize((grid.shape[2] * 2, grid.shape[1] * 2), 0).save(path)


def make_suite(samples: int = 4, cases: int = 4, seeds: str = "0,1,2", steps: int = 50, tasks: str = ",".join(TASKS),
               methods: str = ",".join(METHODS), quick: bool = False, device: str = "cpu") -> DigitsBench:
    """Factory registered as the ``digits`` benchmark."""
    if quick:
        samples, cases, seeds, steps = 2, 2, "0", 10
        tasks = tasks if tasks != ",".join(TASKS) else "label,mask"
        methods = methods if methods != ",".join(METHODS) else "unguided,naive,forward,forward+backward"
    from ugd_core.errors import UgdError

    task_list = tuple(t for t in tasks.split(",") if t)
    method_list = tuple(m for m in methods.split(",") if m)
    for t in task_list:
        if t not in TASKS:
            raise UgdError(f"unknown digits task {t!r}; tasks: {', '.join(TASKS)}")
    seed_list = tuple(int(s) for s in seeds.split(",") if s)
    return DigitsBench(samples, cases, seed_list, steps, task_list, method_settings(method_list), device=device)


def method_settings(names: tuple[str, ...], registry: Registry | None = None) -> dict[str, dict[str, Any] | None]:
    """Settings of each method: a built-in method, a registered preset name or a preset file."""
    from ugd_core.config import resolve_preset
    from ugd_core.errors import UgdError

    out: dict[str, dict[str, Any] | None] = {}
    for m in names:
        if m in METHODS:
            out[m] = METHODS[m]
            continue
        try:
            out[m] = resolve_preset(m, registry or get_registry())[1]
        except UgdError as exc:
            raise UgdError(f"digits method {m!r} is neither a method ({', '.join(METHODS)}) nor a preset: {exc}") from None
    return out



