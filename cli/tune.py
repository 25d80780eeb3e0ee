"""Tune sampler knobs for one task of a benchmark suite (``ugd tune``).

Objective: maximise the suite's tuning metric (``suite.evaluate(...)['metric']``,
higher is better, mean over ``seeds``; for the digits suite the development judge or
the guides' own loss by default, never a held-out evaluator) subject to sample quality
``quality <= quality_factor x quality(unguided)`` (FID-like, lower is better),
all points measured on the same seeds and sample counts. Every evaluated point
is kept; the Pareto front over (metric up, quality down, seconds/sample down) is
printed and saved, and the best feasible point is written as a preset file that
``ugd generate --preset FILE`` accepts.

Strategies:

- ``random``: Ray Tune random search (seeded) over the knob space, with ASHA
  early stopping across seeds (each seed is one rung of evidence) when more than
  one seed is used.
- ``optuna``: the same with Optuna's TPE sampler (needs ``pip install optuna``).
- ``beam``: TFG's beam search (Ye et al. 2024): start rho/mu/gamma =
  forward_strength/backward_lr/smoothing_std = 0.25/0.25/0.001, each round try
  every beam member with one of them multiplied by 2/2/10, keep the best
  ``beam_width`` (2). Runs in-process, or on Ray when an address is given.

The unguided reference and the starting preset are always evaluated in full on
the same seeds, and the starting preset is a candidate: the tuned point is never
worse on the metric than the preset it started from (when that preset is feasible).
The default seeds are tuning seeds (``cli.bench.SEED_RANGES``, 300-399); report a tuned
preset on reported seeds (``ugd bench``), never on the seeds it was tuned on.
"""

from __future__ import annotations

import contextlib
import json
import math
import statistics
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from ugd_core.config import SCHEDULES, check_knobs, resolve_preset, save_preset_file, strength_limit
from ugd_core.errors import UgdError
from ugd_core.registry import Registry, get_registry

from .bench import SEED_RANGES, TunableSuite, seeds_outside

STRATEGIES = ("random", "optuna", "beam")
TUNABLE = ("forward_strength", "forward_schedule", "backward_steps", "backward_lr", "recurrence", "windows", "smoothing_std")
WINDOW_KNOBS = ("forward_window", "backward_window", "recurrence_window")
# named timestep windows (fractions of the chain, noisiest first)
WINDOWS: dict[str, tuple[float, float]] = {
    "all": (0.0, 1.0),
    "first-half": (0.0, 0.5),
    "first-80%": (0.0, 0.8),
    "skip-first-20%": (0.2, 1.0),
    "second-half": (0.5, 1.0),
}
BEAM_START = {"forward_strength": 0.25, "backward_lr": 0.25, "smoothing_std": 0.001}  # TFG: rho, mu, gamma
BEAM_FACTORS = {"forward_strength": 2.0, "backward_lr": 2.0, "smoothing_std": 10.0}
UNGUIDED = {"forward_strength": 0.0, "backward_steps": 0, "recurrence": 1, "smoothing_std": 0.0}
INFEASIBLE_PENALTY = 1000.0
DEFAULT_SEEDS = tuple(SEED_RANGES["tuning"][:2])  # 300, 301: tuning seeds, never the reported ones


