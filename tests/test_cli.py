"""The CLI end to end on tiny random-weight models, and every bad input."""

import json
import types

import pytest
import torch
from typer.testing import CliRunner

from cli.main import app
from ugd_core import Param, hookimpl, make_guide
from ugd_core import registry as registry_module
from ugd_kit.images import load_image
import ugd_sd.plugin
from ugd_sd.testing import save_tiny_stable_diffusion, tiny_stable_diffusion

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


def _fragile(level: float = 0.0, device: str = "cpu"):
    raise ValueError(f"level {level} is not supported")


INTERRUPT_AFTER = {"calls": None}


def _interrupting(device: str = "cpu"):
    def f(x):
        INTERRUPT_AFTER["calls"] -= 1
        if INTERRUPT_AFTER["calls"] < 0:
            raise KeyboardInterrupt
        return x.mean(dim=(1, 2, 3))

    return make_guide("toy-ctrl-c", f=f, loss=lambda m, c: m**2)


def _plugin():
    mod = types.ModuleType("toy_cli_plugin")

    def guides(register):
        register("toy-bright", _bright, description="mean brightness", params=[Param("level", "float", 0.0, "target")])
        register("toy-hard", _hard, description="non-differentiable brightness", differentiable=False,
                 params=[Param("level", "float", 0.0, "target")])
        register("toy-ref", _ref, description="match a reference image", params=[Param("image", "path", required=True, help="image")])
        register("toy-nan", _nan, description="always NaN")
        register("toy-fragile", _fragile, description="raises ValueError", params=[Param("level", float, 0.0, "target")])
        register("toy-ctrl-c", _interrupting, description="Ctrl-C after a few guide calls")

    def backbones(register):
        register("tiny-sd", lambda device="cpu": tiny_stable_diffusion(device=device), description="tiny random SD")

    mod.ugd_register_guides = hookimpl(guides)
    mod.ugd_register_backbones = hookimpl(backbones)
    return mod


def _impostor():
    """A second plugin registering a name the first one already has."""
    mod = types.ModuleType("toy_impostor")

    def guides(register):
        register("toy-bright", lambda level=0.0, device="cpu": _bright(-level), description="impostor",
                 params=[Param("level", "float", 0.0, "target")])

    mod.ugd_register_guides = hookimpl(guides)
    return mod


@pytest.fixture(autouse=True)
def toy_registry(monkeypatch):
    reg = registry_module.load_registry([("toy", _plugin()), ("stable-diffusion", ugd_sd.plugin)], entry_points=False)
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
    assert record["sampler"]["num_steps"] == 3 and record["preset"] == "auto"  # a backbone without its own default: auto
    assert record["stats"]["zero_order_guides"] == ["toy-hard"]
    assert "torch" in record["versions"]
    from PIL import Image

    with Image.open(png) as im:
        assert json.loads(im.text["ugd"]) == {k: v for k, v in record.items() if k != "stats"}
    again = tmp_path / "b"
    res = runner.invoke(app, ["generate", "--from-spec", str(png), "--out", str(again)])
    assert res.exit_code == 0, res.output
    assert "regenerating the whole batch of 2 images (seeds 5-6)" in res.output and "--single" in res.output
    assert (again / "ugd-000006.png").read_bytes() == png.read_bytes()
    assert (again / "ugd-000005.png").read_bytes() == (out / "ugd-000005.png").read_bytes()
    one = tmp_path / "c"
    res = runner.invoke(app, ["generate", "--from-spec", str(png), "--single", "--out", str(one)])
    assert res.exit_code == 0, res.output
    assert "regenerating only ugd-000006 (seed 6) as a batch of one" in res.output
    assert (one / "ugd-000006.png").exists() and not (one / "ugd-000005.png").exists()


def test_a_seed_edit_in_a_spec_file_regenerates_that_seed(tmp_path):
    assert gen("--guide", "toy-bright:level=0.3", "-n", "2", "--out", str(tmp_path / "a")).exit_code == 0
    record = json.loads((tmp_path / "a" / "ugd-000000.json").read_text())
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(dict(record, seed=104)))
    res = runner.invoke(app, ["generate", "--from-spec", str(edited), "--out", str(tmp_path / "b")])
    assert res.exit_code == 0, res.output
    assert "regenerating seed 104 alone" in res.output
    assert sorted(p.name for p in (tmp_path / "b").glob("ugd-*.png")) == ["ugd-000104.png"]
    res = runner.invoke(app, ["generate", "--from-spec", str(edited), "--steps", "2", "--out", str(tmp_path / "c")])
    assert res.exit_code == 2 and not (tmp_path / "c").exists()
    assert res.output.strip() == "error: --from-spec reproduces the recorded settings, so --steps has no effect; drop it, or edit the spec file's JSON"
    res = runner.invoke(app, ["generate", "--from-spec", str(edited), "--out", str(edited)])  # --out is a file
    assert res.exit_code == 2 and res.output.startswith("error: --out") and res.output.strip().count("\n") == 0


