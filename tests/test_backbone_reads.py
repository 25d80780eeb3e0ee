"""A backbone may declare which texts it reads (`reads=` at registration; docs/plugins.md): a prompt or negative prompt
it would ignore is then one line before any work, instead of an error after its weights load (or, for FLUX.1's
negative prompt, a run whose record names an input that did nothing)."""

from __future__ import annotations

import types

import pytest
from typer.testing import CliRunner

from cli.main import app
from cli.spec import RunSpec, validate_spec
from ugd_core import UgdError, hookimpl, load_registry


def registry_of(**reads):  # type: ignore[no-untyped-def]
    """Backbones named after their `reads` (None: undeclared), never built."""
    plugin = types.ModuleType("ugd_test_reads")

    def register_backbones(register):  # type: ignore[no-untyped-def]
        for name, r in reads.items():
            register(name, lambda **_: None, description=name, reads=r)

    plugin.ugd_register_backbones = hookimpl(register_backbones)
    return load_registry([("reads", plugin)], entry_points=False)


@pytest.mark.parametrize("backbone, prompt, negative, refused", [
    ("uncond", "a cat", None, "--prompt"),
    ("uncond", None, "blurry", "--negative-prompt"),
    ("prompt_only", None, "blurry", "--negative-prompt"),
    ("prompt_only", "a cat", None, None),
    ("both", "a cat", "blurry", None),
    ("undeclared", "a cat", "blurry", None),  # the backbone checks them itself when it conditions the run
    ("uncond", "", "", None),
])
def test_a_text_the_backbone_does_not_read_is_refused_by_the_check(backbone, prompt, negative, refused):
    reg = registry_of(uncond=(), prompt_only=("prompt",), both=("prompt", "negative_prompt"), undeclared=None)
    spec = RunSpec(backbone=backbone, guides=[], prompt=prompt, negative_prompt=negative)
    if refused is None:
        validate_spec(spec, reg)
        return
    with pytest.raises(UgdError, match=f"backbone {backbone!r} reads no .*: it would be ignored; drop {refused}$") as err:
        validate_spec(spec, reg)
    assert "\n" not in str(err.value)


def test_reads_may_name_only_the_two_texts():
    reg = registry_of(odd=("prompt", "image"))
    assert "odd" not in reg.entries["backbone"]
    assert any("reads=('prompt', 'image') may name only prompt, negative_prompt" in p for p in reg.problems)


def test_the_shipped_backbones_declare_what_they_read():
    """digits and digits-flow are unconditional; SD 1.x/2.x/XL and SD3 read both texts; FLUX.1 only the prompt (no CFG
    batch); adm and diffusers-pixel check a class index themselves (whether a release or a UNet takes one is known only
    from its config)."""
    reg = load_registry()
    want = {"digits": (), "digits-flow": (), "stable-diffusion": ("prompt", "negative_prompt"),
            "stable-diffusion-xl": ("prompt", "negative_prompt"), "stable-diffusion-3": ("prompt", "negative_prompt"),
            "flux": ("prompt",), "adm": None, "diffusers-pixel": None}
    assert {name: reg.get("backbone", name).reads for name in want} == want


def test_ugd_generate_refuses_a_prompt_for_digits_before_any_work(tmp_path):
    """README: every bad input is one line and exit 2, before any work (no output folder)."""
    result = CliRunner().invoke(app, ["generate", "--guide", "digit-robust:label=7", "--prompt", "a seven", "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "backbone 'digits' reads no prompt: it would be ignored; drop --prompt" in result.output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("backbone, line", [("flux", "reads: --prompt\n"), ("digits", "reads: no prompt (unconditional)\n"),
                                            ("stable-diffusion", "reads: --prompt and --negative-prompt\n")])
def test_ugd_info_says_what_a_backbone_reads(backbone, line):
    result = CliRunner().invoke(app, ["info", backbone])
    assert result.exit_code == 0 and line in result.output
    assert "reads:" not in CliRunner().invoke(app, ["info", "adm"]).output  # it checks its class index itself