@dataclass
class Evaluation:
    """One knob setting measured on every seed (or fewer, if stopped early)."""

    label: str
    changes: dict[str, Any]  # knobs set on top of the starting preset
    settings: dict[str, Any] | None  # what suite.evaluate received (None: the suite's unguided run)
    per_seed: list[dict[str, float]]
    metric: float = math.nan
    metric_std: float = 0.0
    quality: float = math.nan
    quality_std: float = 0.0
    seconds_per_sample: float = math.nan
    feasible: bool = False
    score: float = -math.inf
    complete: bool = True
    error: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (infinities become None)."""
        d = asdict(self)
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


@dataclass
class TuneResult:
    """Everything ``tune_suite`` measured and chose."""

    task: str
    strategy: str
    base_name: str
    quality_limit: float
    unguided: Evaluation
    base: Evaluation
    evaluations: list[Evaluation]
    best: Evaluation
    pareto: list[Evaluation]
    markdown: str
    files: dict[str, str] = field(default_factory=dict)


# -- measuring -------------------------------------------------------------------------------


def score_of(metric: float, quality: float, limit: float) -> tuple[bool, float]:
    """(feasible, score): the metric when quality <= limit, else far below any feasible point."""
    if not (math.isfinite(metric) and math.isfinite(quality)):
        return False, -math.inf
    if quality <= limit:
        return True, metric
    excess = quality / limit - 1.0 if limit > 0 else quality
    return False, metric - INFEASIBLE_PENALTY * (1.0 + excess)


def summarize_seeds(rows: list[dict[str, float]], limit: float) -> dict[str, Any]:
    """Means and spreads over the seeds measured so far, plus feasibility and score."""
    m = [r["metric"] for r in rows]
    q = [r["quality"] for r in rows]
    s = [r["seconds_per_sample"] for r in rows]
    metric, quality = statistics.fmean(m), statistics.fmean(q)
    feasible, score = score_of(metric, quality, limit)
    return dict(
        metric=metric,
        metric_std=statistics.stdev(m) if len(m) > 1 else 0.0,
        quality=quality,
        quality_std=statistics.stdev(q) if len(q) > 1 else 0.0,
        seconds_per_sample=statistics.fmean(s),
        feasible=feasible,
        score=score,
    )


def measure(suite: TunableSuite, task: str, settings: dict[str, Any], seed: int, n: int) -> dict[str, float]:
    """One ``suite.evaluate`` call, checked and reduced to the three numbers tuning uses."""
    r = suite.evaluate(task, None if settings is None else dict(settings), seed, n)
    try:
        return dict(seed=seed, metric=float(r["metric"]), quality=float(r["quality"]), seconds_per_sample=float(r["seconds_per_sample"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise UgdError(f"suite.evaluate must return 'metric', 'quality' and 'seconds_per_sample' numbers ({exc!r}); fix the benchmark plugin") from None


def evaluate_settings(suite: TunableSuite, task: str, settings: dict[str, Any], seeds: Sequence[int], n: int, threads: int = 0) -> list[dict[str, float]]:
    """Every seed of one setting (what a worker runs)."""
    if threads:
        import torch

        torch.set_num_threads(threads)
    return [measure(suite, task, settings, s, n) for s in seeds]


def _remote_evaluate(suite: TunableSuite | None, suite_factory: Callable[[], TunableSuite] | None, task: str, settings: dict[str, Any], seeds: list[int], n: int, threads: int) -> list[dict[str, float]]:
    return evaluate_settings(suite_factory() if suite_factory is not None else suite, task, settings, seeds, n, threads)


class Evaluator:
    """Measures lists of settings on all seeds: in-process, or as parallel Ray tasks."""

    def __init__(
        self,
        suite: TunableSuite,
        task: str,
        seeds: Sequence[int],
        n: int,
        ray: Any = None,
        suite_factory: Callable[[], TunableSuite] | None = None,
        cpus: float = 1,
        gpus: float = 0,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        self.suite, self.task, self.seeds, self.n = suite, task, list(seeds), n
        self.ray, self.suite_factory, self.cpus, self.gpus = ray, suite_factory, cpus, gpus
        self.progress = progress or (lambda k: None)
        self._suite_ref = None
        if ray is not None:
            self._fn = ray.remote(_remote_evaluate).options(num_cpus=cpus, num_gpus=gpus, max_retries=2)
            self._suite_ref = ray.put(suite) if suite_factory is None else None

    def many(self, settings: list[dict[str, Any]]) -> list[list[dict[str, float]] | str]:
        """Per-seed rows for each setting, or an error message where evaluation raised."""
        if self.ray is None:
            out: list[list[dict[str, float]] | str] = []
            for s in settings:
                try:
                    out.append(evaluate_settings(self.suite, self.task, s, self.seeds, self.n))
                except UgdError as exc:
                    out.append(str(exc))
                self.progress(1)
            return out
        refs = [self._fn.remote(self._suite_ref, self.suite_factory, self.task, s, self.seeds, self.n, int(max(1, self.cpus))) for s in settings]
        results: list[list[dict[str, float]] | str] = []
        for ref in refs:
            try:
                results.append(self.ray.get(ref))
            except self.ray.exceptions.RayTaskError as exc:
                cause = getattr(exc, "cause", None)
                if not isinstance(cause, UgdError):
                    raise exc.as_instanceof_cause() from None
                results.append(str(cause))
            self.progress(1)
        return results


def _evaluation(label: str, changes: dict[str, Any], settings: dict[str, Any], rows: list[dict[str, float]] | str, limit: float, seeds: int) -> Evaluation:
    if isinstance(rows, str):
        return Evaluation(label, changes, settings, [], error=rows, complete=False)
    ev = Evaluation(label, changes, settings, rows, complete=len(rows) == seeds)
    if rows:
        for k, v in summarize_seeds(rows, limit).items():
            setattr(ev, k, v)
    return ev


# -- the knob space --------------------------------------------------------------------------


def parse_knobs(text: str | Iterable[str] | None, strategy: str) -> list[str]:
    """Which knobs to search (names from TUNABLE; 'windows' = all three windows)."""
    if text is None:
        return list(BEAM_FACTORS) if strategy == "beam" else list(TUNABLE)
    names = [k.strip() for k in (text.split(",") if isinstance(text, str) else text) if k.strip()]
    allowed = list(BEAM_FACTORS) if strategy == "beam" else list(TUNABLE)
    for k in names:
        if k not in allowed:
            raise UgdError(f"--knobs: {k!r} cannot be tuned by strategy {strategy!r}; choose from {', '.join(allowed)}")
    if not names:
        raise UgdError("--knobs is empty; name at least one of " + ", ".join(allowed))
    return names


def strength_cap(base: dict[str, Any]) -> float:
    """The largest forward_strength worth trying on ``base``: 10, or less where the step takes less (the spherical
    step's rate: :func:`ugd_core.config.strength_limit`)."""
    return min(10.0, strength_limit(base.get("forward_on", "eps")))


def search_space(knobs: Sequence[str], base: dict[str, Any] | None = None) -> dict[str, Any]:
    """The Ray Tune search space of the chosen knobs (windows are named, see WINDOWS) for the ``base`` settings."""
    from ray import tune

    space: dict[str, Any] = {}
    if "forward_strength" in knobs:
        space["forward_strength"] = tune.loguniform(0.01, strength_cap(base or {}))
    if "forward_schedule" in knobs:
        space["forward_schedule"] = tune.choice(list(SCHEDULES))
    if "backward_steps" in knobs:
        space["backward_steps"] = tune.randint(0, 6)  # 0..5
    if "backward_lr" in knobs:
        space["backward_lr"] = tune.loguniform(0.01, 2.0)
    if "recurrence" in knobs:
        space["recurrence"] = tune.randint(1, 5)  # 1..4
    if "windows" in knobs:
        for w in WINDOW_KNOBS:
            space[w] = tune.choice(list(WINDOWS))
    if "smoothing_std" in knobs:
        space["smoothing_std"] = tune.choice([0.0, 0.001, 0.003, 0.01, 0.03, 0.1])
    return space


def decode(config: dict[str, Any]) -> dict[str, Any]:
    """A sampled Ray Tune config -> sampler knob changes (window names -> [start, end])."""
    out: dict[str, Any] = {}
    for k, v in config.items():
        if k in WINDOW_KNOBS and isinstance(v, str):
            v = list(WINDOWS[v])
        elif isinstance(v, float):
            v = float(f"{v:.6g}")
        elif hasattr(v, "item"):  # numpy scalars
            v = v.item()
        out[k] = v
    return check_knobs(out)


# -- choosing --------------------------------------------------------------------------------


def pareto_front(evals: Iterable[Evaluation]) -> list[Evaluation]:
    """Complete evaluations not dominated on (metric higher, quality lower, seconds/sample lower)."""
    pts = [e for e in evals if e.complete and not e.error and math.isfinite(e.metric)]

    def dominates(a: Evaluation, b: Evaluation) -> bool:
        ge = a.metric >= b.metric and a.quality <= b.quality and a.seconds_per_sample <= b.seconds_per_sample
        gt = a.metric > b.metric or a.quality < b.quality or a.seconds_per_sample < b.seconds_per_sample
        return ge and gt

    front = [p for p in pts if not any(dominates(o, p) for o in pts if o is not p)]
    return sorted(front, key=lambda e: (-e.metric, e.quality, e.seconds_per_sample))


def choose_best(evals: Iterable[Evaluation]) -> Evaluation:
    """The complete feasible guided point with the highest metric (ties: lower quality, then faster);
    without a feasible one, the highest score."""
    pts = [e for e in evals if e.complete and not e.error and math.isfinite(e.metric) and e.label != "unguided"]
    if not pts:
        raise UgdError("no setting could be evaluated on every seed; see the errors in trials.json")
    feasible = [e for e in pts if e.feasible]
    if feasible:
        return max(feasible, key=lambda e: (e.metric, -e.quality, -e.seconds_per_sample))
    return max(pts, key=lambda e: e.score)


def _fmt(x: float, std: float | None = None) -> str:
    if not math.isfinite(x):
        return "-"
    return f"{x:.4g}" + (f" ± {std:.2g}" if std else "")


def _changes_text(ev: Evaluation) -> str:
    if not ev.changes:
        return "(preset as is)"
    return ", ".join(f"{k}={v}" for k, v in sorted(ev.changes.items())).replace("|", "/")


def render_markdown(result_head: dict[str, Any], front: list[Evaluation], best: Evaluation, unguided: Evaluation, base: Evaluation) -> str:
    """The Pareto table, with the references and the chosen point marked."""
    h = result_head
    lines = [
        f"## ugd tune: {h['suite']} / {h['task']} ({h['strategy']})",
        "",
        f"Seeds {h['seeds']}, {h['samples']} samples per seed; quality limit {h['quality_limit']:.4g} "
        f"= {h['quality_factor']} x unguided ({_fmt(unguided.quality)}); starting preset `{h['base']}`; "
        f"{h['evaluated']} settings evaluated ({h['complete']} on every seed).",
        "",
        "Pareto front (metric higher, quality lower, seconds/sample lower; mean ± std over seeds):",
        "",
        "| | point | metric | quality | s/sample | within limit | knobs changed |",
        "|---|---|---|---|---|---|---|",
    ]
    rows = list(front)
    for ref in (base, unguided):
        if ref not in rows:
            rows.append(ref)
    for e in rows:
        mark = "**best**" if e is best else ("ref" if e in (base, unguided) and e not in front else "")
        lines.append(
            f"| {mark} | {e.label} | {_fmt(e.metric, e.metric_std)} | {_fmt(e.quality, e.quality_std)} | "
            f"{_fmt(e.seconds_per_sample)} | {'yes' if e.feasible else 'no'} | {_changes_text(e)} |"
        )
    lines += ["", "Rows marked ref are the references, shown although dominated."]
    return "\n".join(lines) + "\n"


# -- the search ------------------------------------------------------------------------------


def resolve_base(suite: TunableSuite, name: str, registry: Registry | None = None) -> dict[str, Any]:
    """Starting settings: a method of the suite, a registered preset, or a preset file."""
    methods = getattr(suite, "methods", {}) or {}
    if name in methods:
        return check_knobs(dict(methods[name] or {}))
    return resolve_preset(name, registry or get_registry())[1]


def unguided_settings(suite: TunableSuite, base: dict[str, Any]) -> dict[str, Any] | None:
    """The suite's 'unguided' method if it has one (None = the suite's own 'no guides'), else the
    base with every guidance term off."""
    methods = getattr(suite, "methods", {}) or {}
    for name in ("unguided", "none"):
        if name in methods:
            return None if methods[name] is None else check_knobs(dict(methods[name]))
    return {**base, **UNGUIDED}


def _json_settings(d: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(d))


def tune_suite(
    suite: TunableSuite,
    task: str | None = None,
    *,
    strategy: str = "random",
    base: str | None = None,
    knobs: str | Sequence[str] | None = None,
    trials: int = 16,
    samples: int = 16,
    seeds: Sequence[int] = DEFAULT_SEEDS,
    quality_factor: float = 1.5,
    rounds: int = 3,
    beam_width: int = 2,
    out_dir: Path | str | None = None,
    overwrite: bool = False,
    address: str | None = None,
    suite_factory: Callable[[], TunableSuite] | None = None,
    suite_name: str = "suite",
    console: Any = None,
    search_seed: int = 0,
    num_cpus_per_trial: float = 1,
    num_gpus_per_trial: float = 0,
    num_cpus: int | None = None,
    registry: Registry | None = None,
) -> TuneResult:
    """Search sampler knobs for ``task`` of ``suite``; see the module docstring.

    ``address``: Ray address or 'local'; ``random``/``optuna`` always use Ray (a local
    cluster when None), ``beam`` runs in-process when None. The unguided and starting-preset
    references run in this process unless an address is given (then as Ray tasks, like
    beam's candidates). ``suite_factory`` (picklable)
    rebuilds the suite on Ray workers instead of pickling ``suite``. With ``out_dir``,
    writes trials.json, pareto.md, pareto.json and best-preset.json there.
    """
    if strategy not in STRATEGIES:
        raise UgdError(f"--strategy {strategy!r} is not one of {', '.join(STRATEGIES)}")
    tasks = list(getattr(suite, "tasks", []) or [])
    task = task or (tasks[0] if tasks else None)
    if task is None or (tasks and task not in tasks):
        raise UgdError(f"--task {task!r} is not a task of this suite; tasks: {', '.join(tasks) or '(none)'}")
    seeds = list(seeds)
    if not seeds or samples < 1 or trials < 1 or quality_factor <= 0:
        raise UgdError("--seeds, --samples and --trials must be >= 1 and --quality-factor > 0")
    knob_list = parse_knobs(knobs, strategy)
    outside = seeds_outside(seeds, "tuning")
    if outside and console is not None:  # allowed (pilots, tests), but said: tuning on reported seeds flatters
        console.print(f"[yellow]warning:[/] {outside}: a table on them would report what was tuned on")
    base_name = base or ("tfg" if strategy == "beam" else "ugd")
    base_settings = _json_settings(resolve_base(suite, base_name, registry))
    out = Path(out_dir) if out_dir is not None else None
    if out is not None and not overwrite:
        for f in ("best-preset.json", "trials.json", "pareto.md"):
            if (out / f).exists():
                raise UgdError(f"{out / f} already exists; pass --overwrite or choose another --out")

    ray, started = None, False
    if strategy != "beam" or address is not None:
        from .distributed import connect

        ray, started = connect(address, num_cpus=num_cpus)
    try:
        return _run(
            suite, task, strategy, base_name, base_settings, knob_list, trials, samples, seeds, quality_factor, rounds,
            beam_width, out, ray, suite_factory, suite_name, console, search_seed, num_cpus_per_trial, num_gpus_per_trial,
            address is not None,
        )
    finally:
        if started:
            ray.shutdown()


def _run(
    suite: TunableSuite, task: str, strategy: str, base_name: str, base_settings: dict[str, Any], knobs: list[str], trials: int,
    samples: int, seeds: list[int], quality_factor: float, rounds: int, beam_width: int, out: Path | None, ray: Any,
    suite_factory: Callable[[], TunableSuite] | None, suite_name: str, console: Any, search_seed: int, cpus: float, gpus: float,
    remote: bool,
) -> TuneResult:
    from .progress import progress_bar

    budget = trials if strategy != "beam" else min(trials, 1 + sum(beam_width * len(knobs) for _ in range(rounds)))
    with progress_bar(console) as progress:
        bar = progress.add_task(f"tune {suite_name}/{task} ({strategy})", total=budget + 2)
        tick = lambda k: progress.advance(bar, k)  # noqa: E731
        evaluator = Evaluator(suite, task, seeds, samples, ray if remote else None, suite_factory, cpus, gpus, tick)

        # references, in full on every seed: the unguided quality fixes the limit. Without an explicit
        # cluster address they run here, in this process (the local cluster is this machine anyway).
        ref_settings = [_json_settings(unguided_settings(suite, base_settings)), base_settings]
        ref_rows = evaluator.many(ref_settings)
        if isinstance(ref_rows[0], str) or not ref_rows[0]:
            raise UgdError(f"the unguided reference could not be evaluated: {ref_rows[0]}")
        limit = quality_factor * summarize_seeds(ref_rows[0], math.inf)["quality"]
        unguided = _evaluation("unguided", {}, ref_settings[0], ref_rows[0], limit, len(seeds))
        unguided.feasible = True
        base_ev = _evaluation(f"preset {base_name}", {}, base_settings, ref_rows[1], limit, len(seeds))

        if strategy == "beam":
            found = _beam(evaluator, base_settings, base_ev, knobs, rounds, beam_width, trials, limit, len(seeds))
        else:
            found = _ray_tune(
                ray, suite, suite_factory, task, strategy, base_settings, knobs, trials, samples, seeds, limit, out,
                search_seed, cpus, gpus, lambda: progress.advance(bar),
            )
        progress.update(bar, completed=budget + 2)

    evaluations = [unguided, base_ev, *found]
    best = choose_best(evaluations)
    front = pareto_front(evaluations)
    head = dict(
        suite=suite_name, task=task, strategy=strategy, seeds=seeds, samples=samples, quality_factor=quality_factor,
        quality_limit=limit, base=base_name, evaluated=len(evaluations), complete=sum(e.complete for e in evaluations),
    )
    md = render_markdown(head, front, best, unguided, base_ev)
    if not best.feasible and console is not None:
        console.print(f"[yellow]warning:[/] no guided setting kept quality <= {limit:.4g}; the preset holds the best-scoring one")
    result = TuneResult(task, strategy, base_name, limit, unguided, base_ev, evaluations, best, front, md)
    if out is not None:
        # a suite that pins the step count measured every point at it: the preset carries it, over any count the base had
        steps = getattr(suite, "steps", None)
        fixed = {"num_steps": steps} if isinstance(steps, int) else {}
        result.files = _write(out, head, result, suite_name, fixed)
    return result


def _key(settings: dict[str, Any]) -> str:
    return json.dumps(settings, sort_keys=True)


def _beam(
    evaluator: Evaluator, base: dict[str, Any], base_ev: Evaluation, knobs: list[str], rounds: int, width: int,
    budget: int, limit: float, nseeds: int,
) -> list[Evaluation]:
    """TFG's beam search over (rho, mu, gamma) = (forward_strength, backward_lr, smoothing_std)."""

    def changes_of(settings: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in settings.items() if base.get(k) != v}

    seen: dict[str, Evaluation] = {_key(base): base_ev}
    start = _json_settings({**base, **{k: BEAM_START[k] for k in knobs}})
    found: list[Evaluation] = []
    if _key(start) in seen:
        beam = [seen[_key(start)]]
    else:
        ev = _evaluation("beam 0", changes_of(start), start, evaluator.many([start])[0], limit, nseeds)
        seen[_key(start)] = ev
        found.append(ev)
        beam = [ev]
    for r in range(1, rounds + 1):
        children: dict[str, dict[str, Any]] = {}
        for parent in beam:
            for k in knobs:
                value = parent.settings.get(k) or BEAM_START[k]  # a knob that is off starts at TFG's value
                grown = value * BEAM_FACTORS[k]
                if k == "forward_strength":
                    grown = min(grown, strength_cap(parent.settings))
                child = _json_settings({**parent.settings, k: float(f"{grown:.6g}")})
                if _key(child) not in seen and len(found) + len(children) < budget:
                    children.setdefault(_key(child), child)
        if not children:
            break
        kids = list(children.values())
        rows = evaluator.many(kids)
        new = [_evaluation(f"beam {r}.{i}", changes_of(c), c, rw, limit, nseeds) for i, (c, rw) in enumerate(zip(kids, rows))]
        for ev in new:
            seen[_key(ev.settings)] = ev
        found += new
        pool = [e for e in [*beam, *new] if e.complete and not e.error]
        beam = sorted(pool, key=lambda e: e.score, reverse=True)[:width] or beam
    return found


def _tune_trial(config: dict[str, Any], suite: TunableSuite | None, suite_factory: Callable[[], TunableSuite] | None, task: str, base: dict[str, Any], seeds: list[int], n: int, limit: float, threads: int) -> None:
    """A Ray Tune function trainable: one setting, one seed per reported iteration (ASHA's unit)."""
    import torch
    from ray import tune

    torch.set_num_threads(max(1, threads))
    s = suite_factory() if suite_factory is not None else suite
    changes = decode(config)
    settings = _json_settings({**base, **changes})
    rows: list[dict[str, float]] = []
    for seed in seeds:
        rows.append(measure(s, task, settings, seed, n))
        tune.report({**summarize_seeds(rows, limit), "seeds_done": len(rows), "per_seed": json.dumps(rows)})


def _ray_tune(
    ray: Any, suite: TunableSuite, suite_factory: Callable[[], TunableSuite] | None, task: str, strategy: str, base: dict[str, Any], knobs: list[str], trials: int,
    samples: int, seeds: list[int], limit: float, out: Path | None, search_seed: int, cpus: float, gpus: float,
    tick: Callable[[], None],
) -> list[Evaluation]:
    import tempfile

    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    if strategy == "optuna":
        try:
            from ray.tune.search.optuna import OptunaSearch

            search_alg: Any = OptunaSearch(seed=search_seed)
        except (ImportError, AssertionError):
            raise UgdError("--strategy optuna needs Optuna: pip install optuna (or use --strategy random)") from None
    else:
        search_alg = BasicVariantGenerator(random_state=search_seed)
    scheduler: Any = (
        ASHAScheduler(time_attr="training_iteration", max_t=len(seeds), grace_period=1, reduction_factor=2)
        if len(seeds) > 1
        else FIFOScheduler()
    )
    storage = (out / "ray-tune").resolve() if out is not None else Path(tempfile.mkdtemp(prefix="ugd-tune-"))
    storage.mkdir(parents=True, exist_ok=True)

    class _Tick(tune.Callback):
        """Advances the progress bar; Tune pickles its config, so the bar is not part of the state."""

        def __init__(self, fn: Callable[[], None] | None = None) -> None:
            self.fn = fn

        def __getstate__(self) -> dict[str, Any]:
            return {}

        def __setstate__(self, state: dict[str, Any]) -> None:
            self.fn = None

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            if self.fn is not None:
                self.fn()

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            if self.fn is not None:
                self.fn()

    trainable = tune.with_resources(
        tune.with_parameters(
            _tune_trial, suite=None if suite_factory is not None else suite, suite_factory=suite_factory, task=task,
            base=base, seeds=seeds, n=samples, limit=limit, threads=int(max(1, cpus)),
        ),
        {"cpu": cpus, "gpu": gpus},
    )
    tuner = tune.Tuner(
        trainable,
        param_space=search_space(knobs, base),
        tune_config=tune.TuneConfig(
            metric="score", mode="max", num_samples=trials, search_alg=search_alg, scheduler=scheduler, reuse_actors=True
        ),
        run_config=tune.RunConfig(
            name="ugd-tune", storage_path=str(storage), verbose=0, callbacks=[_Tick(tick)],
            failure_config=tune.FailureConfig(max_failures=1),
        ),
    )
    with contextlib.redirect_stdout(sys.stderr):  # Ray Tune's banner; stdout carries the table only
        grid = tuner.fit()
    found = []
    for i, res in enumerate(grid):
        changes = decode(res.config or {})
        settings = _json_settings({**base, **changes})
        if res.error is not None and not res.metrics:
            err = str(getattr(res.error, "cause", None) or res.error).strip().splitlines()
            found.append(Evaluation(f"trial {i}", changes, settings, [], complete=False, error=err[-1] if err else "failed"))
            continue
        rows = json.loads((res.metrics or {}).get("per_seed", "[]"))
        found.append(_evaluation(f"trial {i}", changes, settings, rows, limit, len(seeds)))
    return found


def _write(out: Path, head: dict[str, Any], r: TuneResult, suite_name: str, fixed: dict[str, Any]) -> dict[str, str]:
    out.mkdir(parents=True, exist_ok=True)
    files = {k: str(out / v) for k, v in dict(trials="trials.json", pareto_md="pareto.md", pareto_json="pareto.json", preset="best-preset.json").items()}
    Path(files["trials"]).write_text(
        json.dumps(dict(**head, best=r.best.label, evaluations=[e.to_dict() for e in r.evaluations]), indent=2, default=str)
    )
    Path(files["pareto_md"]).write_text(r.markdown)
    Path(files["pareto_json"]).write_text(json.dumps(dict(**head, front=[e.to_dict() for e in r.pareto]), indent=2, default=str))
    b = r.best
    save_preset_file(
        files["preset"],
        name=f"tuned-{suite_name}-{r.task}",
        settings={**(b.settings or {}), **fixed},
        description=(
            f"tuned by `ugd tune` ({r.strategy}) for {suite_name}/{r.task}: metric {b.metric:.4g}, quality {b.quality:.4g} "
            f"(limit {r.quality_limit:.4g}), {b.seconds_per_sample:.3g} s/sample over seeds {head['seeds']}"
        ),
        tuned=dict(
            suite=suite_name, task=r.task, strategy=r.strategy, start=r.base_name, point=b.label, changes=b.changes,
            metric=b.metric, metric_std=b.metric_std, quality=b.quality, quality_std=b.quality_std,
            seconds_per_sample=b.seconds_per_sample, within_quality_limit=b.feasible, quality_limit=r.quality_limit,
            seeds=head["seeds"], samples=head["samples"],
        ),
    )
    return files
