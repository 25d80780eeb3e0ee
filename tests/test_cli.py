"""The CLI end to end on tiny random-weight models, and every bad input."""

import json
import types

import pytest
import torch
from typer.testing import CliRunner

from cli.main import app
from ugd_core import Param, hookimpl, make_guide
from ugd_core import registry as registry_module
from ugd_core.images import load_image
from ugd_core.testing import tiny_stable_diffusion

runner = CliRunner()
FAST = ["--steps", "3", "--set", "zo_probes=2"]


def _bright(level: float = 0.0, device: str = "cpu"):
    return make_guide("toy-bright", f=lambda x: x.mean(dim=(1, 2, 3)), loss=lambda m, c: (m - c) ** 2, target=level)


def _hard(level: float = 0.0, device: str = "cpu"):
    # a non-differentiable guide: the loss goes through numpy
    def loss(x, c):
        return torch.from_numpy(((x.detach().numpy().mean(axis=(1, 2, 3)) - c) ** 2)).float()

    return make_guide("toy-hard", f=lambda x: x, loss=loss, target=level, differentiable=False)


def _ref(image: str, device: str = "cpu"):
    target = load_image(image, size=(16, 16))
    return make_guide("toy-ref", f=lambda x: x, loss=lambda x, t: (x - t).pow(2).flatten(1).mean(1), target=target)


def _nan(device: str = "cpu"):
    return make_guide("toy-nan", f=lambda x: x.mean(dim=(1, 2, 3)), loss=lambda m, c: m * float("nan"))


def _plugin():
    mod = types.ModuleType("toy_cli_plugin")

    def guides(register):
        register("toy-bright", _bright, description="mean brightness", params=[Param("level", "float", 0.0, "target")])
        register("toy-hard", _hard, description="non-differentiable brightness", differentiable=False,
                 params=[Param("level", "float", 0.0, "target")])
        register("toy-ref", _ref, description="match a reference image", params=[Param("image", "path", required=True, help="image")])
        register("toy-nan", _nan, description="always NaN")

    def backbones(register):
        register("tiny-sd", lambda device="cpu": tiny_stable_diffusion(device=device), description="tiny random SD")

    mod.ugd_register_guides = hookimpl(guides)
    mod.ugd_register_backbones = hookimpl(backbones)
    return mod


@pytest.fixture(autouse=True)
def toy_registry(monkeypatch):
    reg = registry_module.load_registry([("toy", _plugin())], entry_points=False)
    monkeypatch.setattr(registry_module, "_DEFAULT", reg)
    return reg


def gen(*args):
    return runner.invoke(app, ["generate", "--backbone", "tiny-sd", "--prompt", "a cat", *FAST, *args])


def test_list_and_info():
    res = runner.invoke(app, ["list"])
    assert res.exit_code == 0 and "toy-hard" in res.output and "tiny-sd" in res.output
    res = runner.invoke(app, ["info", "toy-bright"])
    assert res.exit_code == 0 and "level" in res.output and "weight" in res.output
    res = runner.invoke(app, ["info", "ugd"])
    assert res.exit_code == 0 and "backward_steps" in res.output


def test_generate_two_guides_writes_png_and_sidecar_and_reproduces_from_spec(tmp_path):
    out = tmp_path / "a"
    res = gen("--guide", "toy-bright:level=0.3,weight=2", "--guide", "toy-hard:level=0.3", "-n", "2", "--seed", "5", "--out", str(out))
    assert res.exit_code == 0, res.output
    png, side = out / "ugd-000006.png", out / "ugd-000006.json"
    record = json.loads(side.read_text())
    assert record["seed"] == 6 and record["backbone"]["name"] == "tiny-sd"
    assert [g["name"] for g in record["guides"]] == ["toy-bright", "toy-hard"] and record["guides"][0]["weight"] == 2.0
    assert record["sampler"]["num_steps"] == 3 and record["preset"] == "ugd"
    assert record["stats"]["zero_order_guides"] == ["toy-hard"]
    assert "torch" in record["versions"]
    from PIL import Image

    with Image.open(png) as im:
        assert json.loads(im.text["ugd"]) == {k: v for k, v in record.items() if k != "stats"}
    again = tmp_path / "b"
    res = runner.invoke(app, ["generate", "--from-spec", str(png), "--out", str(again)])
    assert res.exit_code == 0, res.output
    assert (again / "ugd-000006.png").read_bytes() == png.read_bytes()
    assert not (again / "ugd-000005.png").exists()


