"""Start-up: `ugd list`, `ugd info` and `ugd --help` import no torch-heavy module (behaviour, not timing:
torch alone takes seconds to import on a busy laptop), and Typer's own usage errors are one line, exit 2."""

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from cli.main import app

HEAVY = ("torch", "diffusers", "transformers", "torchvision", "ultralytics")
PROBE = """
import sys
from typer.testing import CliRunner
from cli.main import app
res = CliRunner().invoke(app, {args!r})
assert res.exit_code == 0, res.output
print(",".join(m for m in {heavy!r} if m in sys.modules))
"""


@pytest.mark.parametrize("args", [["list"], ["list", "--json"], ["info", "digit-box"], ["info", "digits"], ["info", "digits-full"], ["info", "sd-face"],
                                  ["info", "stable-diffusion"], ["--help"]])
def test_listing_and_describing_import_no_torch(args):
    """In a fresh process (every installed plugin discovered through its entry point), as `ugd` runs them.
    (`ugd info digits` shows the digits backbone, preset and benchmark; the benchmark's parameters come from
    its module, which imports torch, so that page points to `ugd info digits --kind benchmark`.)"""
    code = PROBE.format(args=args, heavy=HEAVY)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "", f"ugd {' '.join(args)} imported {done.stdout.strip()}"


@pytest.mark.parametrize("args", [["generate", "--guide", "nope"], ["generate", "--guide", "digit:label=x"],
                                  ["generate", "--guide", "digit:label=3", "--set", "bogus=1"], ["generate", "-n", "0"]])
def test_a_bad_generate_says_its_one_line_before_torch_loads(args):
    """The first line of `ugd generate` for a bad input (names, parameters, settings, output folder: every
    check before any work) comes before torch is imported."""
    code = PROBE.format(args=args, heavy=HEAVY).replace("assert res.exit_code == 0", "assert res.exit_code == 2")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "", f"ugd {' '.join(args)} imported {done.stdout.strip()} before its error"


def test_a_plugin_may_import_what_it_registers_with_at_its_top():
    """The example plugin and the README's ten lines import ``Param, UgdError, hookimpl, make_guide`` at their top;
    discovery imports that module, so none of them may import torch (make_guide loads it on its first call)."""
    code = ("import sys\nfrom ugd_core import Param, UgdError, hookimpl, make_guide\n"
            f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
            "g = make_guide('b', f=lambda x: x.mean(dim=(1, 2, 3)), loss=lambda m, c: (m - c) ** 2, target=0.5)\n"
            "print(type(g).__name__, 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["", "Guide True"]


runner = CliRunner()


@pytest.mark.parametrize("args, names", [
    (["generate", "-n", "0"], "--num-images"),
    (["generate", "--batch-size", "0"], "--batch-size"),
    (["generate", "--lanes", "0"], "--lanes"),
    (["generate", "--steps", "many"], "--steps"),
    (["generate", "--no-such-option"], "--no-such-option"),
    (["info"], "'name'"),
    (["no-such-command"], "no-such-command"),
])
def test_typer_usage_errors_are_one_line_exit_2(args, names):
    res = runner.invoke(app, args, env={"COLUMNS": "300"})
    assert res.exit_code == 2, res.output
    assert res.output.startswith("error: ") and res.output.strip().count("\n") == 0, res.output
    assert names in res.output and "--help`" in res.output


def test_ugd_list_gives_each_item_one_line_and_info_the_rest():
    """Preset descriptions with file:line sources are long: `ugd list` shows each item's first sentence on one
    line (cut to the terminal), `ugd info NAME` its whole description and sources."""
    from ugd_core.registry import load_registry

    registry = load_registry()
    listing = CliRunner().invoke(app, ["list"], env={"COLUMNS": "100"}, catch_exceptions=False)
    assert listing.exit_code == 0
    for kind in ("guide", "backbone", "preset"):
        section = listing.output.split(f"\n{kind}s (one line each")[1].split("└")[0]
        rows = [line for line in section.splitlines() if line.startswith("│")]
        assert len(rows) == len(registry.entries[kind]), (kind, rows)  # no row wraps onto a second line
        assert all(len(line) <= 100 for line in rows)
    preset = registry.entries["preset"]["sd-face"]
    info = CliRunner().invoke(app, ["info", "sd-face"], env={"COLUMNS": "100000"})
    assert " ".join(preset.description.split()) in " ".join(info.output.split())
    assert "source:" + preset.source.split()[0] in "".join(info.output.split())  # a long URL may wrap at the console's width


def test_a_class_conditional_backbones_bad_class_is_one_line_before_torch_loads(tmp_path):
    """A class index is checked from the backbone's declaration alone (`classes=`, docs/plugins.md): adm from its
    release's flags, diffusers-pixel from its UNet's config.json, read as JSON; neither imports torch or diffusers."""
    import json

    (tmp_path / "pipe" / "unet").mkdir(parents=True)
    (tmp_path / "pipe" / "unet" / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel", "num_class_embeds": 10}))
    for args, line in ((["generate", "--backbone", "adm:model=256x256_diffusion.pt"], "backbone 'adm' is class-conditional"),
                       (["generate", "--backbone", f"diffusers-pixel:model={tmp_path / 'pipe'}", "--prompt", "12"],
                        "backbone 'diffusers-pixel': class [12] out of range; give an integer 0..9")):
        code = PROBE.format(args=args, heavy=HEAVY).replace("assert res.exit_code == 0, res.output",
                                                             f"assert res.exit_code == 2 and {line!r} in res.output, res.output")
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "", f"ugd {' '.join(args)} imported {done.stdout.strip()} before its error"
