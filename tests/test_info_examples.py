"""Every example `ugd info` prints runs.

Each registered guide's, backbone's and preset's example command (cli.main.example_command, the line
`ugd info NAME` prints) goes through the real command line: Typer's parsing, the RunSpec the command
builds, and the complete validation a run does before any work (names, parameters, preset, sampler
settings, output folder). Examples on the digits backbones (DDPM and flow) also run for real, 2 steps and 1
image (a few here; every one with `pytest -m slow`). Examples whose backbone needs weights this machine does not have
(Stable Diffusion, ADM, a Hub model: nothing is downloaded) are checked only up to that point: a real run
would stop at the one-line weights error.
"""

import shlex
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

import cli.run
from cli.main import DEFAULT_BACKBONE, app, example_command
from cli.spec import DEFAULT_BACKBONE as SPEC_DEFAULT_BACKBONE
from ugd_core.registry import load_registry

runner = CliRunner()
REGISTRY = load_registry()
EXAMPLES = [(kind, name) for kind in ("guide", "backbone", "preset") for name in REGISTRY.entries[kind]]
RUN_FOR_REAL = {("guide", "digit-box"), ("backbone", "digits"), ("preset", "ugd")}  # the rest: `pytest -m slow`
LOCAL_BACKBONES = {DEFAULT_BACKBONE, "digits-flow"}  # their weights ship with the digits plugin


def test_the_default_backbone_is_named_once():
    assert DEFAULT_BACKBONE == SPEC_DEFAULT_BACKBONE


@pytest.fixture()
def installed(monkeypatch):
    from ugd_core import registry as registry_module

    monkeypatch.setattr(registry_module, "_DEFAULT", REGISTRY)


def _example(kind: str, name: str) -> tuple[str, list[str], bool]:
    """The example command, the `ugd generate` arguments of a 2-step 1-image run, and whether it is on digits."""
    command = example_command(REGISTRY.get(kind, name), name)
    shown = runner.invoke(app, ["info", name], env={"COLUMNS": "500"})
    assert shown.exit_code == 0 and f"example: {command}" in shown.output, shown.output
    argv = shlex.split(command)
    assert argv[:2] == ["ugd", "generate"] and "NAME" not in argv, command
    backbone = argv[argv.index("--backbone") + 1] if "--backbone" in argv else DEFAULT_BACKBONE
    return command, [*argv[1:], "--steps", "2", "-n", "1"], backbone.split(":")[0] in LOCAL_BACKBONES


@pytest.mark.parametrize("kind,name", EXAMPLES, ids=[f"{k}-{n}" for k, n in EXAMPLES])
def test_every_info_example_is_a_valid_command(kind, name, tmp_path, installed, monkeypatch):
    command, args, on_digits = _example(kind, name)
    checked = []

    def validate_only(spec, out=None, executor=None, **_):  # everything generate_to_dir checks before any work
        checked.append(cli.run.validate_spec(spec, REGISTRY))
        cli.run.check_out_dir(out)
        return SimpleNamespace(line=lambda: "validated", failed=0, diverged=0)

    monkeypatch.setattr(cli.run, "generate_to_dir", validate_only)
    res = runner.invoke(app, [*args, "--out", str(tmp_path / "out")])
    assert res.exit_code == 0 and len(checked) == 1, f"{command}: {res.output}"


@pytest.mark.parametrize("kind,name", sorted(RUN_FOR_REAL))
def test_info_examples_run(kind, name, tmp_path, installed):
    assert _run(kind, name, tmp_path).is_file()


@pytest.mark.slow
@pytest.mark.parametrize("kind,name", EXAMPLES, ids=[f"{k}-{n}" for k, n in EXAMPLES])
def test_every_digits_info_example_runs(kind, name, tmp_path, installed):
    assert _run(kind, name, tmp_path).is_file()


def _run(kind: str, name: str, tmp_path) -> Path:
    """Run an example that can run here (else skip); the path of its first image."""
    command, args, on_digits = _example(kind, name)
    if not on_digits:
        pytest.skip(f"{command}: needs weights this machine does not have")
    out = tmp_path / "run"
    res = runner.invoke(app, [*args, "--out", str(out)])
    assert res.exit_code == 0, f"{command}: {res.output}"
    return out / "ugd-000000.png"
