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


def declared_registry(declaration: str, backbones: dict) -> object:  # type: ignore[type-arg]
    """Backbones named after what they declare as ``declaration`` (reads= or classes=), never built, and a guide ``g``;
    registered by a plugin of that name."""
    plugin = types.ModuleType(f"ugd_test_{declaration}")

    def register_backbones(register):  # type: ignore[no-untyped-def]
        for name, value in backbones.items():
            register(name, lambda **_: None, description=name, **{declaration: value})

    plugin.ugd_register_backbones = hookimpl(register_backbones)
    plugin.ugd_register_guides = hookimpl(lambda register: register("g", lambda **_: None, description="a guide"))
    return load_registry([(declaration, plugin)], entry_points=False)


def registry_of(**reads):  # type: ignore[no-untyped-def]
    """Backbones named after their `reads` (None: undeclared)."""
    return declared_registry("reads", reads)


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
    for name in ("adm", "diffusers-pixel"):  # a class-conditional member reads its class index as the prompt
        assert callable(reg.get("backbone", name).classes) and reg.get("backbone", name).reads is None


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
    assert ("reads: --prompt as a class index where class-conditional (from its parameters)\n"
            in CliRunner().invoke(app, ["info", "adm"]).output)


def classes_registry(**classes):  # type: ignore[no-untyped-def]
    """Backbones named after their `classes` (a count or a function of their parameters)."""
    return declared_registry("classes", classes)


@pytest.mark.parametrize("prompt, refused", [
    ("3", None),
    (None, "backbone 'ten' is class-conditional; give the class index 0..9 as the prompt"),
    ("", "class-conditional; give the class index 0..9"),
    ("three", "backbone 'ten': prompt 'three' is not a class index; give an integer 0..9$"),
    ("2.5", "prompt '2.5' is not a class index"),
    ("10", r"backbone 'ten': class \[10\] out of range; give an integer 0..9$"),
    ("-1", "prompt '-1' is not a class index; give an integer 0..9$"),
])
def test_a_class_conditional_backbone_has_its_class_index_checked_before_any_work(prompt, refused):
    """classes= (docs/plugins.md): the prompt is checked by the rule the backbone conditions by (ugd_core.class_prompt),
    in the spec check, so a missing or malformed class index is one line before any weights load."""
    reg = classes_registry(ten=10)
    spec = RunSpec(backbone="ten", guides=["g"], prompt=prompt)
    if refused is None:
        validate_spec(spec, reg)
        return
    with pytest.raises(UgdError, match=refused) as err:
        validate_spec(spec, reg)
    assert "\n" not in str(err.value)
    with pytest.raises(UgdError, match="backbone 'ten' reads no negative prompt"):  # a class index is all it reads
        validate_spec(RunSpec(backbone="ten", guides=[], prompt="3", negative_prompt="4"), reg)


@pytest.mark.parametrize("prompt, negative, batch_sizes, refused", [
    (7, None, [2], None),
    ([1, 2], None, [2, 2], None),  # one per image of every batch
    (2.5, None, [1], "prompt 2.5 is not a class index"),  # int() would have truncated it to class 2
    (True, None, [1], "prompt True is not a class index"),  # int() would have read class 1
    ([1, -1], None, [2], r"class \[1, -1\] out of range"),
    ("3", "4", [1], "owner: a class-conditional model takes no negative prompt; drop it$"),
    ([1, 2, 3], None, [2], "owner: 3 class labels for 2 images; give one or one per image$"),
    ([1, 2], None, [2, 1], "2 class labels for 1 images"),  # a run's last batch may be smaller
    (" 3 ", None, [1], None),
    ("1_0", None, [1], "prompt '1_0' is not a class index"),  # int() would have read class 10
    ("+3", None, [1], r"prompt '\+3' is not a class index"),
    ("3.0", None, [1], "prompt '3.0' is not a class index"),
])
def test_the_class_index_rule_a_backbone_conditions_by(prompt, negative, batch_sizes, refused):
    """class_indices: what a Python caller of sample() may pass a class-conditional backbone (ints, a list per image)."""
    from ugd_core.class_prompt import class_indices

    if refused is None:
        labels = class_indices("owner", prompt, negative, 10, batch_sizes)
        assert labels == (prompt if isinstance(prompt, list) else [int(prompt)])
        return
    with pytest.raises(UgdError, match=refused):
        class_indices("owner", prompt, negative, 10, batch_sizes)


def test_classes_may_be_a_function_of_the_parameters_and_says_what_is_read():
    """A function returning 0 reads no text, a count reads the prompt (a class index), None leaves both to the
    backbone; anything else is one line naming the plugin."""
    reg = classes_registry(fn=lambda **p: 0, unsure=lambda **p: None, odd=lambda **p: 2.0)
    with pytest.raises(UgdError, match="backbone 'fn' reads no prompt: it would be ignored; drop --prompt$"):
        validate_spec(RunSpec(backbone="fn", guides=[], prompt="3"), reg)
    validate_spec(RunSpec(backbone="unsure", guides=[], prompt="a cat", negative_prompt="blurry"), reg)
    with pytest.raises(UgdError, match=r"plugin 'classes', backbone 'odd': its classes function returned 2.0; it must return"):
        validate_spec(RunSpec(backbone="odd", guides=[]), reg)
    calls = []  # adm's imports guided-diffusion's code, diffusers-pixel's reads config.json: once a check
    counted = classes_registry(ten=lambda **p: calls.append(p) or 10)
    validate_spec(RunSpec(backbone="ten", guides=[], prompt="3"), counted)
    assert calls == [{}]


