"""The README's Python snippet, run exactly as printed, gives the digits it asks for.

The snippet is the README's only ```python block that is not the plugin example
(the first one); it runs verbatim in a fresh working folder. The digits plugin's
independent evaluator (``ugd_digits.evaluators.Evaluators``, never a guide) must
read a majority of its 8 images, at least 5, as a 7 (the default preset's label
accuracy is 0.95 by that evaluator in docs/benchmarks.md, so 7 or 8 are expected).
"""

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

README = Path(__file__).resolve().parents[1] / "README.md"
MIN_SEVENS = 5  # of 8: a majority


def python_blocks(text: str) -> list[str]:
    """Every fenced ```python block of a markdown text, in order."""
    return re.findall(r"^```python\n(.*?)^```$", text, flags=re.S | re.M)


def test_the_readme_has_the_snippet_and_the_plugin_example():
    blocks = python_blocks(README.read_text())
    assert len(blocks) == 2 and "generate_to_dir" in blocks[0] and "hookimpl" in blocks[1]


def test_the_readme_plugin_registers_and_builds_a_working_guide():
    import types

    from ugd_core import guide_loss, load_registry

    plugin = types.ModuleType("readme_plugin")
    exec(compile(python_blocks(README.read_text())[1], str(README), "exec"), plugin.__dict__)
    reg = load_registry([("readme", plugin)], entry_points=False)
    assert reg.plugins["readme"].error == "" and reg.get("guide", "brightness").plugin == "readme"
    guide = reg.build_from_spec("guide", "brightness:level=0.25")  # the value arrives as a float
    images = torch.full((2, 1, 8, 8), 0.75)
    assert torch.allclose(guide_loss(guide, images), torch.tensor([0.25, 0.25]))  # (0.75 - 0.25)^2


def test_the_readme_snippet_runs_verbatim_and_draws_sevens(tmp_path, monkeypatch):
    pytest.importorskip("ugd_digits")
    from ugd_digits.evaluators import Evaluators

    snippet = python_blocks(README.read_text())[0]
    monkeypatch.chdir(tmp_path)
    exec(compile(snippet, str(README), "exec"), {"__name__": "__readme__"})

    folders = [p for p in (tmp_path / "outputs").glob("*/*") if p.is_dir()]
    assert len(folders) == 1, folders
    pngs = sorted(folders[0].glob("ugd-*.png"))
    assert len(pngs) == 8 and (folders[0] / "contact-sheet.png").exists()
    assert all(p.with_suffix(".json").exists() for p in pngs)  # every image has its record
    images = torch.stack([torch.from_numpy(np.asarray(Image.open(p), dtype=np.float32) / 127.5 - 1)[None] for p in pngs])
    labels, _ = Evaluators().classify(images)
    assert int((labels == 7).sum()) >= MIN_SEVENS, labels.tolist()
