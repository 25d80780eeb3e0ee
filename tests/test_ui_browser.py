"""`ugd ui` driven in a real headless Chromium (Debian's chromium + chromium-driver, Selenium).

One server for the module, over the installed plugins plus docs/example-plugin pip-installed into a
private folder. On the digits backbone with 4 steps: compose digit-robust:label=3 and digit-box, watch
the previews, find the images in the gallery and on disk, restore one by dropping its PNG, regenerate
it byte for byte, compare with the CLI, show a bad input's one-line error, stop a run. Page load and
time to first preview are printed (docs/ui.md quotes them); nothing is asserted about time.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
if CHROMIUM is None or DRIVER is None:
    pytest.skip("no Chromium here (apt-get install chromium chromium-driver; .ci/run does it as root)", allow_module_level=True)
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[ui]')")
if importlib.util.find_spec("gradio") is None:  # found, not imported: the server fixture imports it in one worker only
    pytest.skip("gradio is not installed (pip install -e '.[ui]')", allow_module_level=True)

from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

BOX = "4,4,20,28"
TIMINGS: dict[str, float] = {}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A fresh working folder (outputs/ lands here), the example plugin installed into a private site folder."""
    work = tmp_path_factory.mktemp("ui")
    site = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
                    "--target", str(site), str(REPO / "docs" / "example-plugin")], check=True, capture_output=True)
    old = os.getcwd()
    os.chdir(work)
    sys.path.insert(0, str(site))
    yield work
    sys.path.remove(str(site))
    os.chdir(old)


@pytest.fixture(scope="module")
def server(workdir):
    from cli.ui import serve
    from ugd_core.registry import load_registry

    port = _free_port()
    demo = serve(port=port, block=False, registry=load_registry())
    yield f"http://127.0.0.1:{port}/"
    demo.close()


@pytest.fixture(scope="module")
def browser(server):
    opts = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000", "--disable-gpu"):
        opts.add_argument(arg)
    opts.binary_location = CHROMIUM
    opts.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    d = webdriver.Chrome(service=Service(DRIVER), options=opts)
    yield d
    d.quit()
    if TIMINGS:
        print("\nui timings:", json.dumps(TIMINGS))


# -- driving Gradio components ---------------------------------------------------------------


def wait(d, cond, timeout=60.0, what="condition"):
    return WebDriverWait(d, timeout, poll_frequency=0.05).until(lambda d: cond(d), message=f"timed out waiting for {what}")


def load(d, url: str) -> float:
    start = time.perf_counter()
    d.get(url)
    wait(d, lambda d: d.execute_script("return !!document.querySelector('#ugd-generate button, button#ugd-generate')"), 30, "the page")
    return time.perf_counter() - start


def el(d, elem_id: str, css: str = ""):
    """The element ``#elem_id`` or, with ``css`` (alternatives split on commas), the first match inside it."""
    sel = ", ".join(f"#{elem_id} {c.strip()}" for c in css.split(",")) if css else f"#{elem_id}"
    return d.find_element(By.CSS_SELECTOR, sel)


def choose(d, elem_id: str, value: str) -> None:
    """Pick the option whose label starts with ``value`` in a Gradio dropdown."""
    box = shown(d, elem_id, "input")
    box.click()
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(value)
    option = wait(d, lambda d: next((o for o in d.find_elements(By.CSS_SELECTOR, "ul.options li, ul.option-list li")
                                     if (o.get_attribute("aria-label") or "").split(" · ")[0] == value), None), 10, f"option {value}")
    option.click()
    time.sleep(0.3)


def shown(d, elem_id: str, css: str = ""):
    """The element once it exists and is displayed."""
    def find(d):
        found = d.find_elements(By.CSS_SELECTOR, ", ".join(f"#{elem_id} {c.strip()}" for c in css.split(",")) if css else f"#{elem_id}")
        return found[0] if found and found[0].is_displayed() else None
    return wait(d, find, 20, f"#{elem_id} {css}")


def choose_preset(d, name: str) -> None:
    """Pick a preset and wait for its knobs to arrive (they would overwrite fields typed meanwhile)."""
    choose(d, "ugd-preset", name)
    wait(d, lambda d: f"preset {name}:" in (shown_text(d, "ugd-preset-info") or ""), 30, f"preset {name}'s knobs")


