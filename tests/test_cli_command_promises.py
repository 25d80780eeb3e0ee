"""What `ugd list` and `ugd info` show, the one-line errors of every command, and the SDK's package surface
(lazy exports, the hooks' helpers, the test helpers), as README.md and docs/plugins.md promise them."""

import json
import os
import subprocess
import sys
import types
import warnings
from types import SimpleNamespace

import pytest
import torch
from typer.testing import CliRunner

import ugd_core
from cli.main import app, first_sentence
from ugd_core import Param, hookimpl, make_guide
from ugd_core import registry as registry_module
from ugd_core.errors import UgdWarning
from ugd_core.hookspecs import register_preset_table

runner = CliRunner()
WIDE = {"COLUMNS": "250"}


def _guide(level: float = 0.25, device: str = "cpu"):
    return make_guide("toy", f=lambda x: x.mean(dim=(1, 2, 3)), loss=lambda m, c: (m - c) ** 2, target=level)


def _toy_plugin():
    mod = types.ModuleType("toyplug")

    def guides(register):
        register("toy-bright", _guide, description="Mean brightness (e.g. level 0.5. or so); a toy. More text here.",
                 params=[Param("level", "float", 0.25, "target level")])
        register("toy-hard", _guide, description="brightness through numpy", differentiable=False,
                 params=[Param("level", "float", 0.25, "target level")])
        register("toy-choice", _guide, description="a guide with choices",
                 params=[Param("mode", "str", "soft", "how", choices=["soft", "hard"]),
                         Param("box", "str", "", "a box", example="1,2,3,4")])
        register("toy-num", _guide, description="a guide with a number only", params=[Param("level", "float", 0.25, "target level")])
        register("toy-twin", _guide, description="a guide sharing its name with a preset", params=[Param("level", "float", 0.625, "lvl")])

    def backbones(register):
        register("toy-bb", lambda device="cpu": None, description="a backbone without parameters")

    def presets(register):
        register_preset_table(register, {"toy-preset": ("a toy preset", {"forward_strength": 0.375}, "Toy et al. 2099"),
                                         "toy-twin": ("a preset sharing its name with a guide", {"eta": 0.875}, "")},
                              "--guide toy-bright:level=0.5")

    def benchmarks(register):
        register("toy-bench", lambda **kw: None, description="a toy suite",
                 params=[Param("quick", "bool", False, "few samples"), Param("n", "int", required=True, help="count", example="3")])

    mod.ugd_register_guides = hookimpl(guides)
    mod.ugd_register_backbones = hookimpl(backbones)
    mod.ugd_register_presets = hookimpl(presets)
    mod.ugd_register_benchmarks = hookimpl(benchmarks)
    return mod


def _broken_plugin():
    mod = types.ModuleType("brokenplug")

    def guides(register):
        raise RuntimeError("cannot find its weights")

    mod.ugd_register_guides = hookimpl(guides)
    return mod


def _clashing_plugin():
    mod = types.ModuleType("clashplug")

    def guides(register):
        register("toy-num", _guide, description="the same name again")

    mod.ugd_register_guides = hookimpl(guides)
    return mod


@pytest.fixture()
def toy(monkeypatch):
    reg = registry_module.load_registry(entry_points=False)
    reg.add_plugin(_toy_plugin(), "toyplug", "9.8.7")
    reg.add_plugin(_broken_plugin(), "brokenplug", "1.0")
    monkeypatch.setattr(registry_module, "_DEFAULT", reg)
    return reg


def _row(output: str, name: str) -> str:
    return next(line for line in output.splitlines() if f"│ {name} " in line)


# ---- ugd list --------------------------------------------------------------------------------------------


def test_list_shows_each_items_plugin_and_each_plugins_version(toy):
    """README "Use": `ugd list` shows plugins (with versions) and the items, one line each; docs/plugins.md §1:
    the plugin's name is shown for its items."""
    res = runner.invoke(app, ["list"], env=WIDE)
    assert res.exit_code == 0, res.output
    assert "9.8.7" in _row(res.output, "toyplug")
    assert "toyplug" in _row(res.output, "toy-bright") and "toyplug" in _row(res.output, "toy-bench")


def test_list_shows_a_broken_plugin_with_its_error(toy, monkeypatch):
    """docs/plugins.md §5: a plugin whose hook raises is listed as broken in `ugd list` with its error."""
    import cli.main

    monkeypatch.setattr(cli.main.console, "size", (250, 50))  # one line a row, whatever width another test left
    res = runner.invoke(app, ["list"], env=WIDE)
    assert res.exit_code == 0, res.output
    row = _row(res.output, "brokenplug")
    assert "broken" in row and "cannot find its weights" in row
    assert "ok" in _row(res.output, "toyplug")


