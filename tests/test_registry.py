"""Registry: hooks, duplicates, broken plugins, real entry-point discovery."""

import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from ugd_core import Param, UgdError, hookimpl, load_registry
from ugd_core.params import parse_spec

REPO = Path(__file__).resolve().parents[1]


def _plugin(**hooks):
    mod = types.ModuleType("test_plugin")
    for name, fn in hooks.items():
        setattr(mod, name, hookimpl(fn))
    return mod


def test_builtin_presets_are_registered_through_the_hooks():
    reg = load_registry(entry_points=False)
    assert {"ugd", "forward-only", "naive", "dps", "freedom", "mpgd", "lgd", "tfg"} <= set(reg.entries["preset"])
    assert reg.plugins["ugd"].hooks == ["ugd_register_backbones", "ugd_register_presets"]


def test_in_process_plugin_registers_a_lazy_guide():
    built = []

    def guides(register):
        register("toy", lambda scale=1.0, device="cpu": built.append(scale) or scale, description="toy",
                 params=[Param("scale", "float", 1.0, "how much")])

    reg = load_registry([("toy_plugin", _plugin(ugd_register_guides=guides))], entry_points=False)
    assert built == []  # nothing built at registration
    assert reg.build_from_spec("guide", "toy:scale=2.5") == 2.5
    with pytest.raises(UgdError, match="unknown parameter 'scal' \\(did you mean scale\\?\\)"):
        reg.build_from_spec("guide", "toy:scal=1")
    with pytest.raises(UgdError, match="not a valid float"):
        reg.build_from_spec("guide", "toy:scale=big")
    with pytest.raises(UgdError, match="unknown guide 'tyo' \\(did you mean toy\\?\\)"):
        reg.build_from_spec("guide", "tyo")


def test_duplicate_names_are_reported_not_overwritten():
    def a(register):
        register("same", lambda device="cpu": "first", description="a")

    def b(register):
        register("same", lambda device="cpu": "second", description="b")

    reg = load_registry([("pa", _plugin(ugd_register_guides=a)), ("pb", _plugin(ugd_register_guides=b))], entry_points=False)
    assert reg.build("guide", "same") == "first"
    assert any("'same'" in p and "'pb'" in p for p in reg.problems)


def test_a_raising_hook_marks_the_plugin_broken_and_spares_the_others():
    def bad(register):
        raise RuntimeError("boom")

    def good(register):
        register("fine", lambda device="cpu": 1, description="ok")

    reg = load_registry([("bad", _plugin(ugd_register_guides=bad)), ("good", _plugin(ugd_register_guides=good))], entry_points=False)
    assert "boom" in reg.plugins["bad"].error
    assert reg.plugins["good"].error == ""
    assert "fine" in reg.entries["guide"]


@pytest.mark.parametrize(
    "text, name, params",
    [
        ("clip", "clip", {}),
        ('clip:prompt="a cat, on a mat",weight=2', "clip", {"prompt": "a cat, on a mat", "weight": "2"}),
        ("face:image='a,b.png'", "face", {"image": "a,b.png"}),
        ("box:box=1;2;3;4,label=dog", "box", {"box": "1;2;3;4", "label": "dog"}),
    ],
)
def test_guide_specs_parse(text, name, params):
    assert parse_spec(text) == (name, params)


@pytest.mark.parametrize("text", ["", ":a=1", "clip:", "clip:prompt", 'clip:prompt="open', "clip:a=1,a=2"])
def test_malformed_specs_are_user_errors(text):
    with pytest.raises(UgdError, match="malformed spec"):
        parse_spec(text)


@pytest.fixture(scope="module")
def installed_plugins(tmp_path_factory):
    """The example plugin pip-installed into a private folder (a real dist-info + entry point),
    plus a broken plugin whose module raises on import."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         "--target", str(target), str(REPO / "docs" / "example-plugin")],
        check=True, capture_output=True,
    )
    broken = target / "ugd_broken_plugin-0.0.1.dist-info"
    broken.mkdir()
    (broken / "METADATA").write_text("Metadata-Version: 2.1\nName: ugd-broken-plugin\nVersion: 0.0.1\n")
    (broken / "entry_points.txt").write_text("[ugd]\nbroken = ugd_broken_plugin\n")
    (target / "ugd_broken_plugin.py").write_text("raise ImportError('needs a package that is not installed')\n")
    return target


def _ugd(args, site, **env):
    full = dict(os.environ, PYTHONPATH=str(site), **env)
    return subprocess.run([sys.executable, "-m", "cli.main", *args], cwd=REPO, env=full, capture_output=True, text=True, timeout=300)


def test_entry_point_plugin_is_discovered_and_a_broken_one_is_listed(installed_plugins):
    res = _ugd(["list", "--json"], installed_plugins, COLUMNS="200")
    assert res.returncode == 0, res.stderr
    import json

    data = json.loads(res.stdout)
    assert data["plugins"]["brightness"]["version"] == "0.1.0"
    assert data["guides"]["brightness"]["plugin"] == "brightness"
    assert "needs a package that is not installed" in data["plugins"]["broken"]["error"]
    info = _ugd(["info", "brightness"], installed_plugins, COLUMNS="200")
    assert info.returncode == 0 and "level" in info.stdout


def test_load_plugins_env_var_selects_plugins(installed_plugins):
    res = _ugd(["list", "--json"], installed_plugins, UGD_LOAD_PLUGINS="brightness")
    import json

    data = json.loads(res.stdout)
    assert set(data["plugins"]) == {"ugd", "brightness"}
