"""End to end in a real headless Chromium: `streamlit run app/main.py`, click, type, look at pixels.

Two servers:

* the **bundled demo model** (the app's default, ``mgv2/assets/demo_model``): click [detection],
  type "red balloon", send; the model's own answer must box the scene's red balloon (IoU >= 0.5
  with the ground truth) and the browser must show that box (pixel check);
* the documented TEST HOOK ``MGV2_APP_FAKE_ANSWER`` (see app/config.py): the app loads no model
  and answers with a fixed text built from the ground truth, so the UI checks (the exact place
  of the drawn rectangle, phrase colours, the [identify] region by drag and by two clicks) do not
  depend on what a model answers.

Needs Debian's ``chromium`` (``make browser`` installs it; never ``playwright install``) and the
``playwright`` package; without them the tests are skipped with the reason.  Screenshots and the
server logs are kept in ``tests/artifacts/``.
"""

from __future__ import annotations

import contextlib
import io
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM = os.environ.get("MGV2_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
START_TIMEOUT_S = 90
UI_TIMEOUT_MS = 90_000

pytest.importorskip("streamlit", reason="the app extra is not installed: pip install -e '.[app]'")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed: pip install playwright")
if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
    pytest.skip(f"no Chromium at {CHROMIUM}: run `make browser` (apt-get install -y chromium) as root",
                allow_module_level=True)

from app.samples import load_samples, red_balloon_sample
from mgv2 import boxes as B
from mgv2.draw import phrase_colors

SAMPLES = load_samples()
SAMPLE = red_balloon_sample(SAMPLES)  # a synthetic-world scene with one red balloon (else the demo scene)
W, H = SAMPLE.image.size
GT = SAMPLE.box_of("red balloon")  # the scene's ground truth (visible box), pixels
OTHER = next(box for name, box in SAMPLE.objects if name != "red balloon")
FAKE_ANSWER = B.phrase_text("red balloon", [B.from_pixels(GT, W, H)])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    ignore = ARTIFACTS / ".gitignore"
    if not ignore.exists():
        ignore.write_text("# test outputs (screenshots, logs); never committed\n*\n")
    return ARTIFACTS


@contextlib.contextmanager
def _serve(name: str, env_extra: dict[str, str]):
    """`streamlit run app/main.py` on a free localhost port (its log: artifacts/NAME.log)."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MGV2_")}
    env.update(env_extra, MGV2_DEVICE="cpu", PYTHONUNBUFFERED="1")
    log = (_artifacts() / f"{name}.log").open("w")
    cmd = [sys.executable, "-m", "streamlit", "run", str(ROOT / "app" / "main.py"),
           "--server.headless", "true", "--server.address", "127.0.0.1", "--server.port", str(port),
           "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"streamlit exited with {proc.returncode}; see {log.name}")
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.read() == b"ok":
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"streamlit did not answer within {START_TIMEOUT_S} s; see {log.name}")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
        log.close()


@pytest.fixture(scope="module")
def app_url():
    """The app answering with the fixed ground-truth text (test hook)."""
    with _serve("app_e2e_streamlit", {"MGV2_APP_FAKE_ANSWER": FAKE_ANSWER}) as url:
        yield url


@pytest.fixture(scope="module")
def model_app_url():
    """The app as users start it: the default (bundled demo) model."""
    with _serve("app_e2e_model_streamlit", {}) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


def _open(browser, url):
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, device_scale_factor=1)
    pg = context.new_page()
    pg.set_default_timeout(UI_TIMEOUT_MS)
    pg.goto(url, timeout=UI_TIMEOUT_MS)
    pg.get_by_role("button", name="[detection]").wait_for()
    picker = pg.get_by_role("combobox", name="Sample")
    if SAMPLES.index(SAMPLE) != 0:  # not the default picture: pick it
        picker.click()
        pg.get_by_role("option", name=SAMPLE.name).click()
    sync_api.expect(picker).to_have_value(SAMPLE.name)
    return context, pg


@pytest.fixture()
def page(browser, app_url):
    context, pg = _open(browser, app_url)
    yield pg
    context.close()


@pytest.fixture()
def model_page(browser, model_app_url):
    context, pg = _open(browser, model_app_url)
    yield pg
    context.close()


def _hex_rgb(color: str) -> np.ndarray:
    color = color.lstrip("#")
    return np.array([int(color[i:i + 2], 16) for i in (0, 2, 4)])


def _inner_edges(mask: np.ndarray, box: tuple[float, float, float, float]) -> tuple[int, int, int, int]:
    """The drawn rectangle's inner edges: the lines (columns/rows) of box colour that run through
    the middle band of the ground-truth box, nearest to its centre on each side."""
    x1, y1, x2, y2 = box
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    rows = slice(int(y1 + 0.3 * (y2 - y1)), int(y2 - 0.3 * (y2 - y1)))
    cols = slice(int(x1 + 0.3 * (x2 - x1)), int(x2 - 0.3 * (x2 - x1)))
    vertical = np.nonzero(mask[rows, :].mean(axis=0) > 0.8)[0]
    horizontal = np.nonzero(mask[:, cols].mean(axis=1) > 0.8)[0]
    left, right = vertical[vertical < cx], vertical[vertical > cx]
    top, bottom = horizontal[horizontal < cy], horizontal[horizontal > cy]
    assert left.size and right.size and top.size and bottom.size, "no rectangle of the phrase colour around the GT"
    return int(left.max()), int(top.max()), int(right.min()), int(bottom.min())


def _ask_detection_red_balloon(page, shot_name: str) -> tuple[np.ndarray, np.ndarray]:
    """Click [detection], type "red balloon", send; returns the answer picture as shown (scene
    pixels) and the mask of what the app drew on top of the scene."""
    page.get_by_role("button", name="[detection]").click()
    page.get_by_label("Message for [detection]").fill("red balloon")
    page.get_by_role("button", name="Send").click()
    shown = page.locator(".st-key-answer_image img")
    shown.wait_for()
    # the message element can be attached before its text renders (then it reads only its avatar's
    # icon name, "face"): wait for the text instead of reading it once
    sync_api.expect(page.get_by_test_id("stChatMessage").first).to_contain_text(
        "[detection] red balloon", timeout=UI_TIMEOUT_MS)
    page.wait_for_function("e => e.complete && e.naturalWidth > 0", arg=shown.element_handle())
    shot = Image.open(io.BytesIO(shown.screenshot(path=str(_artifacts() / shot_name)))).convert("RGB")
    scene = np.asarray(SAMPLE.image).astype(int)
    bb, (sw, sh) = shown.bounding_box(), shot.size
    if (bb["width"], bb["height"]) == (W, H) and (sw, sh) != (W, H) and sw >= W and sh >= H:
        # shown at its own size at a fractional page position: the screenshot has a row/column
        # of the page more; crop it away (scaling would shift half the picture by a pixel)
        shot = min((shot.crop((dx, dy, dx + W, dy + H)) for dx in range(sw - W + 1) for dy in range(sh - H + 1)),
                   key=lambda s: np.abs(np.asarray(s).astype(int) - scene).mean())
    if shot.size != (W, H):  # the picture may be shown scaled; compare in scene pixels
        shot = shot.resize((W, H), Image.NEAREST)
    pixels = np.asarray(shot).astype(int)
    return pixels, np.abs(pixels - scene).max(axis=2) > 30  # drawn by the app, not part of the scene


def _assert_rectangle_at(pixels, changed, color, drawn) -> None:
    """The browser shows a rectangle of ``color`` whose inner edges are ``drawn`` (within the
    line width)."""
    import supervision as sv

    mask = changed & (np.abs(pixels - color).max(axis=2) <= 40)
    found = _inner_edges(mask, drawn)
    tol = sv.calculate_optimal_line_thickness((W, H)) + 1
    assert all(abs(f - d) <= tol for f, d in zip(found, drawn)), f"drawn at {found}, expected {drawn} (GT {GT})"


def test_detection_red_balloon_box_is_drawn_around_the_red_balloon(page):
    """Fixed ground-truth answer: the answer picture in the browser has a box of the phrase's
    colour exactly around the scene's ground-truth red balloon (pixel check)."""
    pixels, changed = _ask_detection_red_balloon(page, "app_e2e_detection_answer.png")
    color = _hex_rgb(phrase_colors(B.parse(FAKE_ANSWER))["red balloon"])
    # where the answer's grid box lies on the scene (within 1/100 of the image of the GT box) ...
    drawn = B.to_pixels(B.from_pixels(GT, W, H), W, H)
    assert all(abs(d - g) <= (W if i % 2 == 0 else H) / 100 for i, (d, g) in enumerate(zip(drawn, GT)))
    # ... and the browser shows a rectangle exactly there
    _assert_rectangle_at(pixels, changed, color, drawn)
    x1, y1, x2, y2 = GT
    cy, cx = int((y1 + y2) / 2), int((x1 + x2) / 2)
    assert not changed[cy - 2:cy + 3, cx - 2:cx + 3].any(), "the box must be an outline, the object still visible"
    # the phrase in the answer text has the colour of its box
    phrase = page.locator(".mgv2-answer .mgv2-phrase").first
    sync_api.expect(phrase).to_have_text("red balloon", timeout=UI_TIMEOUT_MS)
    css = phrase.evaluate("e => getComputedStyle(e).color")
    assert css == "rgb({}, {}, {})".format(*color)
    page.screenshot(path=str(_artifacts() / "app_e2e_detection_page.png"), full_page=True)


def test_bundled_model_boxes_the_red_balloon_in_the_browser(model_page):
    """The bundled demo model, as `streamlit run app/main.py` starts it, with greedy decoding (the
    benchmark setting; the app's default is the official demo's sampling, which may answer
    differently each time): its answer to "[detection] red balloon" boxes the scene's red
    balloon, and the browser shows that box."""
    from eval.metrics import box_iou

    page = model_page
    page.get_by_test_id("stSidebar").get_by_text("greedy", exact=True).click()
    sync_api.expect(page.get_by_test_id("stApp")).to_have_attribute(
        "data-test-script-state", "notRunning", timeout=UI_TIMEOUT_MS)
    sync_api.expect(page.get_by_role("slider", name="Temperature")).to_be_disabled()
    pixels, changed = _ask_detection_red_balloon(page, "app_e2e_model_detection_answer.png")
    page.get_by_text("Raw model text").first.click()
    raw_box = page.locator(".mgv2-raw, [data-testid='stCode']").first
    sync_api.expect(raw_box).not_to_be_empty(timeout=UI_TIMEOUT_MS)
    raw = raw_box.inner_text().strip()
    parsed = B.parse(raw)
    pairs = [(g.phrase, B.to_pixels(b, W, H)) for g in parsed.groups for b in g.boxes]
    assert pairs, f"the model's answer holds no box: {raw!r}"
    phrase, best = max(pairs, key=lambda pb: box_iou(pb[1], GT))
    page.screenshot(path=str(_artifacts() / "app_e2e_model_detection_page.png"), full_page=True)
    assert box_iou(best, GT) >= 0.5, f"the model boxed {best}, the red balloon is at {GT} ({raw!r})"
    assert phrase is not None, f"a detection answer names its phrase: {raw!r}"
    color = _hex_rgb(phrase_colors(parsed)[phrase])
    _assert_rectangle_at(pixels, changed, color, tuple(best))


def test_identify_region_by_drag_and_by_two_clicks(page):
    """[identify]: a drag on the picture, then two clicks, set the region sent as box text."""
    page.get_by_role("button", name="[identify]").click()
    canvas = page.frame_locator("iframe[title*='streamlit_image_coordinates']").locator("img#image")
    canvas.wait_for()
    page.wait_for_function("e => e.complete && e.naturalWidth > 0", arg=canvas.element_handle())
    bb = canvas.bounding_box()
    sx, sy = bb["width"] / W, bb["height"] / H

    def cell(box):
        """Grid box of ``box`` and the screen points of its corners, each in the middle of its
        1/100 grid cell so that a pixel of rounding in the browser cannot change the box text."""
        grid = B.from_pixels(box, W, H).coords
        xs = [bb["x"] + (g + 0.5) * W / 100 * sx for g in (grid[0], grid[2])]
        ys = [bb["y"] + (g + 0.5) * H / 100 * sy for g in (grid[1], grid[3])]
        return B.box_text(grid), (xs[0], ys[0]), (xs[1], ys[1])

    expected, (ax, ay), (bx, by) = cell(GT)
    page.mouse.move(ax, ay)
    page.mouse.down()
    page.mouse.move((ax + bx) / 2, (ay + by) / 2, steps=4)
    page.mouse.move(bx, by, steps=4)
    page.mouse.up()
    # a rerun can show a stale form beside the new one for a moment: wait for the one with the box
    grid_text = page.get_by_text("Region sent with [identify]")
    sync_api.expect(grid_text.filter(has_text=expected).first).to_be_visible(timeout=UI_TIMEOUT_MS)

    expected_other, (ax, ay), (bx, by) = cell(OTHER)
    page.mouse.click(ax, ay)
    sync_api.expect(page.get_by_text("First corner at")).to_be_visible(timeout=UI_TIMEOUT_MS)
    page.mouse.click(bx, by)
    sync_api.expect(grid_text.filter(has_text=expected_other).first).to_be_visible(timeout=UI_TIMEOUT_MS)
    # that rerun is still drawing the rest of the page (for a moment two forms: a stale one too)
    sync_api.expect(page.get_by_test_id("stApp")).to_have_attribute(
        "data-test-script-state", "notRunning", timeout=UI_TIMEOUT_MS)

    page.get_by_role("button", name="Send").click()
    message = page.get_by_test_id("stChatMessage").first
    sync_api.expect(message).to_contain_text(f"[identify] what is this {expected_other}", timeout=UI_TIMEOUT_MS)
    page.screenshot(path=str(_artifacts() / "app_e2e_identify_page.png"), full_page=True)