def test_list_json_names_the_plugin_of_each_item_and_a_broken_plugins_error(toy):
    """`ugd list --json`: the same facts, machine-readable (every item's plugin, every plugin's error)."""
    res = runner.invoke(app, ["list", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["guides"]["toy-bright"]["plugin"] == "toyplug" and data["presets"]["auto"]["plugin"] == "ugd"
    assert "cannot find its weights" in data["plugins"]["brokenplug"]["error"] and data["plugins"]["toyplug"]["error"] == ""
    assert data["plugins"]["toyplug"]["version"] == "9.8.7"


def test_list_marks_a_non_differentiable_guide_and_only_it(toy):
    """docs/plugins.md §4: a non-differentiable guide gets a zero-order gradient; `ugd list` says so on its line."""
    res = runner.invoke(app, ["list"], env=WIDE)
    assert "(non-differentiable: zero-order gradient)" in _row(res.output, "toy-hard")
    assert "non-differentiable" not in _row(res.output, "toy-num")


def test_list_warns_about_a_name_two_plugins_register(toy):
    """docs/plugins.md §6: `ugd list` shows both rows and a warning."""
    toy.add_plugin(_clashing_plugin(), "clashplug")
    res = runner.invoke(app, ["list"], env=WIDE)
    assert res.exit_code == 0, res.output
    assert any(line.startswith("warning:") and "toy-num" in line for line in res.output.splitlines())


@pytest.mark.parametrize("text, first", [
    ("Mean brightness; a toy. More.", "Mean brightness"),
    ("Mean brightness (e.g. level 0.5. or so; twice) of x. More.", "Mean brightness (e.g. level 0.5. or so; twice) of x"),
    ("One sentence only.", "One sentence only"),
    ("Version 1.5 of it. Next", "Version 1.5 of it"),
])
def test_list_shows_a_descriptions_first_sentence(text, first):
    """cli/main.py first_sentence: up to a '. ' or '; ' outside parentheses is what `ugd list` shows per item."""
    assert first_sentence(text) == first


def test_list_row_is_the_first_sentence_of_the_description(toy):
    """README "Use": `ugd list` gives one line per item; `ugd info` the rest."""
    row = _row(runner.invoke(app, ["list"], env=WIDE).output, "toy-bright")
    assert "Mean brightness (e.g. level 0.5. or so)" in row and "a toy" not in row


# ---- ugd info --------------------------------------------------------------------------------------------


def test_info_shows_defaults_choices_and_the_weight_every_guide_takes(toy):
    """README "Use": `ugd info NAME` shows its parameters, defaults and an example; docs/plugins.md §3: every guide
    also gets a `weight` (default 1.0)."""
    res = runner.invoke(app, ["info", "toy-choice"], env=WIDE)
    assert res.exit_code == 0, res.output
    assert "(one of soft, hard)" in _row(res.output, "mode") and "'soft'" in _row(res.output, "mode")
    assert "1.0" in _row(res.output, "weight")
    num = runner.invoke(app, ["info", "toy-num"], env=WIDE).output
    assert "0.25" in _row(num, "level")


def test_info_shows_whether_a_guide_is_differentiable(toy):
    """docs/plugins.md §4: a guide registered with differentiable=False gets its gradient estimated."""
    assert "differentiable: no" in runner.invoke(app, ["info", "toy-hard"], env=WIDE).output
    assert "differentiable: yes" in runner.invoke(app, ["info", "toy-num"], env=WIDE).output


def test_info_example_shows_an_optional_parameters_example_quoted(toy):
    """docs/plugins.md §3: `example` of an optional parameter is put in the example command, quoted when it
    holds commas (`'digit-box:box="4,4,20,28"'`); users quote values that hold commas."""
    res = runner.invoke(app, ["info", "toy-choice"], env=WIDE)
    assert """example: ugd generate --guide 'toy-choice:box="1,2,3,4"'""" in res.output
    assert "quote values holding commas" in res.output  # a str parameter: the hint


def test_info_of_a_number_only_guide_gives_no_quoting_hint(toy):
    """The quoting hint is for str/path values only (cli/main.py _describe)."""
    assert "quote values" not in runner.invoke(app, ["info", "toy-num"], env=WIDE).output


def test_info_of_an_item_without_parameters_says_so(toy):
    """`ugd info` lists the parameters: none is said, not left blank."""
    res = runner.invoke(app, ["info", "toy-bb"], env=WIDE)
    assert res.exit_code == 0 and "parameters: none" in res.output and "example: ugd generate --backbone toy-bb" in res.output


def test_info_of_a_name_two_kinds_share_describes_each_in_full(toy):
    """cli/main.py info: a name that several kinds share shows each of them (only an entry whose parameters are
    declared lazily points to its own page instead)."""
    res = runner.invoke(app, ["info", "toy-twin"], env=WIDE)
    assert res.exit_code == 0, res.output
    assert "toy-twin (guide, plugin toyplug)" in res.output and "toy-twin (preset, plugin toyplug)" in res.output
    assert "0.625" in _row(res.output, "level") and "0.875" in _row(res.output, "eta")
    assert "example: ugd generate --guide toy-twin" in res.output and "example: ugd generate --preset toy-twin" in res.output


@pytest.mark.parametrize("name", ["toyplug:toy-twin", "toy-twin"])
def test_info_kind_picks_one_item_by_name_or_plugin_name(toy, name):
    """docs/plugins.md §6: `ugd info PLUGIN:NAME` picks an item; `--kind` picks one of the kinds that share a name."""
    res = runner.invoke(app, ["info", name, "--kind", "preset"], env=WIDE)
    assert res.exit_code == 0, res.output
    assert "toy-twin (preset, plugin toyplug)" in res.output and "(guide," not in res.output


def test_info_of_a_preset_shows_its_values_its_source_and_its_example(toy):
    """docs/presets.md: `ugd info NAME` prints a preset: its settings, where they come from, an example."""
    res = runner.invoke(app, ["info", "toy-preset"], env=WIDE)
    assert res.exit_code == 0, res.output
    assert "0.375" in _row(res.output, "forward_strength") and "source: Toy et al. 2099" in res.output
    assert "example: ugd generate --preset toy-preset --guide toy-bright:level=0.5" in res.output


def test_register_preset_table_takes_one_example_per_table_or_per_name():
    """ugd_core/hookspecs.py register_preset_table: `examples` is one text for the whole table or one per name."""
    seen = {}
    table = {"a": ("first", {}, "src a"), "b": ("second", {}, "src b")}
    register_preset_table(lambda name, settings, **kw: seen.__setitem__(name, kw), table, "--guide g")
    assert [seen[n]["example"] for n in "ab"] == ["--guide g", "--guide g"]
    assert seen["a"]["source"] == "src a" and seen["b"]["description"] == "second"
    register_preset_table(lambda name, settings, **kw: seen.__setitem__(name, kw), table, {"a": "--guide h"})
    assert [seen[n]["example"] for n in "ab"] == ["--guide h", ""]


def test_info_of_a_benchmark_example_is_a_quick_run_with_its_required_parameters(toy):
    """cli/main.py example_command: benchmarks get `ugd bench NAME`, a smoke run (--quick, README "Use") when the
    suite has that parameter, with every required parameter given."""
    res = runner.invoke(app, ["info", "toy-bench"], env=WIDE)
    assert res.exit_code == 0, res.output
    assert "example: ugd bench toy-bench --quick --param n=3" in res.output


def test_info_shows_that_the_diffusers_pixel_backbone_needs_a_model(toy):
    """ugd_core/builtin.py: the generic diffusers backbone needs its folder or Hub id (`model`, required)."""
    res = runner.invoke(app, ["info", "diffusers-pixel"], env=WIDE)
    assert "required" in _row(res.output, "model")
    assert "example: ugd generate --backbone diffusers-pixel:model=google/ddpm-cifar10-32" in res.output


def test_low_memory_is_registered_with_every_memory_knob(toy):
    """ugd_core/builtin.py, docs/presets.md: low-memory is auto with checkpointing, slicing and tiling on."""
    settings = toy.entries["preset"]["low-memory"].settings
    assert settings["grad_checkpointing"] is settings["vae_slicing"] is settings["vae_tiling"] is True


# ---- one-line errors, exit status 2 --------------------------------------------------------------------


@pytest.mark.parametrize("args, message", [
    (["info", "toy-num", "--kind", "bogus"], "error: --kind 'bogus' is not one of guide, backbone, preset, benchmark"),
    (["info", "toy-num", "--kind", "preset"], "error: no preset 'toy-num'; `ugd list` shows the presets available"),
])
def test_a_bad_info_kind_is_one_line_naming_the_choice(toy, args, message):
    """cli/main.py: every user error is one line naming the problem and the fix, exit status 2."""
    res = runner.invoke(app, args, env=WIDE)
    assert res.exit_code == 2 and res.output.strip() == message


@pytest.mark.parametrize("args, where", [(["generate", "-n", "0"], "ugd generate"), (["info"], "ugd info"), (["list", "--bogus"], "ugd list")])
def test_a_usage_error_points_to_its_commands_help(args, where):
    """cli/main.py OneLineErrors: Typer's usage errors end in `error: ...; see `ugd CMD --help``, exit status 2."""
    res = runner.invoke(app, args, prog_name="ugd", env=WIDE)
    assert res.exit_code == 2 and res.output.strip().count("\n") == 0, res.output
    assert res.output.rstrip().endswith(f"see `{where} --help`")


def test_a_fallback_warning_is_printed_and_the_run_succeeds(monkeypatch, tmp_path):
    """ugd_core/errors.py UgdWarning: a fallback the user should know about; the CLI prints it as `warning: ...`."""
    import cli.run

    def fake_run(spec, out=None, executor=None, **_):
        warnings.warn(UgdWarning("fell back to fp32; pass --dtype fp32 to choose it"), stacklevel=1)
        return SimpleNamespace(line=lambda: "done", failed=0, diverged=0)

    monkeypatch.setattr(cli.run, "generate_to_dir", fake_run)
    res = runner.invoke(app, ["generate", "--guide", "digit:label=3", "--out", str(tmp_path / "o")], env=WIDE)
    assert res.exit_code == 0, res.output
    assert "warning: fell back to fp32; pass --dtype fp32 to choose it" in res.output


# ---- the SDK's package surface -------------------------------------------------------------------------


def test_every_exported_name_resolves_and_every_lazy_name_is_exported():
    """ugd_core/__init__.py: `__all__` is the SDK; each name (the lazily loaded ones included) is importable."""
    for name in ugd_core.__all__:
        assert getattr(ugd_core, name) is not None, name
    lazy = {"Backbone", "BackboneBase", "CallableBackbone", "DiffusersPixelBackbone", "to_epsilon", "SamplerConfig",
            "load_preset_file", "save_preset_file", "Guide", "GuidanceFunction", "GuideSet", "WeightedGuide", "freeze",
            "guide_loss", "NoiseSchedule", "SampleResult", "StepKnobs", "ddim_step", "predict_x0", "sample", "self_recurrence"}
    assert lazy - {"Guide"} <= set(ugd_core.__all__)  # the TYPE_CHECKING names of ugd_core/__init__.py
    assert not hasattr(ugd_core, "no_such_name")  # an unknown name is an AttributeError, as for any module


def test_importing_the_sdk_lists_the_lazy_names_loads_no_torch_and_keeps_the_users_omp_policy():
    """ugd_core/__init__.py: importing it does not import torch, every other name loads on first use (dir() lists
    them, ugd_core/lazy.py); OMP_WAIT_POLICY=ACTIVE in the environment keeps the spinning (PASSIVE otherwise)."""
    code = ("import os, sys, ugd_core\n"
            "print('sample' in dir(ugd_core), 'SamplerConfig' in dir(ugd_core), 'torch' in sys.modules, os.environ['OMP_WAIT_POLICY'])")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    active = subprocess.run([sys.executable, "-c", code], env={**env, "OMP_WAIT_POLICY": "ACTIVE"}, capture_output=True, text=True, timeout=120)
    assert active.stdout.split() == ["True", "True", "False", "ACTIVE"], active.stderr
    unset = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert unset.stdout.split()[-1] == "PASSIVE", unset.stderr


def test_make_guide_passes_timestep_awareness_through():
    """docs/plugins.md §4: `make_guide(..., timestep_aware=True)`: f receives (x, t)."""
    seen = []
    g = make_guide("t", f=lambda x, t: seen.append(t) or x.mean(dim=(1, 2, 3)), loss=lambda m, c: m, timestep_aware=True)
    g.f(torch.zeros(2, 1, 4, 4), torch.tensor([7, 7]))
    assert g.timestep_aware and seen and seen[0].tolist() == [7, 7]


# ---- ugd_core/testing.py: the helpers other tests trust -------------------------------------------------


def test_gaussian_eps_is_tweedies_formula():
    """ugd_core/testing.py gaussian_eps: the exact E[eps | z_t] of x0 ~ N(mu, std^2); by Tweedie's formula
    E[eps | z] = -sqrt(1 - a) d/dz log p(z), with z ~ N(sqrt(a) mu, a std^2 + 1 - a)."""
    from ugd_core.testing import gaussian_eps

    a_all = torch.tensor([0.9, 0.5, 0.1], dtype=torch.float64)
    mu, std = 0.2, 0.5
    eps = gaussian_eps(a_all, mu, std)
    z = torch.linspace(-2, 2, 3 * 4, dtype=torch.float64).view(3, 1, 2, 2).requires_grad_()
    a = a_all.view(-1, 1, 1, 1)
    logp = torch.distributions.Normal(a.sqrt() * mu, (a * std**2 + 1 - a).sqrt()).log_prob(z).sum()
    (score,) = torch.autograd.grad(logp, z)
    assert torch.allclose(eps(z.detach(), torch.arange(3)), -(1 - a).sqrt() * score, atol=1e-12)


def test_linear_ddpm_schedule_is_diffusers_linear_betas_and_leading_ddim_steps():
    """ugd_core/testing.py LinearDDPMSchedule: what the sampler reads from a scheduler (DDPM linear betas, DDIM
    'leading' steps), checked against diffusers' DDIMScheduler."""
    from diffusers import DDIMScheduler

    from ugd_core.testing import LinearDDPMSchedule

    ours = LinearDDPMSchedule()
    ref = DDIMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
                        timestep_spacing="leading", steps_offset=0)
    assert torch.allclose(ours.alphas_cumprod, ref.alphas_cumprod, rtol=1e-5)
    ours.set_timesteps(10)
    ref.set_timesteps(10)
    assert ours.timesteps.tolist() == ref.timesteps.tolist()


def test_loss_scaled_multiplies_the_loss():
    """ugd_core/testing.py loss_scaled: the same guide with its loss multiplied by c (the loss-scale probe)."""
    from ugd_core.testing import loss_scaled

    g = _guide(0.1)
    x = torch.full((2, 1, 2, 2), 0.6)
    out = g.f(x)
    assert torch.allclose(loss_scaled(g, 3.0).loss_fn(out, g.target), 3.0 * g.loss_fn(out, g.target))


# ---------------------------------------------------------------------- two bugs the audit found, fixed


@pytest.fixture()
def bare_guide(monkeypatch):
    mod = types.ModuleType("bareplug")

    def guides(register):
        register("toy-bare", lambda device="cpu": make_guide("bare", f=lambda x: x.mean(dim=(1, 2, 3)), loss=lambda m, c: m**2),
                 description="a guide that declares no parameters")

    mod.ugd_register_guides = hookimpl(guides)
    reg = registry_module.load_registry([("bareplug", mod)], entry_points=False)
    monkeypatch.setattr(registry_module, "_DEFAULT", reg)


def test_info_of_a_guide_without_declared_parameters_still_shows_its_weight(bare_guide):
    """docs/plugins.md §3: "Every guide also gets a `weight` parameter (default 1.0)"; README "Use": `ugd info NAME`
    shows all of its parameters. A guide that declares none gets only "parameters: none"."""
    res = runner.invoke(app, ["info", "toy-bare"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "weight" in res.output, res.output


@pytest.mark.parametrize("args, where", [(["generate", "--steps"], "ugd generate"), (["bench", "--quick=3"], "ugd bench")])
def test_an_option_missing_or_given_a_value_points_to_its_commands_help(args, where):
    """cli/main.py OneLineErrors: Typer's usage errors end in `error: ...; see `ugd CMD --help``, exit status 2.
    An option given without its value (or a flag given one) points to `ugd --help`, which does not list it."""
    res = runner.invoke(app, args, prog_name="ugd", env={"COLUMNS": "300"})
    assert res.exit_code == 2 and res.output.strip().count("\n") == 0, res.output
    assert res.output.rstrip().endswith(f"see `{where} --help`"), res.output


def test_a_first_sentence_does_not_end_at_an_abbreviation():
    """`ugd list` shows a description's first sentence; "e.g." and "i.e." end none (the diffusers-pixel row was cut
    at "e.g")."""
    assert first_sentence("A folder (or Hub id), e.g. a DDPM. More here.") == "A folder (or Hub id), e.g. a DDPM"
    assert first_sentence("Shares, i.e. weights; then more.") == "Shares, i.e. weights"