def choose_guide(d, slot: int, name: str) -> None:
    """Pick a guide and wait for its fields (which arrive empty, and would clear fields typed meanwhile)."""
    choose(d, f"ugd-g{slot}-name", name)
    entry_desc = {"digit": "label guidance, cross", "digit-robust": "trained on noisy", "digit-box": "object-location", "brightness": "brightness"}[name]
    wait(d, lambda d: entry_desc in (shown_text(d, f"ugd-g{slot}-desc") or ""), 30, f"{name}'s fields")


def type_into(d, elem_id: str, value: str) -> None:
    box = shown(d, elem_id, "input, textarea")
    box.click()
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(Keys.DELETE)
    box.send_keys(value)
    box.send_keys(Keys.TAB)
    time.sleep(0.2)


def shown_text(d, elem_id: str) -> str | None:
    """The text of ``#elem_id`` when it is on the page and displayed (Gradio leaves hidden components out)."""
    found = d.find_elements(By.CSS_SELECTOR, f"#{elem_id}")
    return found[0].text if found and found[0].is_displayed() else None


def value_of(d, elem_id: str) -> str:
    return el(d, elem_id, "input, textarea").get_attribute("value")


def status(d) -> dict[str, str]:
    return d.execute_script(
        "const s = document.querySelector('#ugd-status .ugd-progress'); if (!s) return {};"
        "const p = s.querySelector('progress');"
        "return {state: s.dataset.state, previews: s.dataset.previews || '0', done: p ? p.getAttribute('value') : '0', text: s.innerText};")


def status_text(d) -> str:
    """The status area's text, Gradio's queue tracker included (innerText: Selenium's .text skips it)."""
    return d.execute_script("const s = document.querySelector('#ugd-status'); return s ? s.innerText : ''")


def screenshot(d, path: Path) -> None:
    """A full-page screenshot (Chromium's DevTools capture beyond the viewport)."""
    d.execute_script("window.scrollTo(0, 0)")
    size = d.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    clip = dict(x=0, y=0, width=size["width"], height=size["height"], scale=1)
    shot = d.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip})
    path.write_bytes(base64.b64decode(shot["data"]))
    if os.environ.get("UGD_UI_SCREENSHOT"):
        shutil.copyfile(path, os.environ["UGD_UI_SCREENSHOT"])


def run_folders(root: Path) -> list[Path]:
    return sorted(p for p in (root / "outputs").glob("*/*") if p.is_dir() and p.parent.name != "uploads")


def written(root: Path) -> list[Path]:
    """Every file and run folder under outputs/ (a day's folder alone is no output)."""
    return sorted({p for p in (root / "outputs").rglob("*") if p.is_file()} | set(run_folders(root)))


# every preview image the page shows, with ms since Generate (a MutationObserver misses none)
WATCH_PREVIEWS = """
window.ugdPreviews = [];
const t0 = performance.now();
const note = () => {
  const img = document.querySelector('#ugd-preview img');
  const seen = window.ugdPreviews;
  if (img && img.src && (!seen.length || seen[seen.length - 1][0] !== img.src)) seen.push([img.src, performance.now() - t0]);
};
if (window.ugdObserver) window.ugdObserver.disconnect();
window.ugdObserver = new MutationObserver(note);
window.ugdObserver.observe(document.querySelector('#ugd-preview'), {subtree: true, childList: true, attributes: true});
"""


def generate(d, until=("finished",), timeout=240.0) -> tuple[list[str], dict[str, str]]:
    """Click Generate; the distinct preview images seen, and the final status."""
    before = status(d).get("text")
    d.execute_script(WATCH_PREVIEWS)
    el(d, "ugd-generate").click()
    start = time.monotonic()
    deadline = start + timeout
    while time.monotonic() < deadline:
        st = status(d)
        if st.get("state") in until and st.get("text") != before:
            seen = d.execute_script("return window.ugdPreviews")
            if seen:
                TIMINGS["last_click_to_first_preview_s"] = round(seen[0][1] / 1000, 2)
            return [src for src, _ in seen], st
        time.sleep(0.1)
    raise AssertionError(f"no end of run in {timeout} s: {status(d)}")


