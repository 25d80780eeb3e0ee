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
    ("uncond", "a cat", "blurry", "--prompt"),  # both ignored: the line names the prompt first, in every process
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
    batch); adm and diffusers-pixel say from their parameters (whether a release or a UNet takes a class index is in
    its flags or config.json)."""
    reg = load_registry()
    want = {"digits": (), "digits-flow": (), "stable-diffusion": ("prompt", "negative_prompt"),
            "stable-diffusion-xl": ("prompt", "negative_prompt"), "stable-diffusion-3": ("prompt", "negative_prompt"),
            "flux": ("prompt",)}
    assert {name: reg.get("backbone", name).reads for name in want} == want
    assert callable(reg.get("backbone", "adm").reads) and callable(reg.get("backbone", "diffusers-pixel").reads)


def test_a_reads_function_decides_from_the_parameters_and_may_name_only_the_two_texts():
    """reads= may be a function of the backbone's (resolved) parameters; what it returns is checked like a tuple; None
    leaves the texts to the backbone."""
    reg = registry_of(fn=lambda **p: ("prompt",) if p else (), odd=lambda **p: ("image",), unsure=lambda **p: None)
    validate_spec(RunSpec(backbone="unsure", guides=[], prompt="a cat", negative_prompt="blurry"), reg)
    with pytest.raises(UgdError, match="backbone 'fn' reads no prompt: it would be ignored; drop --prompt$"):
        validate_spec(RunSpec(backbone="fn", guides=[], prompt="a cat"), reg)
    with pytest.raises(UgdError, match=r"plugin 'reads', backbone 'odd': its reads function returned \('image',\); it may name only"):
        validate_spec(RunSpec(backbone="odd", guides=[]), reg)


def _no_load(*args, **kwargs):  # type: ignore[no-untyped-def]
    raise AssertionError("the weights were loaded before the prompt was checked")


def test_adm_refuses_a_prompt_for_an_unconditional_release_before_loading_it(monkeypatch):
    """adm: a class-conditional release reads its class index as the prompt (README, the adm backbone's description);
    an unconditional one reads none, which is one line before its checkpoint is looked for or loaded."""
    import ugd_adm.backbone

    monkeypatch.setattr(ugd_adm.backbone, "load_adm", _no_load)
    reg = load_registry()
    with pytest.raises(UgdError, match="backbone 'adm' reads no prompt: it would be ignored; drop --prompt$"):
        validate_spec(RunSpec(backbone="adm:model=256x256_diffusion_uncond.pt", guides=[], prompt="207"), reg)
    validate_spec(RunSpec(backbone="adm:model=256x256_diffusion.pt", guides=[], prompt="207"), reg)  # class-conditional
    with pytest.raises(UgdError, match="backbone 'adm' reads no negative prompt"):
        validate_spec(RunSpec(backbone="adm:model=256x256_diffusion.pt", guides=[], prompt="207", negative_prompt="1"), reg)
    with pytest.raises(UgdError, match="cannot tell the release of 'mine.pt' from its file name"):  # as the load would say
        validate_spec(RunSpec(backbone="adm:model=mine.pt", guides=[], prompt="207"), reg)


@pytest.mark.parametrize("classes", [None, 10])
def test_diffusers_pixel_reads_a_class_index_only_where_its_unet_takes_one(tmp_path, classes):
    """diffusers-pixel: a UNet with num_class_embeds reads its class index as the prompt; one without reads no text, and
    a prompt for it is one line from its config.json alone (the folder here holds no weights: nothing is loaded)."""
    from diffusers import UNet2DModel

    folder = tmp_path / "pipe"
    UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 8), norm_num_groups=4,
                down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                num_class_embeds=classes).save_config(folder / "unet")
    reg = load_registry()
    spec = RunSpec(backbone=f"diffusers-pixel:model={folder}", guides=[], prompt="3")
    if classes is None:
        with pytest.raises(UgdError, match="backbone 'diffusers-pixel' reads no prompt: it would be ignored; drop --prompt$"):
            validate_spec(spec, reg)
    else:
        validate_spec(spec, reg)
    empty = tmp_path / "empty"
    empty.mkdir()  # no config to read: the load says what is missing
    validate_spec(RunSpec(backbone=f"diffusers-pixel:model={empty}", guides=[], prompt="3"), reg)


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
    assert "reads: what its model takes, known from its parameters\n" in CliRunner().invoke(app, ["info", "adm"]).output