@pytest.mark.parametrize("bad, problem", [(-1, "classes=-1 must be a whole number >= 0"), (True, "classes=True must be"),
                                          ("10", "classes='10' must be")])
def test_a_bad_classes_declaration_is_the_plugins_error(bad, problem):
    reg = classes_registry(odd=bad)
    assert "odd" not in reg.entries["backbone"]
    assert any(problem in p for p in reg.problems)


def test_reads_and_classes_together_are_refused():
    plugin = types.ModuleType("ugd_test_both")
    plugin.ugd_register_backbones = hookimpl(lambda register: register("both", lambda **_: None, reads=("prompt",), classes=10))
    reg = load_registry([("both", plugin)], entry_points=False)
    assert "both" not in reg.entries["backbone"]
    assert any("give reads= or classes=, not both" in p for p in reg.problems)


@pytest.mark.parametrize("prompt, refused", [(None, "backbone 'adm' is class-conditional; give the class index 0..999 as the prompt"),
                                             ("1000", r"backbone 'adm': class \[1000\] out of range; give an integer 0..999$"),
                                             ("goldfish", "backbone 'adm': prompt 'goldfish' is not a class index")])
def test_adm_checks_a_class_conditional_release_s_class_index_before_loading_it(monkeypatch, prompt, refused):
    """adm: a class-conditional release takes guided-diffusion's ImageNet class index (NUM_CLASSES = 1000) as the
    prompt; a missing or malformed one was refused only after the checkpoint had loaded."""
    import ugd_adm.backbone

    monkeypatch.setattr(ugd_adm.backbone, "load_adm", _no_load)
    with pytest.raises(UgdError, match=refused):
        validate_spec(RunSpec(backbone="adm:model=256x256_diffusion.pt", guides=[], prompt=prompt), load_registry())


def test_ugd_generate_refuses_a_missing_class_index_for_adm_before_any_work(tmp_path):
    """README: every bad input is one line and exit 2, before any work (no checkpoint looked for, no output folder)."""
    result = CliRunner().invoke(app, ["generate", "--backbone", "adm:model=256x256_diffusion.pt", "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert "backbone 'adm' is class-conditional; give the class index 0..999 as the prompt (e.g. --prompt 3)" in result.output
    assert not (tmp_path / "out").exists()


def test_diffusers_pixel_checks_a_class_index_from_its_config_alone(tmp_path):
    """A UNet with num_class_embeds=10 takes classes 0..9: class 12 is one line from its config.json (no weights here)."""
    from diffusers import UNet2DModel

    folder = tmp_path / "pipe"
    UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 8), norm_num_groups=4,
                down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                num_class_embeds=10).save_config(folder / "unet")
    with pytest.raises(UgdError, match=r"backbone 'diffusers-pixel': class \[12\] out of range; give an integer 0..9$"):
        validate_spec(RunSpec(backbone=f"diffusers-pixel:model={folder}", guides=[], prompt="12"), load_registry())


def test_integers_of_any_kind_are_class_indices_and_no_float_is_cut():
    """From Python, numpy and torch integers are indices (operator.index); a float of any kind is refused, never cut
    to the class below it."""
    import numpy as np
    import torch

    from ugd_core.class_prompt import class_indices

    assert class_indices("o", [np.int64(4), torch.tensor(5)], None, 10, [2]) == [4, 5]
    for bad in (np.float32(3.7), torch.tensor(2.0), np.bool_(True)):
        with pytest.raises(UgdError, match="is not a class index"):
            class_indices("o", bad, None, 10, [1])


@pytest.mark.parametrize("value", ["ten", 10.5, True, -1])
def test_a_unet_config_whose_class_count_is_no_count_is_left_to_the_load(tmp_path, value):
    """diffusers-pixel: a config.json whose num_class_embeds is no whole number >= 0 is not read as a count (it was
    a ValueError traceback, 10.5 cut to 10, true read as 1 class, -1 blamed on the plugin); loading the model says
    what is wrong."""
    import json

    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "config.json").write_text(json.dumps({"num_class_embeds": value}))
    entry = load_registry().get("backbone", "diffusers-pixel")
    assert entry.reading({"model": str(tmp_path)}) == (None, None)


def test_adm_class_count_is_guided_diffusions():
    """ugd_adm.configs.NUM_CLASSES is kept beside the flags so that no spec check imports the model code; it must be
    guided-diffusion's own count."""
    from ugd_adm.configs import NUM_CLASSES, import_script_util

    assert NUM_CLASSES == import_script_util().NUM_CLASSES == 1000


def test_a_cached_hub_id_has_its_class_count_read_from_the_cache_without_a_download(tmp_path, monkeypatch):
    """diffusers-pixel:model=ORG/NAME reads config.json from the local Hugging Face cache (never downloads); an id
    not in the cache is unknown here, and loading it says so."""
    import json

    from huggingface_hub import constants

    snapshot = tmp_path / "models--org--classy" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(json.dumps({"num_class_embeds": 7}))
    (tmp_path / "models--org--classy" / "refs").mkdir()
    (tmp_path / "models--org--classy" / "refs" / "main").write_text("abc123")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    entry = load_registry().get("backbone", "diffusers-pixel")
    assert entry.reading({"model": "org/classy"}) == (("prompt",), 7)
    assert entry.reading({"model": "org/absent"}) == (None, None)
    with pytest.raises(UgdError, match=r"backbone 'diffusers-pixel': class \[7\] out of range; give an integer 0..6$"):
        validate_spec(RunSpec(backbone="diffusers-pixel:model=org/classy", guides=[], prompt="7"), load_registry())
