"""IOPaint 1.6.0's real built front-end (from an ``iopaint`` installed with ``pip install --no-deps
iopaint==1.6.0``; nothing of it lives in this repository) against ``create_app(ui="iopaint")`` with the tiny
random-weight pipeline, in headless Chromium (Debian's /usr/bin/chromium driven by Playwright): the page loads
with no console error and no toast, an image is opened, a stroke painted, the result drawn, Settings opens (with
its General tab's manual-inpainting and mask options), and every pixel more than 2 px outside the stroke is
byte-identical to the input. Screenshots go to $MOEBIUS_ARTIFACTS. Skipped without Playwright, Chromium or
iopaint. Loopback only.
"""

from __future__ import annotations

import base64
import importlib.util
import io
import time

import numpy as np
import pytest
from PIL import Image, ImageFilter

pytest.importorskip("fastapi")
sync_api = pytest.importorskip("playwright.sync_api")
from test_serve_browser import CHROMIUM, CHROMIUM_ARGS, artifacts_dir, served
from test_serve_browser import pytestmark as needs_chromium

pytestmark = [needs_chromium, pytest.mark.skipif(importlib.util.find_spec("iopaint") is None,
                                                 reason="pip install --no-deps iopaint==1.6.0")]


def decode(raw: bytes, mode: str = "RGB") -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(raw)).convert(mode))


def test_iopaint_front_end_paints_runs_and_changes_only_the_stroke(tmp_path):
    from test_pipeline import scene, tiny_pipeline

    from moebius.serve import ServeSettings, create_app

    rgb, _ = scene(256, 192, seed=2)
    source = tmp_path / "photo.png"
    Image.fromarray(rgb).save(source)
    app = create_app(ServeSettings(max_wait_ms=0, ui="iopaint"),
                     pipeline=tiny_pipeline(defaults={"num_inference_steps": 3}))
    exchanges: list[tuple[dict, bytes]] = []  # (inpaint request body, result bytes)
    failures: list[str] = []

    with served(app) as url, sync_api.sync_playwright() as p:
        def keep_result(route):
            response = route.fetch()
            exchanges.append((route.request.post_data_json, response.body()))
            route.fulfill(response=response)

        def note(response):
            if response.status >= 400:
                failures.append(f"{response.status} {response.request.method} {response.url}")

        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.route("**/api/v1/inpaint", keep_result)
            errors: list[str] = []
            page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("response", note)
            page.goto(url)
            page.set_input_files("input[type=file] >> nth=0", str(source))
            page.wait_for_selector("text=256x192", timeout=15_000)  # the image opened (gen-info answered)
            canvas = page.locator("canvas").first
            box = canvas.bounding_box()
            x0, y0 = box["x"] + 0.2 * box["width"], box["y"] + 0.4 * box["height"]
            page.mouse.move(x0, y0)
            page.mouse.down()
            for step in range(1, 11):
                page.mouse.move(x0 + 12 * step, y0 + 3 * step)
            page.mouse.up()  # the front-end runs the model on release
            deadline = time.monotonic() + 120
            while not exchanges and time.monotonic() < deadline:
                page.wait_for_timeout(100)
            assert exchanges, "no inpaint request was made"
            result = decode(exchanges[-1][1]).astype(int)
            for _ in range(100):  # the page loads the answer and draws it on its canvas
                shown = decode(base64.b64decode(page.evaluate(
                    "document.querySelector('canvas').toDataURL('image/png')").split(",", 1)[1])).astype(int)
                if np.array_equal(shown, result):
                    break
                page.wait_for_timeout(100)
            page.screenshot(path=str(artifacts_dir(tmp_path) / "serve_iopaint_result.png"))
            toasts = page.locator("li[role=status]").all_inner_texts()

            page.get_by_role("button").filter(has=page.locator("svg.lucide-settings")).click()
            dialog = page.get_by_role("dialog")
            dialog.wait_for(timeout=10_000)
            settings_text = dialog.inner_text()
            dialog.get_by_text("General", exact=True).click()
            page.wait_for_timeout(300)
            general_text = dialog.inner_text()
            page.screenshot(path=str(artifacts_dir(tmp_path) / "serve_iopaint_settings.png"))
        finally:
            browser.close()

    assert not errors and not failures and not toasts, (errors, failures, toasts)
    assert "Settings" in settings_text and app.state.runner.model_name in settings_text
    assert "Enable manual inpainting" in general_text and "Enable download mask" in general_text
    body = exchanges[-1][0]
    assert len(body) == 41 and body["sd_mask_blur"] == 12  # the front-end's own request, untouched settings
    hole = decode(base64.b64decode(body["mask"].split(",", 1)[1]), "L") > 127  # IOPaint reads brightness
    assert result.shape == rgb.shape and 200 < hole.sum() < hole.size // 4
    assert np.abs(result - rgb).sum(axis=2)[hole].mean() > 5, "the stroke was not inpainted"
    band = np.asarray(Image.fromarray(hole.astype(np.uint8) * 255).filter(ImageFilter.MaxFilter(5))) > 0
    assert np.array_equal(result[~band], rgb[~band]), "pixels more than 2 px outside the stroke changed"
    assert np.array_equal(shown, result), "the page does not show the result"
