"""``ugd bench digits``: tasks x methods (x step counts) on the digits world, judged by independent judges.

Tasks (each a guide spec built from held-out references, never from training digits):
label (all ten classes), mask, box, identity, style, inpainting + label.
Methods: unguided, the ablations of the default preset (naive, forward, forward + backward,
forward + backward + recurrence = ``digits-full``; ``presets.ABLATIONS``) and the registered presets
named by their registry name (dps, freedom, mpgd, lgd, tfg, ugd, ...), never copies of their values.
``steps`` may be a list: every method then runs at every step count (a step sweep).

Judges (``judges.py``): the family-B evaluators (ResNetSmall, seed 2) for class, identity, style and
FID features, the classifier calibrated by temperature scaling on the held-out calibration split;
beside it, for every task with a target class, a nearest-neighbour judge in normalised pixel space
against the held-out reference split, which counts a sample farther than its non-digit threshold
as wrong. Mask and box IoU are model-free (ink > 0 and its tight box). FID is computed in the
evaluator classifier's 64-d pooled feature space against the judges' 750 held-out real digits (never a
task target; class-balanced for the label task), and is comparable only between rows with equal sample counts.

The task targets come from their own set of held-out digits (``data.DIGIT_SETS["target"]``), disjoint from
the train digits and from the judges' references and calibration digits. The default seeds are the first
reported seeds (``cli.bench.SEED_RANGES``); ``--quick`` runs on a pilot seed. A sample with a non-finite
pixel counts as wrong in every judge and metric, and each table has a non-finite column.
``evaluate`` (what ``ugd tune`` optimises) never calls a reported judge unless ``objective=evaluator``:
by default it scores the development NN judge on train digits (label) or the task's guide loss (the rest).
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

from cli.bench import SEED_RANGES, run_cells, save_labelled_grid
from ugd_core.config import SamplerConfig
from ugd_core.errors import UgdError
from ugd_core.registry import Registry, get_registry
from ugd_core.sampler import sample

from .data import DIGIT_SETS, foreground_mask, tight_boxes
from .evaluators import nonfinite
from .presets import ABLATIONS
from .targets import heldout_canvases, ref_canvas, ref_label
from .train_guides import WEIGHTS_DIR

TASKS = ("label", "mask", "box", "identity", "style", "inpaint", "mask+label", "box-alone", "inpaint-alone")
# "box" and "inpaint" compose the placement guide with the target's class (digit-robust); "box-alone" and
# "inpaint-alone" are the placement guide by itself, scored the same way (no class is asked, so none is judged).
ALONE = "-alone"


def base_task(task: str) -> str:
    """The task whose guide and metric a task uses: "box" for "box-alone", else the task itself."""
    return task.removesuffix(ALONE)

# Guide weights per task: bring each guide's loss to a comparable gradient scale.
# Set once from the guides' own losses (a pilot on seeds outside the reported ones),
# never from the evaluators' scores.
# Median gradient norms of the guides' losses on held-out digits (docs/digits-guides.md):
# digit 9, digit-mask 0.08, digit-box (box terms only) 0.2, digit-id 0.7, digit-style 1.1, inpaint 0.03.
# The box task composes two guides, digit-box for the location and digit for the class: with the class
# inside digit-box its cross-entropy swamped the box terms. Box weight 20 was chosen among 1/5/20/100/400
# by the guide detector's own IoU to the target on pilot seeds 500-501 (0.35/0.43/0.50/0.40/0.28).
TASK_WEIGHTS = {"label": 1.0, "mask": 100.0, "box": 20.0, "identity": 12.0, "style": 8.0, "inpaint": 300.0, "mask+label": 100.0,
                "box-alone": 20.0, "inpaint-alone": 300.0}

# The guide of the class term (label task; the class that box and inpaint compose). The noise-trained
# classifier is the default: on the pilot seeds it beat the clean one by the development judge
# (benchmarks/digits_label_pilot.py; docs/benchmarks.md, label goal).
LABEL_GUIDES = ("digit-robust", "digit")
DEFAULT_LABEL_GUIDE = LABEL_GUIDES[0]

# Built-in methods: unguided and the ablations of the default preset; any other method name is a
# registered preset (or a preset file) looked up in the registry.
METHODS: dict[str, dict[str, Any] | None] = {"unguided": None, **ABLATIONS}
PEER_PRESETS = ("dps", "freedom", "mpgd", "lgd", "tfg", "dsg", "ugd")
DEFAULT_METHODS = (*METHODS, "auto", *PEER_PRESETS)  # the ablations, every backbone's default, the peers
DEFAULT_SETTINGS = ABLATIONS["forward+backward"]  # the 'digits' preset's settings
CLASS_TASKS = ("label", "box", "inpaint", "mask+label")  # tasks with a target class: both judges report on them
REPORTED_SEEDS = tuple(SEED_RANGES["reported"][:3])  # the bench's default seeds: 1000, 1001, 1002
QUICK_SEED = SEED_RANGES["pilot"][0]  # a smoke run's numbers are looked at often: never a reported seed
# What ``evaluate`` (the objective of ``ugd tune``) scores: "development" = the development NN judge on train
# digits for the label task and the task's own weighted guide loss for the others; "guide-loss" = the guide
# loss for every task; "evaluator" = the held-out evaluator's task metric and FID (a report, not for tuning).
OBJECTIVES = ("development", "guide-loss", "evaluator")
SCORING = 3  # bump when scoring changes (2: non-finite samples wrong everywhere; 3: FID_REAL), so no cached cell is reused
# FID's real digits: the judges' held-out digits (references and calibration, 0-749), never a task target
FID_REAL = (DIGIT_SETS["judge_reference"][1], DIGIT_SETS["judge_calibration"][2])
HIGHER_IS_BETTER = {"label": True, "mask": True, "box": True, "identity": True, "style": False, "inpaint": False, "mask+label": True,
                    "box-alone": True, "inpaint-alone": False}
METRIC_NAME = {
    "label": "target accuracy",
    "mask": "mask IoU",
    "mask+label": "mask IoU",
    "box": "box IoU",
    "identity": "identity cosine",
    "style": "style distance",
    "inpaint": "known-pixel MSE",
    "box-alone": "box IoU",
    "inpaint-alone": "known-pixel MSE",
}


@dataclass
class Case:
    """One target: the guide specs and what the metrics compare against."""

    guides: list[str]
    label: int | None = None
    ref: int | None = None


def task_cases(task: str, seed: int, n_cases: int, label_guide: str = DEFAULT_LABEL_GUIDE,
               label_weights: str = "", unit_weights: bool = False, guide_weights: dict[str, float] | None = None) -> list[Case]:
    """Targets of a task for one seed (held-out references chosen by the seed); ``label_guide`` is the guide
    of the class term (the label task's, and the class that box and inpaint compose), ``label_weights`` an
    optional weights file for it (a retrained variant; "" = the shipped weights). ``unit_weights``: every
    guide at weight 1 instead of ``TASK_WEIGHTS`` (for methods that normalise each guide's gradient, where a
    weight is a share of the step, not a unit conversion). ``guide_weights``: a weight for every spec of a named guide
    (e.g. ``{"digit-box": 4}``), over either."""
    cases = _task_cases(task, seed, n_cases, label_guide, label_weights, unit_weights)
    for name, w in (guide_weights or {}).items():
        for c in cases:
            c.guides = weighted(c.guides, name, w)
    return cases


def with_weight(spec: str, w: float) -> str:
    """A bench guide spec with its weight set to ``w``."""
    return re.sub(r"weight=[0-9.eE+-]+", f"weight={w:g}", spec)


def weighted(specs: list[str], guide: str, w: float) -> list[str]:
    """The specs with every spec of ``guide`` (its name matched whole) at weight ``w``, the others as they are."""
    return [with_weight(s, w) if s.startswith(guide + ":") else s for s in specs]


def _task_cases(task: str, seed: int, n_cases: int, label_guide: str, label_weights: str, unit_weights: bool) -> list[Case]:
    weights = {k: 1.0 for k in TASK_WEIGHTS} if unit_weights else TASK_WEIGHTS
    w = weights[task]

    def class_term(label: int, weight: float) -> str:
        extra = f',weights="{label_weights}"' if label_weights else ""
        return f"{label_guide}:label={label},weight={weight}{extra}"

    if task == "label":
        return [Case([class_term(c, w)], label=c) for c in range(10)]
    refs = target_refs(seed, n_cases)
    alone, task = task.endswith(ALONE), base_task(task)
    cases = []
    for r in refs:
        lab = ref_label(r)
        label = [] if alone else [class_term(lab, weights["label"])]
        if task == "mask":
            cases.append(Case([f"digit-mask:ref={r},weight={w}"], lab, r))
        elif task == "box":
            b = tight_boxes(foreground_mask(ref_canvas(r)))[0].int().tolist()
            cases.append(Case([f'digit-box:box="{b[0]},{b[1]},{b[2]},{b[3]}",weight={w}', *label], lab, r))
        elif task == "mask+label":
            cases.append(Case([f"digit-mask:ref={r},weight={w}", class_term(lab, weights["label"])], lab, r))
        elif task == "identity":
            cases.append(Case([f"digit-id:ref={r},weight={w}"], lab, r))
        elif task == "style":
            cases.append(Case([f"digit-style:ref={r},weight={w}"], lab, r))
        elif task == "inpaint":
            cases.append(Case([f"inpaint:ref={r},region=left,weight={w}", *label], lab, r))
    return cases


def target_refs(seed: int, n_cases: int) -> list[int]:
    """The held-out indices of a seed's ``n_cases`` task targets: distinct digits of the target set
    (``data.DIGIT_SETS["target"]``), never a judge's reference or calibration digit."""
    _, lo, hi = DIGIT_SETS["target"]
    size = hi - lo
    if not 0 < n_cases <= size:
        raise UgdError(f"cases={n_cases} is out of range; the target set has {size} digits, use 1..{size}")
    order = torch.randperm(size, generator=torch.Generator().manual_seed(seed))  # distinct digits, seeded by the seed
    return [lo + int(i) for i in order[:n_cases]]


class DigitsBench:
    """The digits benchmark suite (also the objective ``ugd tune`` optimises)."""

    tasks = TASKS
    methods = METHODS

    def __init__(
        self,
        samples: int = 4,
        cases: int = 4,
        seeds: tuple[int, ...] = REPORTED_SEEDS,
        steps: int | tuple[int, ...] = 50,
        tasks: tuple[str, ...] = TASKS,
        methods: tuple[str, ...] | dict[str, dict[str, Any] | None] = DEFAULT_METHODS,
        registry: Registry | None = None,
        device: str = "cpu",
        label_guide: str = DEFAULT_LABEL_GUIDE,
        label_weights: str = "",
        objective: str = "development",
        guide_weights: dict[str, float] | None = None,
    ):
        if objective not in OBJECTIVES:
            raise UgdError(f"objective={objective!r} is not one of {', '.join(OBJECTIVES)}")
        self.objective = objective
        self.samples, self.n_cases, self.seeds = samples, cases, seeds
        self.label_guide, self.label_weights = label_guide, label_weights
        self.guide_weights = dict(guide_weights or {})
        self.step_counts = (steps,) if isinstance(steps, int) else tuple(steps)
        self.steps = self.step_counts[0]  # the step count of ``evaluate`` (tuning)
        self.tasks = tuple(tasks)
        self.methods = dict(methods) if isinstance(methods, dict) else method_settings(tuple(methods), registry)
        self.reg = registry or get_registry()
        self.device = device
        self._backbone = None
        self._evaluators = None
        self._nn_judge = None
        self._dev_net = None
        self._real: dict[str, torch.Tensor] = {}

    # -- shared resources ------------------------------------------------------------------

    # a cell builds its own guides and only reads the shared models, which prepare() builds: cli.bench.run_cells
    # may run cells in lanes
    cells_side_by_side = True

    def prepare(self) -> None:
        """Build what every cell shares (backbone, evaluator networks and temperature, NN judge, the real digits'
        features) once, before cells run side by side."""
        ev = self.evaluators
        _ = self.backbone, self.nn_judge, ev.classifier, ev.identity, ev.temperature
        self.real_features()
        self.real_features(tuple(range(10)))  # the label task's class-balanced set

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

    @property
    def nn_judge(self) -> Any:
        """The nearest-neighbour judge (reference split, threshold fitted on the calibration split)."""
        if self._nn_judge is None:
            from .judges import NearestNeighbourJudge

            self._nn_judge = NearestNeighbourJudge()
        return self._nn_judge

    def real_features(self, classes: tuple[int, ...] | None = None) -> torch.Tensor:
        """Evaluator features of the judges' real held-out digits, never a task target (``FID_REAL``;
        class-balanced when ``classes`` is given)."""
        key = "all" if classes is None else ",".join(map(str, classes))
        if key not in self._real:
            images, labels = heldout_canvases(1000)
            images, labels = images[FID_REAL[0] : FID_REAL[1]], labels[FID_REAL[0] : FID_REAL[1]]
            if classes is not None:
                per = min(int((labels == c).sum()) for c in classes)
                idx = torch.cat([torch.nonzero(labels == c).flatten()[:per] for c in classes])
                images = images[idx]
            self._real[key] = self.evaluators.features(images)
        return self._real[key]

    def real_reference(self) -> dict[str, Any]:
        """Both judges on the real held-out *test* split: the classifier's calibration and the NN judge's ceiling."""
        from .judges import calibration_report, heldout_split

        images, labels = heldout_split("test")
        ev = self.evaluators
        return dict(classifier=calibration_report(ev.logits(images), labels, ev.temperature), nn=self.nn_judge.ceiling())

    # -- one cell -------------------------------------------------------------------------

    def config(self, settings: dict[str, Any] | None, steps: int | None = None) -> SamplerConfig:
        return SamplerConfig.from_dict(dict(settings or {}, num_steps=steps or self.steps))

    def generate(self, task: str, settings: dict[str, Any] | None, seed: int, n: int | None = None,
                 steps: int | None = None) -> tuple[list[Case], torch.Tensor, dict[str, Any]]:
        """Samples for every case of a task: (cases, images [cases*n, 1, 32, 32], cost)."""
        n = n or self.samples
        unit = (settings or {}).get("guide_normalize", "none") != "none"  # weights are shares, not unit conversions
        cases = task_cases(task, seed, self.n_cases, self.label_guide, self.label_weights, unit_weights=unit,
                           guide_weights=self.guide_weights)
        cfg = self.config(settings, steps)
        images, secs, fwd, bwd = [], 0.0, 0, 0
        if task == "label" and settings is not None:  # the cases differ only in the class: one batch
            seeds = [seed * 100_000 + ci * 1000 + j for ci in range(len(cases)) for j in range(n)]
            t0 = time.perf_counter()
            out = sample(self.backbone, self._label_batch(cases, n), cfg, num_images=len(seeds), seed=seeds)
            total = len(seeds)
            cost = dict(seconds_per_sample=(time.perf_counter() - t0) / total,
                        denoiser_forward_per_sample=float(out.stats.denoiser_forward),
                        denoiser_backward_per_sample=float(out.stats.denoiser_backward))
            return cases, out.images.cpu(), cost
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

    def _label_batch(self, cases: list[Case], n: int) -> list[Any]:
        """The label cases as one batch: the guide is built once (case 0's), with every sample's own class
        (``Case.label``) as its target.

        Each sample's loss and gradient depend only on its own image and target (checked to 1e-6), and each
        image keeps its own seed, so this is the same computation as sampling the cases one by one, at a
        fraction of the per-call cost; only float rounding differs with the batch size, and strong early
        guidance amplifies it (up to 0.1 in a pixel after 4 steps; 2e-3 between batches of 1 and 2).
        """
        from dataclasses import replace

        (item,) = [self._guide(spec) for spec in cases[0].guides]  # a label case has one guide: digit:label=L
        target = torch.tensor([c.label for c in cases for _ in range(n)], device=item.guide.target.device)
        return [type(item)(replace(item.guide, target=target), item.weight)]

    def _guide(self, spec: str) -> Any:
        from cli.run import build_guide

        return build_guide(spec, self.reg, self.device)[0]

    def score(self, task: str, cases: list[Case], images: torch.Tensor, n: int) -> dict[str, Any]:
        """Task metric(s), both judges' class numbers (tasks with a target class) and FID of one cell's images."""
        ev = self.evaluators
        labels = torch.tensor([c.label for c in cases for _ in range(n)])
        pred, probs = ev.classify(images)
        prob = probs.max(1).values
        # Backbone-quality signal for every cell: confidently (calibrated p >= 0.9) some digit, whatever the target.
        bad = nonfinite(images)  # every judge and metric below counts these samples as wrong
        out: dict[str, Any] = {"confident": float((prob >= 0.9).float().mean()),
                               "nonfinite": int(bad.sum()), "nonfinite_share": float(bad.float().mean())}
        verdict = self.nn_judge.judge(images)
        out["nn_nondigit"] = float((~verdict.is_digit).float().mean())
        if task in CLASS_TASKS:
            hit, nn_hit = pred == labels, verdict.correct(labels)
            out["class_accuracy"] = float(hit.float().mean())
            out["accuracy_at_0.9"] = float((hit & (prob >= 0.9)).float().mean())
            out["nn_accuracy"] = float(nn_hit.float().mean())
            if task == "label":
                out["per_digit_accuracy"] = [float(hit[labels == c].float().mean()) for c in range(10)]
                out["per_digit_nn_accuracy"] = [float(nn_hit[labels == c].float().mean()) for c in range(10)]
        refs = torch.cat([ref_canvas(c.ref) for c in cases for _ in range(n)]) if cases[0].ref is not None else None
        if task == "label":
            out["metric"] = out["class_accuracy"]
        elif task in PLACEMENT_TASKS:
            iou = placement(task, images, refs, ev)
            out["metric"] = float(iou.mean())
            if task in CLASS_TASKS:  # a placed sample of another class counts 0, by either judge
                out["joint"], out["nn_joint"] = float((iou * hit).mean()), float((iou * nn_hit).mean())
        elif task == "identity":
            out["metric"] = float(ev.identity_cosine(images, refs).mean())
        elif task == "style":
            out["metric"] = float(ev.style_distance(images, refs).mean())
        elif base_task(task) == "inpaint":
            known = torch.zeros_like(images, dtype=torch.bool)
            known[..., : images.shape[-1] // 2] = True
            err = ((images - refs) ** 2 * known).flatten(1).sum(1) / known.flatten(1).sum(1)
            out["metric"] = float(torch.where(bad, torch.inf, err).mean())  # a non-finite sample is the worst
        classes = tuple(range(10)) if task == "label" else None
        out["fid"] = ev.fid(ev.features(images), self.real_features(classes))
        return out

    def cells(self) -> list[dict[str, Any]]:
        """Every (task, method, steps, seed) cell: JSON-able work items."""
        return [dict(task=t, method=m, steps=k, seed=s, n=self.samples, version=self._version(m, k))
                for t in self.tasks for m in self.methods for k in self.step_counts for s in self.seeds]

    def run_cell(self, cell: dict[str, Any]) -> dict[str, Any]:
        """Generate and score one cell."""
        settings = self.methods[cell["method"]]
        steps = cell.get("steps", self.steps)
        cases, images, cost = self.generate(cell["task"], settings, cell["seed"], cell["n"], steps)
        result = dict(cell, steps=steps, **self.score(cell["task"], cases, images, cell["n"]), **cost, samples=len(images))
        result["_images"] = images
        return result

    def evaluate(self, task: str, settings: dict[str, Any] | None, seed: int, n: int) -> dict[str, float]:
        """Objective for tuning: 'metric' (higher is better), 'quality' (FID, lower is better), 'seconds_per_sample'.

        With ``objective`` "development" (the default) or "guide-loss" no judge's digit (reference, calibration)
        and no evaluator is read, only train digits, the guides and the task's targets: the metric is the development NN judge's accuracy (label, development) or minus the task's
        weighted guide loss, and the quality is the FID in the clean guide classifier's features against
        train digits. A non-finite sample scores as wrong: never a digit, loss +inf.
        """
        cases, images, cost = self.generate(task, settings, seed, n)
        if self.objective == "evaluator":
            s = {k: v for k, v in self.score(task, cases, images, n).items() if not isinstance(v, list)}
            sign = 1.0 if HIGHER_IS_BETTER[task] else -1.0
            return dict(s, metric=sign * s["metric"], raw_metric=s["metric"], quality=s["fid"], **cost)
        from .evaluators import Evaluators
        from .judges import development_canvases, development_judge

        bad = nonfinite(images)
        loss = torch.where(bad, torch.inf, self.guide_loss(task, cases, images, n))
        out: dict[str, Any] = dict(guide_loss=float(loss.mean()), nonfinite=int(bad.sum()),
                                   quality=Evaluators.fid(self.dev_features(images), self.dev_features(development_canvases()[0])))
        if self.objective == "development" and task == "label":
            verdict = development_judge().judge(images)
            labels = torch.tensor([c.label for c in cases for _ in range(n)])
            out.update(dev_nn_nondigit=float((~verdict.is_digit).float().mean()),
                       metric=float(verdict.correct(labels).float().mean()))
        else:
            out["metric"] = -out["guide_loss"]
        return dict(out, raw_metric=out["metric"], **cost)

    @torch.no_grad()
    def guide_loss(self, task: str, cases: list[Case], images: torch.Tensor, n: int) -> torch.Tensor:
        """[N] the task's weighted guide loss (the sum the sampler minimises) of each final image, on CPU."""
        from ugd_core.guidance import GuideSet

        x = images.to(self.device)
        if task == "label":  # one guide with every sample's own class
            return GuideSet(self._label_batch(cases, n)).loss(x).cpu()
        return torch.cat([GuideSet([self._guide(spec) for spec in case.guides]).loss(x[ci * n : (ci + 1) * n]).cpu()
                          for ci, case in enumerate(cases)])

    @torch.no_grad()
    def dev_features(self, images: torch.Tensor) -> torch.Tensor:
        """Development FID features [N, D]: the clean guide classifier's (family A) pooled features, never an
        evaluator's; a non-finite image gets nan features (its FID is nan)."""
        from .guides import preprocess
        from .train_guides import load_network

        if self._dev_net is None:
            self._dev_net = load_network("digit_classifier", None, self.device)
        x = preprocess(images.float())
        feats = torch.cat([self._dev_net.embed(x[i : i + 256].to(self.device)).cpu() for i in range(0, len(x), 256)])
        feats[nonfinite(images)] = float("nan")
        return feats

    # -- the whole suite ------------------------------------------------------------------

    def __call__(self, out_dir: Path, progress: Any = None) -> dict[str, Any]:
        """Run every cell (reusing cached ones in ``out_dir/cells``) and write the tables and grids."""
        return run_cells(self, out_dir, progress)

    def _version(self, method: str, steps: int) -> str:
        """Hash of what a cell's result depends on beyond its name: the method's settings, the step
        and case counts, the shipped weights and the judges' definition, so a cached cell is never
        reused after any changes."""
        from . import judges

        variant = [file_digest(Path(self.label_weights))] if self.label_weights else []  # a retrained label guide
        variant += [self.guide_weights] if self.guide_weights else []  # the cells of other guide weights
        blob = json.dumps([self.methods[method], steps, self.n_cases, self.label_guide, *variant, weights_digest(), judges.SPLITS, judges.NN_K,
                           judges.NONDIGIT_PERCENTILE, judges.NN_BLUR_SIGMA, DIGIT_SETS, SCORING], sort_keys=True, default=str)
        return hashlib.sha1(blob.encode()).hexdigest()[:12]

    def summarize(self, results: list[dict[str, Any]], out_dir: Path) -> dict[str, Any]:
        """Write results.md, results.json and one labelled PNG grid per (task, method, steps)."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        sweep = len(self.step_counts) > 1
        for r in results:
            images = r.pop("_images", None)
            if images is not None and r["seed"] == min(self.seeds):
                suffix = f"-{r['steps']}steps" if sweep else ""
                rows = [f"{c.label}" for c in task_cases(r["task"], r["seed"], self.n_cases)]
                save_labelled_grid(torch.nan_to_num(images, nan=-1.0).clamp(-1, 1), out_dir / f"grid-{r['task']}-{_slug(r['method'])}{suffix}.png", ncol=r["n"],
                                   row_labels=rows, title=[f"{r['task']} · {r['method']} · {r['steps']} steps · seed {r['seed']}"])
        rows = aggregate(results)
        real = self.real_reference()
        seeds = ", ".join(str(x) for x in self.seeds)
        guides = f"class term {self.label_guide}" + (f" (weights {self.label_weights})" if self.label_weights else "")
        guides += "".join(f"; {name} at weight {w:g} in every case" for name, w in self.guide_weights.items())
        run_line = (f"Seeds {seeds}; {self.samples} sample(s) × {self.n_cases} case(s) a seed and task; "
                    f"{', '.join(str(k) for k in self.step_counts)} steps; {guides}.\n\n")
        md = run_line + real_reference_markdown(real) + markdown_table(rows, self)
        (out_dir / "results.md").write_text(md)
        (out_dir / "results.json").write_text(
            json.dumps(dict(settings=dict(samples=self.samples, cases=self.n_cases, seeds=list(self.seeds), steps=list(self.step_counts),
                                          task_weights=TASK_WEIGHTS, label_guide=self.label_guide, label_weights=self.label_weights or None,
                                          guide_weights=self.guide_weights, methods=self.methods), real_reference=real, rows=rows, raw=results),
                       indent=2, default=str)
        )
        return dict(markdown=md, rows=rows)


PLACEMENT_TASKS = ("mask", "mask+label", "box", "box-alone")


def placement(task: str, images: torch.Tensor, refs: torch.Tensor, ev: Any) -> torch.Tensor:
    """[N] where each image put its ink against its reference's: mask IoU (mask, mask + label) or the IoU of the
    ink's tight box with the reference's (box, box-alone); 0 for a non-finite sample."""
    target = foreground_mask(refs)
    if base_task(task) == "box":
        return ev.box_metrics(images, tight_boxes(target))["iou"]
    return ev.mask_iou(images, target)


def aggregate(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and std across seeds of every numeric field (lists element-wise), per (task, method, steps)."""
    groups: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault((r["task"], r["method"], r.get("steps", 0)), []).append(r)
    rows = []
    for (task, method, steps), rs in groups.items():
        row: dict[str, Any] = dict(task=task, method=method, steps=steps, seeds=len(rs), samples=sum(r["samples"] for r in rs))
        for key in rs[0]:
            if key in ("seed", "n", "samples", "steps"):
                continue
            if all(isinstance(r.get(key), list) for r in rs):
                arr = np.asarray([r[key] for r in rs], dtype=np.float64)
                row[key] = arr.mean(0).tolist()
                continue
            vals = [r[key] for r in rs if isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool)]
            if len(vals) != len(rs):
                continue
            arr = np.asarray(vals, dtype=np.float64)  # a nan (a diverged cell's FID) stays nan
            row[key] = float(arr.mean())
            row[key + "_std"] = float(arr.std())
        rows.append(row)
    return rows


def real_reference_markdown(real: dict[str, Any]) -> str:
    """Both judges on the real held-out test split, as two sentences."""
    c, nn = real["classifier"], real["nn"]
    return (f"Real held-out test digits (n = {c['n']}): `eval_classifier` accuracy {c['accuracy_after']:.3f}; "
            f"expected calibration error {c['ece_before']:.3f} → {c['ece_after']:.3f} and p ≥ 0.9 share "
            f"{c['confident_before']:.3f} → {c['confident_after']:.3f} with temperature T = {c['temperature']:.3f} "
            f"(fitted on the calibration split). NN judge (k = {nn['k']}) ceiling: accuracy {nn['accuracy']:.3f}, "
            f"non-digit share {nn['nondigit']:.3f} (threshold {nn['threshold']:.3f}, the {nn['percentile']:g}th percentile "
            f"of the calibration digits' nearest distances).\n")


def markdown_table(rows: list[dict[str, Any]], bench: DigitsBench) -> str:
    """One table per task (methods x step counts as rows), per-digit tables and a step-sweep table for the label task."""
    lines = []
    sweep = len(bench.step_counts) > 1
    for task in bench.tasks:
        trs = [r for r in rows if r["task"] == task]
        if not trs:
            continue
        arrow = "↑" if HIGHER_IS_BETTER[task] else "↓"
        cls = task in CLASS_TASKS
        head = [f"{METRIC_NAME[task]} {arrow}"]
        if task != "label" and cls:
            head += ["class acc (classifier) ↑"]
        if task in PLACEMENT_TASKS and cls:
            head += [f"{METRIC_NAME[task]} where the class is drawn, classifier / NN (else 0) ↑"]
        if cls:
            head += ["NN acc ↑", "NN non-digit ↓", "confident ↑"]
        else:
            head += ["confident ↑"]
        head += ["non-finite ↓", "FID ↓", "s/sample", "denoiser fwd / bwd per sample"]
        if task == "label":
            head[0] = "target acc (classifier) ↑"
        lines += [f"\n### {task}: {METRIC_NAME[task]}\n", "| method | steps | " + " | ".join(head) + " |", "|---|---|" + "---|" * len(head)]
        for r in trs:
            cells = [r["method"], str(r["steps"]), _pm(r, "metric")]
            if task != "label" and cls:
                cells.append(_pm(r, "class_accuracy"))
            if task in PLACEMENT_TASKS and cls:
                cells.append(f"{_pm(r, 'joint')} / {_pm(r, 'nn_joint')}")
            if cls:
                cells += [_pm(r, "nn_accuracy"), _pm(r, "nn_nondigit")]
            cells += [_pm(r, "confident"), _pm(r, "nonfinite_share"), _pm(r, "fid", 2), f"{r['seconds_per_sample']:.3f}",
                      f"{r['denoiser_forward_per_sample']:.0f} / {r['denoiser_backward_per_sample']:.0f}"]
            lines.append("| " + " | ".join(cells) + " |")
        if task == "label":
            lines += ["\nPer-digit target accuracy, classifier / NN judge:\n",
                      "| method | steps | " + " | ".join(str(c) for c in range(10)) + " |", "|---|---|" + "---|" * 10]
            for r in trs:
                pairs = [f"{a:.2f} / {b:.2f}" for a, b in zip(r["per_digit_accuracy"], r["per_digit_nn_accuracy"])]
                lines.append(f"| {r['method']} | {r['steps']} | " + " | ".join(pairs) + " |")
            if sweep:
                lines += ["\nStep sweep: target accuracy, classifier / NN judge (NN non-digit share):\n",
                          "| method | " + " | ".join(f"{k} steps" for k in bench.step_counts) + " |",
                          "|---|" + "---|" * len(bench.step_counts)]
                for m in dict.fromkeys(r["method"] for r in trs):
                    by_steps = {r["steps"]: r for r in trs if r["method"] == m}
                    cells = [f"{by_steps[k]['metric']:.2f} / {by_steps[k]['nn_accuracy']:.2f} ({by_steps[k]['nn_nondigit']:.2f})"
                             if k in by_steps else "–" for k in bench.step_counts]
                    lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _pm(r: dict[str, Any], key: str, digits: int = 3) -> str:
    from cli.bench import mean_spread

    return mean_spread(r[key], r.get(key + "_std", 0.0), r["seeds"], digits) if key in r else "–"


# Shipped weights the bench never reads (the bench samples the `digits` DDPM): kept out of the cells' version.
NOT_READ_BY_BENCH = ("flow_backbone.safetensors",)


@functools.lru_cache(maxsize=1)
def weights_digest() -> str:
    """SHA-1 over the plugin's shipped weight files that the bench reads (backbone, guides, evaluators)."""
    h = hashlib.sha1()
    for f in sorted(WEIGHTS_DIR.glob("*.safetensors")):
        if f.name in NOT_READ_BY_BENCH:
            continue
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:12]


