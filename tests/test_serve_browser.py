"""The web editor in real headless Chromium (Debian's /usr/bin/chromium driven by Playwright; no browser is
downloaded): load the page, open an image, paint a stroke, run the tiny random-weight pipeline, and check the
result differs inside the stroke and nowhere else. A screenshot is saved to $MOEBIUS_ARTIFACTS (default: the
test's tmp folder). Skipped without Playwright or Chromium. Loopback only.
"""

from __future__ import annotations

import base64
import contextlib
import io
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

pytest.importorskip("fastapi")
sync_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = os.environ.get("MOEBIUS_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]

pytestmark = pytest.mark.skipif(shutil.which(CHROMIUM) is None and not Path(CHROMIUM).is_file(),
                                reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)")


@contextlib.contextmanager
def served(app):
    """Run ``app`` (made by ``create_app``) on a free loopback port in a thread -> its base URL."""
    from moebius.serve.http_server import serving_in_thread

    with serving_in_thread(app, app.state.settings, log_level="warning") as port:
        yield f"http://127.0.0.1:{port}/"


@pytest.fixture(scope="module")
def server_url():
    from test_pipeline import tiny_pipeline

    from moebius.serve import ServeSettings, create_app

    with served(create_app(ServeSettings(max_wait_ms=0), pipeline=tiny_pipeline())) as url:
        yield url


def artifacts_dir(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("MOEBIUS_ARTIFACTS", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def from_data_url(url: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB")).astype(int)


def test_editor_paints_runs_and_changes_only_the_stroke(server_url, tmp_path):
    from test_pipeline import scene

    rgb, _ = scene(256, 192, seed=2)
    source = tmp_path / "photo.png"
    Image.fromarray(rgb).save(source)
    out = artifacts_dir(tmp_path)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 390, "height": 760})  # a phone-sized screen
            blocked: list[str] = []
            page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(server_url)
                       else (blocked.append(route.request.url), route.abort()))
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(server_url)
            page.set_input_files("#open-file", str(source))
            page.wait_for_function("window.moebiusEditor.state() === 'ready'", timeout=10_000)
            assert page.evaluate("window.moebiusEditor.imageSize()") == [256, 192]

            page.click("#options-toggle")
            page.fill("#opt-steps", "2")
            page.fill("#opt-seed", "0")
            page.click("#options-toggle")
            box = page.locator("#view").bounding_box()
            cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
            page.mouse.move(cx - 40, cy)
            page.mouse.down()
            for step in range(1, 11):
                page.mouse.move(cx - 40 + 8 * step, cy + 2 * step)
            page.mouse.up()
            assert page.is_enabled("#undo")
            page.screenshot(path=str(out / "serve_editor_stroke.png"))

            page.click("#run")
            page.wait_for_function("['done', 'error'].includes(window.moebiusEditor.state())", timeout=120_000)
            status = page.text_content("#status")
            assert page.evaluate("window.moebiusEditor.state()") == "done", status
            page.screenshot(path=str(out / "serve_editor_result.png"))
            assert page.evaluate("window.moebiusEditor.lastSeed()") == "0"
            mask = from_data_url(page.evaluate("window.moebiusEditor.lastMaskDataURL()"))[:, :, 0] > 127
            result = from_data_url(page.evaluate("window.moebiusEditor.workDataURL()"))
            # Iterating: undo goes back to the opened image, redo to the result; the last mask can be reused.
            page.click("#undo")
            undone = from_data_url(page.evaluate("window.moebiusEditor.workDataURL()"))
            page.click("#redo")
            redone = from_data_url(page.evaluate("window.moebiusEditor.workDataURL()"))
            page.click("#options-toggle")
            assert page.is_enabled("#mask-reuse") and page.is_enabled("#download")
            page.click("#mask-reuse")
            assert (from_data_url(page.evaluate("window.moebiusEditor.maskDataURL()"))[:, :, 0] > 127).sum() > 200
            assert not errors and not blocked, (errors, blocked)
        finally:
            browser.close()

    assert result.shape == rgb.shape and 200 < mask.sum() < mask.size // 4
    assert np.array_equal(undone, rgb) and np.array_equal(redone, result)
    band = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).filter(ImageFilter.MaxFilter(17))) > 0
    diff = np.abs(result - rgb).sum(axis=2)
    assert diff[mask].mean() > 5, "the stroke was not inpainted"
    assert np.array_equal(result[~band], rgb[~band]), "pixels away from the stroke changed"


def test_two_finger_pinch_zooms_without_painting(server_url, tmp_path):
    from test_pipeline import scene

    source = tmp_path / "photo.png"
    Image.fromarray(scene(256, 192)[0]).save(source)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 390, "height": 760}, has_touch=True, is_mobile=True)
            page = context.new_page()
            page.goto(server_url)
            page.set_input_files("#open-file", str(source))
            page.wait_for_function("window.moebiusEditor.state() === 'ready'", timeout=10_000)
            cdp = context.new_cdp_session(page)
            box = page.locator("#view").bounding_box()
            cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2

            def touch(kind, points):
                cdp.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": [
                    {"x": x, "y": y, "id": i} for i, (x, y) in enumerate(points)]})

            before = page.evaluate("window.moebiusEditor.view()")["scale"]
            touch("touchStart", [(cx - 20, cy)])
            touch("touchStart", [(cx - 20, cy), (cx + 20, cy)])
            for k in range(1, 6):
                touch("touchMove", [(cx - 20 - 10 * k, cy), (cx + 20 + 10 * k, cy)])
            touch("touchEnd", [])
            after = page.evaluate("window.moebiusEditor.view()")["scale"]
            mask = from_data_url(page.evaluate("window.moebiusEditor.maskDataURL()"))
            page.screenshot(path=str(artifacts_dir(tmp_path) / "serve_editor_pinch.png"))
        finally:
            browser.close()
    assert after > 2 * before
    assert mask.max() == 0, "a pinch must not leave paint behind"