def test_same_seed_same_bytes(tmp_path):
    for d in ("x", "y"):
        assert gen("--guide", "toy-bright", "-n", "1", "--seed", "1", "--out", str(tmp_path / d)).exit_code == 0
    assert (tmp_path / "x" / "ugd-000001.png").read_bytes() == (tmp_path / "y" / "ugd-000001.png").read_bytes()


def test_existing_output_is_never_overwritten(tmp_path):
    assert gen("-n", "1", "--out", str(tmp_path)).exit_code == 0
    before = (tmp_path / "ugd-000000.png").read_bytes()
    res = gen("--guide", "toy-bright:level=0.9", "-n", "1", "--out", str(tmp_path))
    assert res.exit_code == 2 and "already exists" in res.output and "--overwrite" in res.output
    assert (tmp_path / "ugd-000000.png").read_bytes() == before
    assert gen("--guide", "toy-bright:level=0.9", "-n", "1", "--out", str(tmp_path), "--overwrite").exit_code == 0
    assert (tmp_path / "ugd-000000.png").read_bytes() != before


@pytest.mark.parametrize(
    "args, message",
    [
        (["--guide", "toy-bright:level"], "malformed spec"),
        (["--guide", "toy-brigth"], "did you mean toy-bright"),
        (["--guide", "toy-bright:levle=1"], "unknown parameter 'levle'"),
        (["--guide", "toy-bright:level=high"], "not a valid float"),
        (["--guide", "toy-bright:weight=x"], "weight='x' is not a number"),
        (["--preset", "freedon"], "did you mean freedom"),
        (["--preset", "missing.json"], "does not exist"),
        (["--set", "forward_strenght=1"], "did you mean forward_strength"),
        (["--set", "recurrence=0"], "recurrence must be >= 1"),
        (["--guide", "toy-ref:image=/no/such.png"], "does not exist"),
        (["--guide", "toy-ref"], "missing required parameter 'image'"),
        (["--device", "cuda:3"], "CUDA is not available"),
        (["--from-spec", "/no/spec.json"], "does not exist"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, message):
    if "cuda" in " ".join(args) and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    res = gen(*args, "--out", str(tmp_path / "o"))
    assert res.exit_code == 2, res.output
    assert message in res.output
    assert res.output.strip().count("\n") <= 1  # one line (may wrap once on narrow terminals)
    assert not (tmp_path / "o").exists()


def test_bad_backbone_and_unreadable_image(tmp_path):
    res = runner.invoke(app, ["generate", "--backbone", "tiny-sb", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "did you mean tiny-sd" in res.output
    junk = tmp_path / "junk.png"
    junk.write_text("not an image")
    res = gen("--guide", f"toy-ref:image={junk}", "--out", str(tmp_path / "o"))
    assert res.exit_code == 2 and "cannot read image" in res.output


def test_nan_gradients_skip_guidance_and_never_reach_the_image(tmp_path):
    res = gen("--guide", "toy-nan", "-n", "2", "--out", str(tmp_path))
    assert res.exit_code == 0, res.output
    assert "non-finite guidance gradient" in res.output
    record = json.loads((tmp_path / "ugd-000000.json").read_text())
    assert record["stats"]["nonfinite_skipped"] > 0
    import numpy as np
    from PIL import Image

    unguided = tmp_path / "u"
    assert gen("-n", "2", "--out", str(unguided), "--preset", "ugd").exit_code == 0
    a = np.asarray(Image.open(tmp_path / "ugd-000000.png"))
    assert np.isfinite(a).all()


def test_missing_weights_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    res = runner.invoke(app, ["generate", "--backbone", "stable-diffusion:model=nobody/no-such-model", "--out", str(tmp_path)])
    assert res.exit_code == 2
    assert "nobody/no-such-model" in res.output and "not found" in res.output and "model=" in res.output


def test_stable_diffusion_backbone_from_a_pipeline_folder(tmp_path):
    from ugd_core.testing import save_tiny_stable_diffusion

    folder = save_tiny_stable_diffusion(tmp_path / "sd")
    res = runner.invoke(app, ["generate", "--backbone", f"stable-diffusion:model={folder}", "--prompt", "a dog",
                              "--guide", "toy-bright:level=0.5", *FAST, "--out", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "o" / "ugd-000000.png").exists()