@pytest.fixture(scope="module")
def a_record(tmp_path_factory):
    """The JSON record of one generated image (module-wide: generated once)."""
    out = tmp_path_factory.mktemp("rec")
    reg = registry_module.load_registry([("toy", _plugin())], entry_points=False)
    old, registry_module._DEFAULT = registry_module._DEFAULT, reg
    try:
        res = runner.invoke(app, ["generate", "--backbone", "tiny-sd", "--prompt", "a cat", *FAST, "--guide", "toy-bright:level=0.3", "--out", str(out)])
    finally:
        registry_module._DEFAULT = old
    assert res.exit_code == 0, res.output
    return json.loads((out / "ugd-000000.json").read_text())


def _edit(record, path, value):
    """``record`` with the field at ``path`` (keys) set to ``value``, or deleted when value is ...."""
    record = json.loads(json.dumps(record))
    *parents, last = path
    node = record
    for key in parents:
        node = node[key]
    if value is ...:
        del node[last]
    else:
        node[last] = value
    return record


@pytest.mark.parametrize(
    "path, value, message",
    [
        (("sampler", "num_steps"), "abc", "num_steps='abc' is not a valid int"),
        (("sampler", "forward_strength"), "lots", "forward_strength='lots' is not a valid float"),
        (("sampler",), ..., "missing field 'sampler'"),
        (("seed",), "seven", "seed 'seven' must be a whole number >= 0"),
        (("seed",), -5, "seed -5 must be a whole number >= 0"),
        (("guides", 0, "params", "level"), "0.9", "params level='0.9' contradicts its spec 'toy-bright:level=0.3'"),
        (("guides", 0, "weight"), 3.0, "weight 3.0 contradicts its spec"),
    ],
)
def test_a_bad_spec_file_is_one_line_and_writes_nothing(tmp_path, a_record, path, value, message):
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(_edit(a_record, path, value)))
    res = runner.invoke(app, ["generate", "--from-spec", str(edited), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2, res.output
    assert message in res.output and res.output.startswith("error: ")
    assert res.output.strip().count("\n") <= 1
    assert not (tmp_path / "o").exists()


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
        (["--set", "forward_strength=-1"], "forward_strength=-1 must be >= 0; to push away from a guide, give it a negative weight"),
        (["--guide", "toy-ref:image=/no/such.png"], "does not exist"),
        (["--guide", "toy-ref"], "missing required parameter 'image'"),
        (["--device", "cuda:3"], "CUDA is not available"),
        (["--device", "mps"], "MPS is not available here; use --device cpu"),
        (["--device", "cuda:x"], "is not one of cpu, cuda, cuda:N, mps, auto"),
        (["--device", "mpsx"], "is not one of cpu, cuda, cuda:N, mps, auto"),
        (["--from-spec", "/no/spec.json"], "does not exist"),
        (["--guide", "toy-bright:level=1,2"], "quote a value that holds commas: 'toy-bright:level=\"1,2\"'"),
        (["--guide", "toy-fragile"], "guide 'toy-fragile' (plugin 'toy') rejected its parameters: ValueError: level 0.0 is not supported"),
        (["--seed", "-5"], "seed -5 must be a whole number >= 0"),
        (["--single"], "--single only applies to --from-spec"),
        (["--steps", "0"], "--steps"),
        (["--eta", "10"], "eta must lie in [0, 1]"),
        (["--seed", str(2**64 - 1), "-n", "2"], "the run's largest seed 18446744073709551616 passes 18446744073709551615 (2^64 - 1)"),
        (["--seed", str(2**64 - 2**32), "--best-of", "2"], "the run's largest seed 18446744073709551616 passes"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, message):
    if "cuda" in " ".join(args) and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    if args[-1] == "mps" and torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    res = gen(*args, "--out", str(tmp_path / "o"))
    assert res.exit_code == 2, res.output
    assert message in res.output
    assert res.output.strip().count("\n") <= 1  # one line (may wrap once on narrow terminals)
    assert not (tmp_path / "o").exists()


def test_a_port_out_of_range_is_one_line():
    res = runner.invoke(app, ["ui", "--port", "99999"])
    assert res.exit_code == 2 and "--port" in res.output and "65535" in res.output and "Traceback" not in res.output


def test_a_port_in_use_is_one_line_before_anything_is_made(tmp_path, monkeypatch):
    import socket

    monkeypatch.chdir(tmp_path)
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        res = runner.invoke(app, ["ui", "--port", str(port)])
    assert res.exit_code == 2 and f"cannot serve on 127.0.0.1:{port}" in res.output and "pass another --port" in res.output
    assert res.output.strip().count("\n") == 0 and "ugd ui on" not in res.output  # no "serving" line before the error
    assert not (tmp_path / "outputs").exists()


def test_bad_backbone_and_unreadable_image(tmp_path):
    res = runner.invoke(app, ["generate", "--backbone", "tiny-sb", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "did you mean tiny-sd" in res.output
    junk = tmp_path / "junk.png"
    junk.write_text("not an image")
    res = gen("--guide", f"toy-ref:image={junk}", "--out", str(tmp_path / "o"))
    assert res.exit_code == 2 and "cannot read image" in res.output


def test_nan_gradients_skip_guidance_and_never_reach_the_image(tmp_path):
    res = gen("--guide", "toy-nan", "-n", "2", "--out", str(tmp_path))
    # guidance skipped at every step: the run has failed (exit 1), says so in its last line and in each record
    assert res.exit_code == 1, res.output
    assert "non-finite guidance gradient" in res.output
    last = res.output.strip().splitlines()[-1]
    assert last.startswith("failed: guidance was skipped at every step (non-finite gradients) for 2 of 2 images"), last
    record = json.loads((tmp_path / "ugd-000000.json").read_text())
    assert record["stats"]["nonfinite_skipped"] > 0 and record["stats"]["guidance_failed"] is True
    assert record["stats"]["guided_steps"] == record["sampler"]["num_steps"]
    import numpy as np
    from PIL import Image

    # every guidance step was skipped, so the images are exactly the unguided ones of the same preset and
    # seeds (a NaN that reached the latents would show as a black or garbled PNG, not as a non-finite uint8)
    unguided = tmp_path / "u"
    assert gen("-n", "2", "--out", str(unguided), "--preset", record["preset"]).exit_code == 0
    for i in range(2):
        guided = np.asarray(Image.open(tmp_path / f"ugd-00000{i}.png"))
        plain = np.asarray(Image.open(unguided / f"ugd-00000{i}.png"))
        assert guided.std() > 5 and np.array_equal(guided, plain)


def test_a_diverged_image_fails_the_run(tmp_path):
    """A huge but finite forward step (s = 1e30) is no non-finite gradient, yet it feeds the denoiser inputs it
    turns into NaN: the image is not finite (a black PNG), so the run fails (exit 1), its last line says so and
    each record has image_finite false."""
    res = gen("--guide", "toy-bright:level=0.3", "-n", "2", "--preset", "forward-only", "--set", "forward_strength=1e30",
              "--out", str(tmp_path))
    assert res.exit_code == 1, res.output
    last = res.output.strip().splitlines()[-1]
    assert last.startswith("failed:") and "2 of 2 images are not finite (the chain diverged; written black)" in last, last
    assert json.loads((tmp_path / "ugd-000000.json").read_text())["stats"]["image_finite"] is False


def test_guidance_that_works_is_not_a_failure(tmp_path):
    res = gen("--guide", "toy-bright:level=0.3", "--out", str(tmp_path))
    assert res.exit_code == 0, res.output
    stats = json.loads((tmp_path / "ugd-000000.json").read_text())["stats"]
    assert stats["guidance_failed"] is False and stats["nonfinite_skipped"] == 0 and stats["guided_steps"] > 0
    assert stats["image_finite"] is True


def test_missing_weights_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    res = runner.invoke(app, ["generate", "--backbone", "stable-diffusion:model=nobody/no-such-model", "--out", str(tmp_path)])
    assert res.exit_code == 2
    assert "nobody/no-such-model" in res.output and "not found" in res.output and "model=" in res.output


@pytest.mark.parametrize("contents", [[], ["notes.txt"]])
def test_an_existing_model_folder_without_a_pipeline_says_what_it_should_hold(tmp_path, monkeypatch, contents):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = tmp_path / "sd15"
    folder.mkdir()
    for name in contents:
        (folder / name).write_text("x")
    res = runner.invoke(app, ["generate", "--backbone", f"stable-diffusion:model={folder}", "--prompt", "a dog", "--out", str(tmp_path / "o")],
                        env={"COLUMNS": "400"})
    assert res.exit_code == 2, res.output
    line = res.output.strip()
    assert line.startswith(f"error: model={str(folder)!r} is a folder but holds no loadable pipeline") and "\n" not in line
    assert "Hugging Face cache" not in line and "model_index.json" in line and "unet/" in line and "save_pretrained" in line
    assert (f"it holds {contents[0]}" if contents else "it holds nothing") in line and not (tmp_path / "o").exists()


def test_a_single_file_checkpoint_says_it_is_a_file_not_a_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ckpt = tmp_path / "v1-5-pruned-emaonly.safetensors"
    ckpt.write_bytes(b"x")
    res = runner.invoke(app, ["generate", "--backbone", f"stable-diffusion:model={ckpt}", "--prompt", "a dog", "--out", str(tmp_path / "o")],
                        env={"COLUMNS": "400"})
    assert res.exit_code == 2, res.output
    line = res.output.strip()
    assert line.startswith(f"error: model={str(ckpt)!r} is a file, not a pipeline folder") and "\n" not in line
    assert "not found" not in line and "from_single_file" in line and not (tmp_path / "o").exists()


def test_stable_diffusion_backbone_from_a_pipeline_folder(tmp_path):
    folder = save_tiny_stable_diffusion(tmp_path / "sd")
    res = runner.invoke(app, ["generate", "--backbone", f"stable-diffusion:model={folder}", "--prompt", "a dog",
                              "--guide", "toy-bright:level=0.5", *FAST, "--out", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "o" / "ugd-000000.png").exists()


def test_cli_generates_in_bf16_with_the_low_memory_preset(tmp_path):
    """`ugd generate --dtype bf16 --preset low-memory` on a saved SD folder: forward + backward +
    recurrence guidance, a finite PNG, the dtype recorded in the image's run spec."""
    folder = save_tiny_stable_diffusion(tmp_path / "sd")
    res = runner.invoke(app, ["generate", "--backbone", f"stable-diffusion:model={folder}", "--prompt", "a dog", "--guide", "toy-bright:level=0.3",
                              "--preset", "low-memory", "--dtype", "bf16", "--steps", "2", "--set", "backward_steps=1", "--out", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    record = json.loads((tmp_path / "o" / "ugd-000000.json").read_text())
    assert json.dumps(record).count('"bf16"') >= 1 and "grad_checkpointing" in json.dumps(record)
    assert record["stats"]["denoiser_backward"] > 0 and record["stats"]["nonfinite_skipped"] == 0


def _run_args(*args):
    return ["generate", "--backbone", "tiny-sd", "--prompt", "a cat", "--steps", "2", "--preset", "forward-only",
            "--guide", "toy-bright:level=0.3", "-n", "2", *args]


def test_two_identical_runs_without_out_get_their_own_folders_and_contact_sheets(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first, second = runner.invoke(app, _run_args()), runner.invoke(app, _run_args())
    assert first.exit_code == 0 and second.exit_code == 0, first.output + second.output
    folders = sorted(p for p in (tmp_path / "outputs").glob("*/*") if p.is_dir())
    assert len(folders) == 2 and folders[0].name.startswith("0001-toy-bright") and folders[1].name.startswith("0002-toy-bright")
    for folder, res in zip(folders, (first, second)):
        assert (folder / "contact-sheet.png").exists()
        assert sorted(p.name for p in folder.glob("ugd-*.png")) == ["ugd-000000.png", "ugd-000001.png"]
        last = res.output.strip().splitlines()[-1]  # the summary line ends the run
        assert last.startswith("2 images (preset forward-only) in ") and str(folder.relative_to(tmp_path)) in last
        assert "contact-sheet.png" in last
    assert (folders[0] / "ugd-000000.png").read_bytes() == (folders[1] / "ugd-000000.png").read_bytes()


@pytest.mark.parametrize("where", ["file", "under-file"])
def test_an_out_that_is_a_file_is_one_line_before_sampling(tmp_path, where):
    blocker = tmp_path / "taken"
    blocker.write_text("not a folder")
    out = blocker if where == "file" else blocker / "sub"
    res = gen("--guide", "toy-ctrl-c", "-n", "2", "--out", str(out))  # would raise if it sampled
    assert res.exit_code == 2, res.output
    assert res.output.startswith("error: --out") and res.output.strip().count("\n") == 0
    assert ("is a file" if where == "file" else "which is a file") in res.output
    assert blocker.read_text() == "not a folder" and sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


def test_ctrl_c_says_what_was_written_and_leaves_no_temporary_file(tmp_path):
    INTERRUPT_AFTER["calls"] = 3  # forward-only, 2 steps: 2 guide calls per image, so Ctrl-C hits the second image
    res = gen("--guide", "toy-ctrl-c", "--steps", "2", "--preset", "forward-only", "-n", "3", "--batch-size", "1", "--lanes", "1", "--out", str(tmp_path))
    assert res.exit_code == 130, res.output
    written = sorted(p.name for p in tmp_path.glob("ugd-*.png"))
    assert written == ["ugd-000000.png"]
    assert res.output.strip().splitlines()[-1] == f"interrupted: 1 image written to {tmp_path}; rerun with --resume"
    assert not list(tmp_path.glob("*.tmp"))


def test_a_name_clash_is_an_error_naming_both_plugins_and_plugin_name_picks_one(tmp_path, monkeypatch):
    reg = registry_module.load_registry([("toy", _plugin()), ("impostor", _impostor())], entry_points=False)
    monkeypatch.setattr(registry_module, "_DEFAULT", reg)
    for args in (["info", "toy-bright"], ["generate", "--backbone", "tiny-sd", *FAST, "--guide", "toy-bright:level=0.3", "--out", str(tmp_path / "o")]):
        res = runner.invoke(app, args)
        assert res.exit_code == 2, res.output
        assert "guide 'toy-bright' is registered by plugins 'toy' and 'impostor'; name one: toy:toy-bright or impostor:toy-bright" in res.output
        assert res.output.strip().count("\n") <= 1
    assert not (tmp_path / "o").exists()
    listing = runner.invoke(app, ["list"], env={"COLUMNS": "200"})
    assert "name clash: use impostor:toy-bright" in listing.output and "name clash: use toy:toy-bright" in listing.output
    res = gen("--guide", "impostor:toy-bright:level=0.3", "--out", str(tmp_path / "o"))
    assert res.exit_code == 0, res.output
    record = json.loads((tmp_path / "o" / "ugd-000000.json").read_text())
    assert record["guides"][0]["plugin"] == "impostor" and record["backbone"]["plugin"] == "toy"


def test_info_shows_an_example_and_accepts_a_class_param_type():
    res = runner.invoke(app, ["info", "toy-ref"], env={"COLUMNS": "200"})
    assert res.exit_code == 0 and "example: ugd generate --guide toy-ref:image=image.png" in res.output
    res = runner.invoke(app, ["info", "toy-fragile"], env={"COLUMNS": "200"})  # registered with Param("level", float, ...)
    assert res.exit_code == 0 and "float" in res.output and "example: ugd generate --guide toy-fragile" in res.output


@pytest.mark.parametrize("option, knob, value", [("--scheduler", "scheduler", "DDIMScheduler"), ("--dtype", "dtype", "fp32")])
def test_named_knob_options_equal_set(tmp_path, option, knob, value):
    a = gen("--guide", "toy-bright", option, value, "--out", str(tmp_path / "a"))
    b = gen("--guide", "toy-bright", "--set", f"{knob}={value}", "--out", str(tmp_path / "b"))
    last = [r.output.strip().splitlines()[-1].split(" in ")[0] for r in (a, b)]  # an error, or the summary up to its time
    assert (a.exit_code, last[0]) == (b.exit_code, last[1])
    if a.exit_code == 0:
        assert json.loads((tmp_path / "a" / "ugd-000000.json").read_text())["sampler"][knob] == value


@pytest.mark.skipif(not __import__("os").path.isdir("/sys/kernel"), reason="needs Linux sysfs, where mkdir is refused even to root")
def test_an_out_the_system_refuses_is_one_line_before_sampling():
    res = gen("--guide", "toy-ctrl-c", "--out", "/sys/ugdtest")  # toy-ctrl-c would raise if it sampled
    assert res.exit_code == 2, res.output
    assert res.output.startswith("error: --out /sys/ugdtest cannot be created") and res.output.strip().count("\n") == 0
