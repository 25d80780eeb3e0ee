"""``ugd``: list plugins, describe them, generate guided images, run benchmarks.

A thin Typer app over the public SDK (``ugd_core``). Every user error ends in
one line on stderr naming the problem and the fix, exit status 2, nothing written.
"""

from __future__ import annotations

import functools
import json
import shlex
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

from cli.bench import SEED_RANGES
from cli.spec import DEFAULT_BACKBONE, DEFAULT_BATCH_SIZE
from ugd_core.config import knob_names
from ugd_core.errors import UgdError
from ugd_core.params import Param
from ugd_core.registry import KINDS, Entry, get_registry

try:  # typer >= 0.2x vendors click as typer._click
    from typer._click.exceptions import ClickException
except ImportError:  # pragma: no cover
    from click.exceptions import ClickException

# Start-up: this module imports no torch (nor does the registry): `ugd list`, `ugd info` and `ugd --help` stay
# fast, and the commands that sample import cli.run and the kernel's sampler inside their functions.

console = Console()
err_console = Console(stderr=True)


class OneLineErrors(TyperGroup):
    """The command group: Typer's own usage errors (``-n 0``, an unknown option, a value of the wrong type)
    end in the same one line as every other bad input, ``error: ...; see `ugd CMD --help```, exit status 2."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)  # returns typer.Exit's code, or None
        except ClickException as exc:
            if type(exc).__name__ == "NoArgsIsHelpError":  # bare `ugd`: the help text, as Typer prints it
                exc.show()
                sys.exit(exc.exit_code)
            ctx = getattr(exc, "ctx", None)
            # a parser error (an option without its value, a flag given one) carries no context: name the command
            argv = list((args[0] if args else kwargs.get("args")) or sys.argv[1:])
            where = ctx.command_path if ctx is not None else " ".join(["ugd", *[a for a in argv if a in self.commands][:1]])
            message = " ".join(exc.format_message().split()).rstrip(".")
            err_console.print(f"[bold red]error:[/] {escape(message)}; see `{escape(where)} --help`", highlight=False, soft_wrap=True)
            sys.exit(2 if exc.exit_code in (1, 2) else exc.exit_code)
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(cls=OneLineErrors, add_completion=False, no_args_is_help=True, help="Universal guidance for frozen diffusion models.")


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn UgdError (and warnings promoted by the sampler) into one line and exit status 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                warnings.simplefilter("ignore", FutureWarning)
                return fn(*args, **kwargs)
        except UgdError as exc:
            err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper


_PLACEHOLDERS = {"int": "3", "float": "0.5", "bool": "true", "path": "image.png", "str": "text"}


def example_spec(name: str, params: list[Param]) -> str:
    """``NAME:key=value,...`` with every required parameter given an example value
    (its ``example``, first choice or a placeholder of its type) and every optional one that has an
    ``example``, quoted when it holds a comma."""
    fields = []
    for p in params:
        if not p.required and not p.example:
            continue
        value = p.example or (p.choices[0] if p.choices else _PLACEHOLDERS.get(p.type, "text"))
        fields.append(f'{p.name}="{value}"' if "," in value else f"{p.name}={value}")
    return f"{name}:{','.join(fields)}" if fields else name


def example_command(e: Entry, name: str) -> str:
    """The command ``ugd info NAME`` shows; it runs (tests/test_info_examples.py runs every registered one).

    Guides: ``--guide NAME:<required params>`` on the default backbone, or the plugin's ``example``
    arguments; backbones: ``--backbone NAME`` plus its ``example`` (e.g. a prompt, guides); presets:
    ``--preset NAME`` plus its ``example``, else the default backbone's; benchmarks: ``ugd bench NAME``."""
    spec = example_spec(name, e.params)
    if e.kind == "guide":
        return "ugd generate " + (e.example or f"--guide {shlex.quote(spec)}")
    if e.kind == "backbone":
        return f"ugd generate --backbone {shlex.quote(spec)}" + (f" {e.example}" if e.example else "")
    if e.kind == "preset":
        default = get_registry().entries["backbone"].get(DEFAULT_BACKBONE)
        return f"ugd generate --preset {shlex.quote(name)} " + (e.example or (default.example if default else "") or "--guide NAME")
    quick = " --quick" if any(p.name == "quick" for p in e.params) else ""
    fields = [f for f in spec.partition(":")[2].split(",") if f]
    return f"ugd bench {name}{quick}" + "".join(f" --param {shlex.quote(f)}" for f in fields)