def compose(d) -> None:
    """digits, preset digits, 4 steps, 4 images: digit-robust:label=3 + digit-box:box="4,4,20,28"."""
    choose_preset(d, "digits")
    choose_guide(d, 0, "digit-robust")
    type_into(d, "ugd-g0-r0-number", "3")
    el(d, "ugd-add-guide").click()
    wait(d, lambda d: el(d, "ugd-g1-name").is_displayed(), 10, "a second guide slot")
    choose_guide(d, 1, "digit-box")
    type_into(d, "ugd-g1-r0-text", BOX)
    type_into(d, "ugd-steps", "4")
    type_into(d, "ugd-num-images", "4")


# -- the tests -------------------------------------------------------------------------------


def test_compose_watch_results_restore_regenerate(browser, server, workdir):
    d = browser
    TIMINGS["page_load_s"] = round(load(d, server), 2)
    TIMINGS["page_load_again_s"] = round(load(d, server), 2)
    compose(d)

    start = time.perf_counter()
    previews, st = generate(d)
    assert st["state"] == "finished", st
    assert len(previews) >= 2, f"the preview changed {len(previews)} times"
    progress = d.execute_script("return document.querySelector('#ugd-status .ugd-progress').dataset")
    TIMINGS["run_s"] = round(time.perf_counter() - start, 2)
    TIMINGS["first_preview_after_start_s"] = round(float(progress["firstPreviewS"]), 2)
    TIMINGS["first_preview_at_step"] = int(progress["firstPreviewStep"])
    TIMINGS["click_to_first_preview_s"] = TIMINGS["last_click_to_first_preview_s"]
    screenshot(d, workdir / "composed.png")  # the composed page with its results (UGD_UI_SCREENSHOT=docs/img/ui.png keeps it)

    (folder,) = run_folders(workdir)
    pngs = sorted(folder.glob("ugd-*.png"))
    assert [p.name for p in pngs] == [f"ugd-{s:06d}.png" for s in range(4)]
    from cli.run import read_image_record

    records = [read_image_record(p) for p in pngs]
    assert [r["guides"][0]["spec"] for r in records] == ["digit-robust:label=3"] * 4
    assert records[0]["guides"][1]["spec"] == f'digit-box:box="{BOX}"' and records[0]["preset"] == "digits"
    assert (folder / "contact-sheet.png").exists()
    gallery = wait(d, lambda d: d.find_elements(By.CSS_SELECTOR, "#ugd-gallery img") if len(
        d.find_elements(By.CSS_SELECTOR, "#ugd-gallery img")) >= 4 else None, 20, "4 gallery images")
    assert len(gallery) == 4
    served = urllib.request.urlopen(gallery[0].get_attribute("src")).read()  # what the gallery downloads
    assert served == pngs[0].read_bytes()

    # the same spec from the CLI writes the same bytes, records included
    from typer.testing import CliRunner

    from cli.main import app

    cli_out = workdir / "cli-run"
    res = CliRunner().invoke(app, ["generate", "--guide", "digit-robust:label=3", "--guide", f'digit-box:box="{BOX}"',
                                   "-n", "4", "--preset", "digits", "--steps", "4", "--out", str(cli_out)])
    assert res.exit_code == 0, res.output
    assert [(cli_out / p.name).read_bytes() == p.read_bytes() for p in pngs] == [True] * 4

    # restore: a fresh page, drop one PNG, every field comes back
    load(d, server)
    el(d, "ugd-restore", "input[type=file]").send_keys(str(pngs[2]))
    wait(d, lambda d: shown_text(d, "ugd-restored"), 30, "the restore note")
    restored = {k: value_of(d, f"ugd-{k}") for k in ("backbone", "preset", "seed", "num-images", "batch-size", "steps", "scheduler", "threads", "device", "best-of")}
    assert restored == {"backbone": "digits · digits", "preset": "digits", "seed": "0", "num-images": "4", "batch-size": "4", "steps": "4",
                        "scheduler": "ddim", "threads": str(records[2]["torch_threads"]), "device": "cpu", "best-of": "1"}
    assert value_of(d, "ugd-g0-name") == "digit-robust · digits" and value_of(d, "ugd-g0-r0-number") == "3"
    assert value_of(d, "ugd-g1-name") == "digit-box · digits" and value_of(d, "ugd-g1-r0-text") == BOX
    assert value_of(d, "ugd-g0-weight") == "1" and value_of(d, "ugd-g1-weight") == "1"
    el(d, "ugd-knobs", "button, .label-wrap").click()  # open the knobs' accordion
    shown(d, "ugd-knob-eta", "input")
    for knob, value in records[2]["sampler"].items():
        if knob not in ("num_steps", "scheduler"):
            text = value_of(d, f"ugd-knob-{knob}") if d.find_elements(By.CSS_SELECTOR, f"#ugd-knob-{knob} input:not([type=checkbox]), #ugd-knob-{knob} textarea") \
                else str(el(d, f"ugd-knob-{knob}", "input").is_selected()).lower()
            expect = json.dumps(value) if isinstance(value, (list, dict)) else str(value).lower() if isinstance(value, bool) else str(value)
            assert text == expect or float(text) == float(expect), (knob, text, value)

    # regenerate: the same bytes
    _, st = generate(d)
    assert st["state"] == "finished", st
    again = run_folders(workdir)[-1]
    assert again != folder
    assert [(again / p.name).read_bytes() == p.read_bytes() for p in pngs] == [True] * 4


