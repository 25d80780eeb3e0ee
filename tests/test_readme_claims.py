"""What the README says about the command line matches what a stranger sees (each claim checked against the
code that decides it; the README's numbers are the benchmarks' business, docs/benchmarks.md)."""

import re
import shlex
from pathlib import Path

from cli.outputs import guide_slug
from ugd_core.registry import KINDS, load_registry

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
MAIN = re.search(r"^\s+bash \.ci/setup && \.venv/bin/ugd generate (.*)$", README, flags=re.M)


def _main_guides() -> list[str]:
    args = shlex.split(MAIN.group(1))
    return [args[i + 1] for i, a in enumerate(args) if a in ("--guide", "-g")]


def test_the_main_command_and_its_folder():
    assert MAIN, "the README's first command"
    folder = f"0001-{guide_slug(_main_guides())}"
    assert f"outputs/<date>/<NNNN>-{guide_slug(_main_guides())}/" in README
    # every --from-spec example names an image of the folder the main command creates
    specs = re.findall(r"--from-spec (outputs/\S+)", README)
    assert specs and all(f"/{folder}/" in s for s in specs), specs


def test_single_is_said_to_be_not_bit_exact():
    line = next(li for li in README.splitlines() if "--from-spec" in li and "--single" in li)
    assert "not bit-exact" in line


def test_the_scheduler_example_uses_the_recommended_guide():
    line = next(li for li in README.splitlines() if "--scheduler" in li and "ugd generate" in li)
    assert _main_guides()[0] in line


def test_ugd_list_is_described_by_its_sections():
    line = next(li for li in README.splitlines() if li.strip().startswith("ugd list "))
    comment = line.split("#", 1)[1]
    assert all(f"{kind}s" in comment for kind in KINDS) and "problems" not in comment


def test_the_backbone_table_names_the_plugin_of_each_backbone():
    registry = load_registry()
    table = README[README.index("| backbone | plugin |"):]
    rows = [r for r in table.split("\n\n")[0].splitlines()[2:] if r.startswith("|")]
    checked = 0
    for row in rows:
        names_cell, plugin_cell = [c.strip() for c in row.strip("|").split("|")[:2]]
        for name in re.findall(r"`([^`]+)`", names_cell):
            entry = registry.entries["backbone"].get(name)
            if entry is None:
                continue  # a backbone of a plugin not installed here
            assert plugin_cell.split()[0] == entry.plugin, (name, plugin_cell, entry.plugin)
            assert "built in" not in plugin_cell or entry.plugin == "ugd", (name, plugin_cell)
            checked += 1
    assert checked >= 4


def test_the_hero_image_was_made_by_the_readme_command():
    """docs/img/sevens.png carries the command that drew it (a PNG text chunk written when it was made);
    a new README command needs a new image, and a caption written from it."""
    from PIL import Image

    image = Image.open(Path(__file__).resolve().parents[1] / "docs" / "img" / "sevens.png")
    assert image.text.get("ugd-command") == "ugd generate " + MAIN.group(1).strip()