def first_sentence(text: str) -> str:
    """A description's first sentence (up to a '. ' or '; ' outside parentheses): what `ugd list` shows on
    its one line per item (`ugd info` shows all of it)."""
    text, depth = " ".join(text.split()), 0
    for i, ch in enumerate(text):
        depth += (ch in "([") - (ch in ")]")
        if ch in ".;" and depth == 0 and text[i + 1 : i + 2] == " " and not text[: i + 1].endswith(("e.g.", "i.e.")):
            return text[:i]
    return text.rstrip(".")


@app.command("list")
@user_errors
def list_cmd(json_out: bool = typer.Option(False, "--json", help="machine-readable output")) -> None:
    """Installed plugins (with versions), guides, backbones, presets, benchmarks, and broken plugins."""
    reg = get_registry()
    if json_out:
        data = {
            "plugins": {n: dict(version=p.version, hooks=p.hooks, error=p.error) for n, p in reg.plugins.items()},
            **{f"{k}s": {n: dict(description=e.description, plugin=e.plugin) for n, e in reg.entries[k].items()} for k in KINDS},
            "clashes": {f"{k}s": {n: [e.plugin for e in same] for n, same in reg.clashes[k].items()} for k in KINDS},
            "problems": reg.problems,
        }
        console.print_json(json.dumps(data))
        return
    t = Table(title="plugins", title_justify="left")
    for col in ("name", "version", "hooks", "status"):
        t.add_column(col)
    for p in reg.plugins.values():
        t.add_row(p.name, p.version, ", ".join(h.replace("ugd_register_", "") for h in p.hooks), f"[red]broken: {escape(p.error)}[/]" if p.error else "ok")
    console.print(t)
    for kind in KINDS:
        if not reg.entries[kind]:
            continue
        t = Table(title=f"{kind}s (one line each; all of it, with sources: ugd info NAME)", title_justify="left")
        rows = [e for name, first in reg.entries[kind].items() for e in reg.clashes[kind].get(name, [first])]
        widths = [max(len(e.name) for e in rows), max(len(e.plugin) for e in rows)]
        t.add_column("name", no_wrap=True, min_width=widths[0])
        t.add_column("plugin", no_wrap=True, min_width=widths[1])
        t.add_column("description", no_wrap=True, overflow="ellipsis", max_width=max(20, console.width - sum(widths) - 10))
        for name, first in reg.entries[kind].items():
            for e in reg.clashes[kind].get(name, [first]):
                notes = "" if e.differentiable or kind != "guide" else "[yellow](non-differentiable: zero-order gradient)[/] "
                if name in reg.clashes[kind]:
                    notes += f"[yellow](name clash: use {e.plugin}:{name})[/] "
                t.add_row(e.name, e.plugin, notes + escape(first_sentence(e.description)))
        console.print(t)
    for problem in reg.problems:
        err_console.print(f"[yellow]warning:[/] {escape(problem)}")


@app.command()
@user_errors
def info(
    name: str = typer.Argument(..., help="a guide, backbone, preset or benchmark name (or PLUGIN:NAME)"),
    kind: Optional[str] = typer.Option(None, "--kind", help=f"only the {', '.join(KINDS)} of that name (when several share it)"),
) -> None:
    """Describe one guide, backbone, preset or benchmark: description, parameters, defaults, an example.
    A name that several kinds share (the digits backbone, preset and benchmark) shows each of them."""
    reg = get_registry()
    if kind is not None and kind not in KINDS:
        raise UgdError(f"--kind {kind!r} is not one of {', '.join(KINDS)}")
    kinds = [k for k in KINDS if (kind is None or k == kind) and (name in reg.entries[k] or name in reg.by_plugin[k])]
    if kind is not None and not kinds:
        raise UgdError(f"no {kind} {name!r}; `ugd list` shows the {kind}s available")
    entries = [reg.get(k, name) for k in kinds]
    for i, e in enumerate(entries or [reg.find(name)]):  # find(): the error naming the closest names
        if i:
            console.print()
        _describe(e, name, brief=len(entries) > 1)