def test_bad_input_shows_the_cli_line_beside_its_field_and_writes_nothing(browser, server, workdir):
    d = browser
    load(d, server)
    compose(d)
    type_into(d, "ugd-g0-r0-number", "11")
    before = written(workdir)
    _, st = generate(d, until=("error", "idle"))
    line = wait(d, lambda d: shown_text(d, "ugd-err-guide-0"), 60, "the guide's error")
    assert "label=11 is not a digit class; use an integer 0..9" in line and "\n" not in line.strip()
    assert written(workdir) == before

    type_into(d, "ugd-g0-r0-number", "3")
    type_into(d, "ugd-g1-r0-text", "")  # the box is missing
    _, st = generate(d, until=("idle", "error"))
    msg = wait(d, lambda d: shown_text(d, "ugd-err-guide-1"), 30, "a missing box")
    assert "digit-box: missing required parameter 'box'" in msg
    assert not shown_text(d, "ugd-err-guide-0")
    assert written(workdir) == before


def test_a_third_party_plugin_gets_its_own_form(browser, server):
    d = browser
    load(d, server)
    choose_guide(d, 0, "brightness")
    wait(d, lambda d: el(d, "ugd-g0-r0-number").is_displayed(), 10, "the level field")
    assert "level" in el(d, "ugd-g0-r0-number").text and "target mean pixel value" in el(d, "ugd-g0-r0-number").text


def test_stop_keeps_only_complete_images(browser, server, workdir):
    d = browser
    load(d, server)
    choose_preset(d, "digits")
    choose_guide(d, 0, "digit")
    type_into(d, "ugd-g0-r0-number", "5")
    type_into(d, "ugd-steps", "30")
    type_into(d, "ugd-num-images", "8")
    type_into(d, "ugd-batch-size", "1")
    before = set(run_folders(workdir))
    el(d, "ugd-generate").click()
    wait(d, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#ugd-gallery img")) >= 1, 120, "a first image")

    # a second page meanwhile waits in the queue, and says so
    first = d.current_window_handle
    d.switch_to.new_window("tab")
    load(d, server)
    choose_guide(d, 0, "digit")
    type_into(d, "ugd-g0-r0-number", "1")
    el(d, "ugd-generate").click()
    try:
        queued = wait(d, lambda d: (lambda t: t if "queue:" in t else None)(status_text(d)), 30, "a queue position")
    except Exception:
        raise AssertionError(f"no queue position on the second page: {status_text(d)!r}") from None
    assert "queue: 1/1" in queued, queued
    d.close()  # a page closed while queued is dropped from the queue
    d.switch_to.window(first)
    el(d, "ugd-stop").click()
    wait(d, lambda d: status(d).get("state") == "stopped", 60, "the stop")
    (folder,) = set(run_folders(workdir)) - before
    names = sorted(p.name for p in folder.iterdir())
    pngs = [n for n in names if n.endswith(".png") and n.startswith("ugd-")]
    assert 1 <= len(pngs) < 8 and not any(n.endswith(".tmp") for n in names), names
    assert all(n.replace(".png", ".json") in names for n in pngs)
    assert "stopped:" in el(d, "ugd-line").text


def test_the_page_fetches_nothing_from_the_internet(browser, server):
    d = browser
    load(d, server)
    time.sleep(1)
    urls = {json.loads(e["message"])["message"]["params"]["request"]["url"]
            for e in d.get_log("performance") if json.loads(e["message"])["message"]["method"] == "Network.requestWillBeSent"}
    outside = sorted(u for u in urls if not u.startswith((server.rstrip("/"), "data:", "blob:")))
    assert outside == []
