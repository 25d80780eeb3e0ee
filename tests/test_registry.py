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


def two_plugin_registry(name_a: str, made_a: str, name_b: str, made_b: str):
    """Plugins 'pa' and 'pb', each registering one guide (``name_a``, ``name_b``) whose factory returns ``made_a``, ``made_b``."""

    def a(register):
        register(name_a, lambda device="cpu": made_a, description="a")

    def b(register):
        register(name_b, lambda device="cpu": made_b, description="b")

    return load_registry([("pa", _plugin(ugd_register_guides=a)), ("pb", _plugin(ugd_register_guides=b))], entry_points=False)


def _same_name_registry():
    return two_plugin_registry("same", "first", "same", "second")


def test_a_name_clash_is_an_error_at_use_and_plugin_name_picks_one():
    reg = _same_name_registry()
    with pytest.raises(UgdError, match="guide 'same' is registered by plugins 'pa' and 'pb'; name one: pa:same or pb:same"):
        reg.build("guide", "same")
    with pytest.raises(UgdError, match="registered by plugins 'pa' and 'pb'"):
        reg.find("same")
    assert reg.build("guide", "pa:same") == "first" and reg.build("guide", "pb:same") == "second"
    assert reg.build_from_spec("guide", "pb:same") == "second"
    assert reg.get("guide", "pb:same").plugin == "pb"
    assert any("'same'" in p and "'pb'" in p for p in reg.problems)  # `ugd list` shows it


def test_a_builtin_name_is_never_silently_replaced():
    def presets(register):
        register("ugd", {"forward_strength": 99.0}, description="impostor")

    reg = load_registry([("zz", _plugin(ugd_register_presets=presets))], entry_points=False)
    with pytest.raises(UgdError, match="preset 'ugd' is registered by plugins 'ugd' and 'zz'"):
        reg.get("preset", "ugd")
    assert reg.get("preset", "ugd:ugd").settings != reg.get("preset", "zz:ugd").settings


def test_plugin_prefix_errors_say_what_is_wrong():
    reg = _same_name_registry()
    with pytest.raises(UgdError, match="plugin 'pa' has no guide 'sme'.*did you mean same"):
        reg.get("guide", "pa:sme")
    with pytest.raises(UgdError, match="malformed spec 'clip:prompt': 'prompt' is not key=value and 'clip' is no plugin; write clip:prompt=VALUE"):
        reg.build_from_spec("guide", "clip:prompt")


def test_param_types_are_checked_at_registration():
    def guides(register):
        register("classy", lambda x=1.0, p=".", device="cpu": (x, p), params=[Param("x", float, 1.0), Param("p", Path, ".")])
        register("odd", lambda x=None, device="cpu": x, params=[Param("x", "tensor")])
        register("fine", lambda device="cpu": 1)

    reg = load_registry([("typed", _plugin(ugd_register_guides=guides))], entry_points=False)
    assert [p.type for p in reg.get("guide", "classy").params] == ["float", "path"]
    assert reg.build_from_spec("guide", "classy:x=2") == (2.0, ".")  # values arrive converted
    assert "odd" not in reg.entries["guide"] and "fine" in reg.entries["guide"]
    assert reg.plugins["typed"].error == "plugin 'typed', guide 'odd': parameter 'x' has type 'tensor'; use one of str, int, float, bool, path"


@pytest.mark.parametrize("exc", [ValueError("bad level"), TypeError("bad level"), KeyError("bad level")])
def test_a_factory_error_is_one_line_naming_the_plugin(exc):
    def factory(device="cpu"):
        raise exc

    def guides(register):
        register("fragile", factory)

    reg = load_registry([("fragile_plugin", _plugin(ugd_register_guides=guides))], entry_points=False)
    with pytest.raises(UgdError, match="guide 'fragile' \\(plugin 'fragile_plugin'\\) rejected its parameters: .*bad level") as info:
        reg.build("guide", "fragile")
    assert "\n" not in str(info.value)


def test_a_factory_ugd_error_passes_through_unchanged():
    def factory(device="cpu"):
        raise UgdError("fragile: level must be in [-1, 1]")

    reg = load_registry([("p", _plugin(ugd_register_guides=lambda register: register("fragile", factory)))], entry_points=False)
    with pytest.raises(UgdError, match="^fragile: level must be in \\[-1, 1\\]$"):
        reg.build("guide", "fragile")


def test_the_kernel_has_no_import_cycle():
    """Imports between ugd_core modules (lazy ones inside functions included) form no cycle."""
    import ast

    pkg = REPO / "ugd_core"
    graph = {}
    for f in pkg.glob("*.py"):
        deps = set()
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                deps |= {node.module} if node.module else {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ugd_core."):
                deps.add(node.module.split(".")[1])
        graph[f.stem] = {d.split(".")[0] for d in deps} - {"__init__"}
    graph.pop("__init__")

    def visit(node, path):
        assert node not in path, f"import cycle: {' -> '.join([*path, node])}"
        for dep in graph.get(node, ()):
            visit(dep, [*path, node])

    for module in graph:
        visit(module, [])


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
        ("pb:same", "pb:same", {}),
        ("pb:same:level=0.3,weight=2", "pb:same", {"level": "0.3", "weight": "2"}),
        ('clip:prompt="a: b"', "clip", {"prompt": "a: b"}),
    ],
)
def test_guide_specs_parse(text, name, params):
    assert parse_spec(text) == (name, params)


@pytest.mark.parametrize("text", ["", ":a=1", "clip:", "clip:a=1,b", 'clip:prompt="open', "clip:a=1,a=2", "a:b:"])
def test_malformed_specs_are_user_errors(text):
    with pytest.raises(UgdError, match="malformed spec"):
        parse_spec(text)


def test_an_unquoted_comma_value_says_to_quote_it():
    with pytest.raises(UgdError) as info:
        parse_spec("digit-box:box=4,4,20,28,label=3")
    assert str(info.value).endswith("""quote a value that holds commas: 'digit-box:box="4,4,20,28",label=3'""")


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