def file_digest(path: Path) -> str:
    """SHA-1 of one file's bytes (a ``label_weights`` file in a cell's version)."""
    return hashlib.sha1(path.read_bytes()).hexdigest()[:12]


def _slug(method: str) -> str:
    """A method name (or preset path) as a file-name part."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", method).strip("_")


def parse_steps(text: str | int) -> tuple[int, ...]:
    """``"50"`` or ``"10,20,50"`` -> step counts (each >= 1, no repeats), else a UgdError naming the fix."""
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    try:
        steps = tuple(int(p) for p in parts)
    except ValueError:
        steps = ()
    if not steps or any(k < 1 for k in steps) or len(set(steps)) != len(steps):
        raise UgdError(f"steps={text!r} is not a step count or a comma-separated list of distinct counts >= 1; "
                       "write e.g. steps=50 or steps=10,20,50,100,250,500")
    return steps


def make_suite(samples: int = 4, cases: int = 4, seeds: str = ",".join(map(str, REPORTED_SEEDS)), steps: str = "50",
               tasks: str = ",".join(TASKS), methods: str = ",".join(DEFAULT_METHODS), quick: bool = False, device: str = "cpu",
               label_guide: str = DEFAULT_LABEL_GUIDE, label_weights: str = "", objective: str = "development",
               guide_weights: str = "") -> DigitsBench:
    """Factory registered as the ``digits`` benchmark (checks every parameter before any work)."""
    step_counts = parse_steps(steps)
    if objective not in OBJECTIVES:
        raise UgdError(f"objective={objective!r} is not one of {', '.join(OBJECTIVES)}; the default, development, "
                       "reads neither a judge's digit nor an evaluator")
    if quick:
        samples, cases, seeds, step_counts = 2, 2, str(QUICK_SEED), (10,)
        tasks = tasks if tasks != ",".join(TASKS) else "label,mask"
        methods = methods if methods != ",".join(DEFAULT_METHODS) else "unguided,naive,forward,forward+backward,auto"
    for name, value in (("samples", samples), ("cases", cases)):
        if value < 1:
            raise UgdError(f"{name}={value} must be >= 1; write e.g. {name}=2")
    task_list = tuple(t for t in tasks.split(",") if t)
    method_list = tuple(m for m in methods.split(",") if m)
    for t in task_list:
        if t not in TASKS:
            raise UgdError(f"unknown digits task {t!r}; tasks: {', '.join(TASKS)}")
    if samples * cases < 2 and any(t != "label" for t in task_list):  # label: 10 classes x samples images a cell
        raise UgdError(f"samples={samples} × cases={cases} is one image a cell, and a cell's FID needs at least 2; "
                       "write e.g. samples=2 (or cases=2)")
    try:
        seed_list = tuple(int(s) for s in seeds.split(",") if s.strip())
    except ValueError:
        raise UgdError(f"seeds={seeds!r} is not a comma-separated list of integers; write e.g. seeds=1000,1001,1002") from None
    if label_weights:
        path = Path(label_weights).expanduser()
        if not path.is_file():
            raise UgdError(f"label_weights={label_weights!r}: no such file; pass a safetensors file of the label guide's "
                           "network or leave it out for the shipped weights")
        label_weights = str(path)
    target_refs(0, cases)  # a case count the target set can hold
    return DigitsBench(samples, cases, seed_list, step_counts, task_list, method_settings(method_list), device=device,
                       label_guide=label_guide, label_weights=label_weights, objective=objective,
                       guide_weights=parse_guide_weights(guide_weights))


def parse_guide_weights(text: str) -> dict[str, float]:
    """``"digit-box=4;digit-mask=0.5"`` -> {guide: weight}: the weight every spec of that guide takes in every case
    ("" = the bench's own weights). A guide no task of the bench uses, or a weight that is not a positive number,
    is one line."""
    used = {"digit-mask", "digit-box", "digit-id", "digit-style", "inpaint", *LABEL_GUIDES}  # the guides of task_cases
    out: dict[str, float] = {}
    for part in (p for p in text.split(";") if p.strip()):
        name, _, value = part.partition("=")
        name = name.strip()
        try:
            w = float(value)
        except ValueError:
            w = 0.0
        if name not in used or not 0 < w < float("inf"):
            raise UgdError(f"guide_weights={text!r}: {part.strip()!r} is not GUIDE=WEIGHT with a guide the bench uses "
                           f"({', '.join(sorted(used))}) and a positive weight; write e.g. guide_weights=digit-box=4")
        out[name] = w
    return out


def method_settings(names: tuple[str, ...], registry: Registry | None = None) -> dict[str, dict[str, Any] | None]:
    """Settings of each method: a built-in method (unguided or an ablation), a registered preset name or a preset file."""
    from ugd_core.config import resolve_preset

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