def _describe(e: Entry, name: str, brief: bool = False) -> None:
    """One entry's `ugd info` page; ``brief`` (several kinds share the name): an entry whose parameters are
    declared lazily (their module imports torch) points to its own page instead of loading them."""
    console.print(f"[bold]{e.name}[/] ({e.kind}, plugin {e.plugin})\n{escape(e.description)}")
    if brief and callable(e.declared_params):
        console.print(f"parameters and an example: ugd info {name} --kind {e.kind}", highlight=False, markup=False)
        return
    if e.kind == "guide":
        console.print("differentiable: " + ("yes" if e.differentiable else "no (the sampler estimates its gradient without autograd)"))
    texts = None
    if e.kind == "backbone" and e.classes is not None:
        texts = ("--prompt as a class index where class-conditional (from its parameters)" if callable(e.classes)
                 else f"its class index 0..{e.classes - 1} as --prompt" if e.classes else "no prompt (unconditional)")
    elif e.kind == "backbone" and e.reads is not None:
        texts = ("what its model takes, known from its parameters" if callable(e.reads)
                 else " and ".join(f"--{r.replace('_', '-')}" for r in e.reads) or "no prompt (unconditional)")
    if texts is not None:
        console.print(f"reads: {texts}", highlight=False, markup=False)
    if e.kind == "preset":
        if e.source:
            console.print(f"source: {escape(e.source)}")
        t = Table("setting", "value")
        for k, v in e.settings.items():
            t.add_row(k, escape(repr(v)))
        console.print(t)
        console.print(f"example: {example_command(e, name)}", highlight=False, markup=False, soft_wrap=True)
        return
    if not e.params and e.kind != "guide":  # every guide has at least its weight
        console.print("parameters: none")
    else:
        t = Table("parameter", "type", "default", "help")
        for p in e.params:
            default = "[red]required[/]" if p.required else escape(repr(p.default))
            choices = f" (one of {', '.join(p.choices)})" if p.choices else ""
            t.add_row(p.name, p.type, default, escape(p.help + choices))
        if e.kind == "guide":
            t.add_row("weight", "float", "1.0", "weight of this guide in the sum of guides")
        console.print(t)
    console.print(f"example: {example_command(e, name)}", highlight=False, markup=False, soft_wrap=True)
    if any(p.type in ("str", "path") for p in e.params):
        console.print("""quote values holding commas: 'NAME:key="a,b"'""", highlight=False, markup=False)


@contextmanager
def _bar_on_first_update(description: str, note: str = "", waiting: str = "") -> Iterator[Callable[[int, int], None]]:
    """``update(done, total)`` for :func:`cli.run.generate_to_dir`; the bar (after ``note``, if
    any) appears with the first update, so an input error found before sampling stays a single line.
    ``waiting``: on a terminal, a transient line at once (torch and the models load before the first
    update); it vanishes at the first update or on an error."""
    bar: Any = None
    task: Any = None
    status = err_console.status(waiting) if waiting and err_console.is_terminal else None
    if status is not None:
        status.start()

    def update(done: int, total: int) -> None:
        nonlocal bar, task
        if bar is None:
            from cli.progress import progress_bar

            if status is not None:
                status.stop()
            if note:
                err_console.print(note, highlight=False, markup=False, soft_wrap=True)
            bar = progress_bar(err_console)
            bar.start()
            task = bar.add_task(description, total=total)
        bar.update(task, completed=done, total=total)

    try:
        yield update
    finally:
        if status is not None:
            status.stop()
        if bar is not None:
            bar.stop()


def _knob_value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def _overrides(pairs: list[str], **named: Any) -> dict[str, Any]:
    out = {k: v for k, v in named.items() if v is not None}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq:
            raise UgdError(f"--set {pair!r} is not KEY=VALUE; e.g. --set forward_window=[0,0.5]")
        out[key.strip()] = _knob_value(value)
    return out


# the options --from-spec takes beside the record: where and how to write, and where to run
FROM_SPEC_OPTIONS = frozenset({"from_spec", "single", "out", "overwrite", "resume", "ray", "device"})


def _given(ctx: typer.Context, name: str) -> bool:
    """Whether the user passed option ``name`` (on the command line or through the environment), even at its default."""
    source = ctx.get_parameter_source(name)  # an enum of the click that typer carries: compared by name
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")


@app.command()
@user_errors
def generate(
    ctx: typer.Context,
    guide: list[str] = typer.Option([], "--guide", "-g", help="NAME:key=value,... (repeatable; quote values with commas; weight=W scales a guide; PLUGIN:NAME picks a plugin's)"),
    backbone: str = typer.Option("digits", "--backbone", "-b", help="NAME[:key=value,...]"),
    preset: Optional[str] = typer.Option(None, "--preset", "-p", help="preset name (`ugd list`) or a preset JSON file (default: the backbone's)"),
    prompt: Optional[str] = typer.Option(None, help="text prompt (text backbones) or class label (class-conditional ones)"),
    negative_prompt: Optional[str] = typer.Option(None, help="negative prompt for classifier-free guidance"),
    steps: Optional[int] = typer.Option(None, min=1, help="number of sampling steps"),
    scheduler: Optional[str] = typer.Option(None, help="diffusers scheduler class or alias (like --set scheduler=NAME; default DDIM)"),
    dtype: Optional[str] = typer.Option(None, help="auto, fp32, fp16 or bf16 (like --set dtype=NAME)"),
    eta: Optional[float] = typer.Option(None, help="DDIM eta (0 = deterministic)"),
    cfg_scale: Optional[float] = typer.Option(None, help="classifier-free guidance scale (text backbones)"),
    forward_strength: Optional[float] = typer.Option(None, help="forward guidance strength s"),
    backward_steps: Optional[int] = typer.Option(None, help="backward guidance steps m (0 = off)"),
    backward_lr: Optional[float] = typer.Option(None, help="backward guidance step size"),
    recurrence: Optional[int] = typer.Option(None, help="self-recurrence k (1 = off)"),
    set_: list[str] = typer.Option([], "--set", help=f"any sampler setting KEY=VALUE (JSON values); keys: {', '.join(knob_names())}"),
    seed: int = typer.Option(0, help="seed of the first image; image i uses seed + i"),
    num_images: int = typer.Option(1, "--num-images", "-n", min=1, help="number of images"),
    batch_size: int = typer.Option(DEFAULT_BATCH_SIZE, min=1, help="images sampled together"),
    lanes: Optional[int] = typer.Option(None, min=1, help="batches sampled at once, each on its share of the torch threads (default: one per thread on a CPU, one on a GPU; a record keeps its lane's thread count, on which its pixels depend)", show_default=False),
    best_of: int = typer.Option(1, "--best-of", min=1, help="sample N candidates per image and keep the one with the lowest guide loss (each candidate's loss is recorded)"),
    device: str = typer.Option("cpu", help="cpu, cuda, cuda:N or auto"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="output folder (default: a new folder outputs/<date>/<NNNN>-<guide> per run)", show_default=False),
    overwrite: bool = typer.Option(False, help="replace existing output files"),
    from_spec: Optional[Path] = typer.Option(None, help="reproduce an image from its .json sidecar or .png (regenerates its batch)"),
    single: bool = typer.Option(False, help="with --from-spec: sample only that image (a batch of one: close to, not bit-exact with, the original)"),
    ray: Optional[str] = typer.Option(None, "--ray", help="run on a Ray cluster: 'local' or an address", show_default=False),
    resume: bool = typer.Option(False, help="keep images of this same spec already in --out, write only the missing ones (never rewrites one)"),
) -> None:
    """Generate guided images into a folder: one PNG per image carrying its full run spec (also in a
    JSON sidecar), a labelled contact sheet, and a one-line summary."""
    from cli.spec import RunSpec, validate_spec  # no torch yet: a bad input's one line comes at start-up speed

    if single and from_spec is None:
        raise UgdError("--single only applies to --from-spec; drop it or pass --from-spec IMAGE")
    if from_spec is not None:
        # every option the user gave (even at its default value) but those that say where and how to write, or where to run
        given = [p.name for p in ctx.command.params if p.name and p.name not in FROM_SPEC_OPTIONS and _given(ctx, p.name)]
        from cli.run import regenerate_from_record

        spec, message = regenerate_from_record(from_spec, single=single, device=device if _given(ctx, "device") else None)
        if given:
            flag = given[0].rstrip("_").replace("_", "-")
            raise UgdError(f"--from-spec reproduces the recorded settings, so --{flag} has no effect; drop it, or edit the spec file's JSON")
    else:
        knobs = _overrides(
            set_, num_steps=steps, scheduler=scheduler, dtype=dtype, eta=eta, cfg_scale=cfg_scale,
            forward_strength=forward_strength, backward_steps=backward_steps, backward_lr=backward_lr, recurrence=recurrence,
        )
        spec = RunSpec(
            backbone=backbone, guides=list(guide), preset=preset, overrides=knobs, prompt=prompt, negative_prompt=negative_prompt,
            seed=seed, num_images=num_images, batch_size=batch_size, device=device, best_of=best_of, lanes=lanes,
        )
        message = ""
        if ray is None:  # the checks generate_to_dir makes first, before torch and the plugins' modules load
            from cli.outputs import check_out_dir

            validate_spec(spec)
            if out is not None:
                check_out_dir(out)
    executor = None
    if ray is not None:
        from cli.distributed import RayExecutor

        executor = RayExecutor(address=ray)
    try:  # what --from-spec regenerates is said when sampling starts, once every input is known to be valid
        with _bar_on_first_update("sampling", message, "loading torch and the models") as update:
            from cli.run import generate_to_dir  # torch and the sampler: after every check that needs neither

            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", RuntimeWarning)
                summary = generate_to_dir(spec, out, executor, overwrite=overwrite, resume=resume, progress=update)
    except KeyboardInterrupt as exc:  # cli.run.RunInterrupted carries what was written
        done = getattr(exc, "summary", None)
        if done is None:
            raise
        again = "--resume" if out is not None else f"--resume --out {done.out}"
        images = f"{done.written} image{'s' * (done.written != 1)}"
        err_console.print(f"interrupted: {images} written to {done.out}; rerun with {again}", highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(130) from None
    for w in dict.fromkeys(str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)):
        err_console.print(f"[yellow]warning:[/] {escape(w)}", soft_wrap=True)
    if summary.failed or summary.diverged:  # the images were written (and recorded as failed), the run failed
        err_console.print(summary.line(), highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(1)
    console.print(summary.line(), highlight=False, markup=False, soft_wrap=True)


@app.command()
@user_errors
def bench(
    name: str = typer.Argument("digits", help="benchmark suite (`ugd list`)"),
    params: list[str] = typer.Option([], "--param", help="suite parameter KEY=VALUE (see `ugd info NAME`)"),
    quick: bool = typer.Option(False, help="few samples: a smoke run"),
    out: Path = typer.Option(Path("bench-out"), "--out", "-o", help="folder for the table, JSON and sample grids"),
    overwrite: bool = typer.Option(False, help="replace existing results in --out"),
    ray: Optional[str] = typer.Option(None, "--ray", help="run the cells on a Ray cluster: 'local' or an address", show_default=False),
    preset: list[str] = typer.Option([], "--preset", "-p", help="a preset name or file (e.g. from `ugd tune`) to run as a method; repeatable"),
) -> None:
    """Run a benchmark suite: tasks x methods -> a markdown table, a JSON file and PNG grids."""
    if ray is not None:
        from cli.distributed import require_ray

        require_ray()  # before any work: without Ray this is the install hint, exit 2
    reg = get_registry()
    given = dict(p.partition("=")[::2] for p in params)
    if quick:
        given["quick"] = "true"
    if preset:  # presets join the suite's `methods` parameter (alone, unless --param methods=... names more)
        if "methods" not in {p.name for p in reg.get("benchmark", name).params}:
            raise UgdError(f"benchmark {name!r} has no 'methods' parameter, so it cannot run --preset; see `ugd info {name}`")
        given["methods"] = ",".join([m for m in given.get("methods", "").split(",") if m] + preset)
    suite = reg.build("benchmark", name, given)
    table = out / "results.md"
    if table.exists() and not overwrite:
        raise UgdError(f"{table} already exists; pass --overwrite or choose another --out")
    from cli.bench import seeds_outside

    outside = seeds_outside(getattr(suite, "seeds", ()), "reported")
    if outside and not quick:  # allowed (pilots, smoke runs), but said: a table on other seeds is not a reported result
        err_console.print(f"note: {outside}: this table is not a reported result", markup=False, highlight=False, soft_wrap=True)
    if ray is not None:
        from cli.distributed import run_bench_on_ray, suite_factory_for

        out.mkdir(parents=True, exist_ok=True)
        result = run_bench_on_ray(suite, out, address=ray, suite_factory=suite_factory_for(name, given), console=err_console)
    else:
        from cli.progress import progress_bar

        out.mkdir(parents=True, exist_ok=True)
        with progress_bar(err_console) as progress:
            result = suite(out, progress)
    console.print(result.get("markdown", ""))
    if quick:
        console.print("--quick is a smoke test (few samples, one seed, few steps): its numbers check that the suite runs, "
                      "they measure nothing; run without --quick for results", highlight=False, markup=False, soft_wrap=True)
    console.print(f"wrote {table}")


@app.command()
@user_errors
def tune(
    name: str = typer.Argument("digits", help="benchmark suite (`ugd list`)"),
    task: Optional[str] = typer.Option(None, help="task of the suite to tune for (default: its first)"),
    params: list[str] = typer.Option([], "--param", help="suite parameter KEY=VALUE (see `ugd info NAME`)"),
    strategy: str = typer.Option("random", help="random (Ray Tune + ASHA), optuna (Ray Tune TPE + ASHA) or beam (TFG's beam search)"),
    preset: Optional[str] = typer.Option(None, "--preset", "-p", help="starting point: a suite method, preset name or file (default: tfg for beam, else ugd)"),
    knobs: Optional[str] = typer.Option(None, help="comma-separated knobs to search (default: forward_strength, forward_schedule, backward_steps, backward_lr, recurrence, windows, smoothing_std; beam: forward_strength, backward_lr, smoothing_std)"),
    trials: int = typer.Option(16, min=1, help="settings to try (beam: at most this many)"),
    samples: int = typer.Option(16, min=1, help="samples per seed for each setting"),
    seeds: int = typer.Option(2, min=1, help="seeds per setting (seed, seed+1, ...); each is one ASHA rung"),
    seed: int = typer.Option(SEED_RANGES["tuning"][0], help="first evaluation seed (tuning seeds are 300-399; reported ones 1000-1999)"),
    quality_factor: float = typer.Option(1.5, help="keep quality <= this x the unguided quality (FID-like, lower is better)"),
    rounds: int = typer.Option(3, min=1, help="beam: rounds of multiplying rho/mu/gamma by 2/2/10"),
    beam_width: int = typer.Option(2, min=1, help="beam: settings kept per round"),
    search_seed: int = typer.Option(0, help="seed of the random / TPE search"),
    out: Path = typer.Option(Path("tune-out"), "--out", "-o", help="folder for trials.json, pareto.md/json and best-preset.json"),
    overwrite: bool = typer.Option(False, help="replace existing results in --out"),
    ray: Optional[str] = typer.Option(None, "--ray", help="Ray cluster: 'local' or an address (random/optuna start a local one by default)", show_default=False),
) -> None:
    """Tune sampler knobs for one benchmark task: best metric within a quality budget; writes a preset file."""
    from cli.distributed import require_ray, suite_factory_for
    from cli.tune import tune_suite

    if ray is not None or strategy != "beam":
        require_ray()  # before any work: without Ray this is the install hint, exit 2
    given = dict(p.partition("=")[::2] for p in params)
    suite = get_registry().build("benchmark", name, given)
    result = tune_suite(
        suite, task, strategy=strategy, base=preset, knobs=knobs, trials=trials, samples=samples,
        seeds=[seed + i for i in range(seeds)], quality_factor=quality_factor, rounds=rounds, beam_width=beam_width,
        out_dir=out, overwrite=overwrite, address=ray, suite_factory=suite_factory_for(name, given), suite_name=name,
        console=err_console, search_seed=search_seed,
    )
    console.print(result.markdown, soft_wrap=True, markup=False, highlight=False)
    console.print(f"wrote {result.files['preset']} (use: ugd generate --preset {result.files['preset']} ...)", soft_wrap=True, markup=False, highlight=False)


@app.command()
@user_errors
def ui(
    host: str = typer.Option("127.0.0.1", help="address to serve on (127.0.0.1: this machine only)"),
    port: int = typer.Option(7860, min=1, max=65535, help="port to serve on"),
    share: bool = typer.Option(False, "--share/--no-share", help="also open a public gradio.live link (needs the internet; off by default)"),
) -> None:
    """Serve the browser UI: compose guides, watch guidance as it happens, get the same PNGs as `generate`."""
    from cli.ui import serve

    # a port in use is one line before anything is built or printed
    serve(host=host, port=port, share=share, announce=lambda url: console.print(f"ugd ui on {url} (Ctrl-C stops)", highlight=False, markup=False))


def main() -> None:
    """Console-script entry point."""
    app(prog_name="ugd")


if __name__ == "__main__":
    main()
    sys.exit(0)
