"""The browser app (``web/``, sites made by ``moebius export-web``): inpainting entirely in the page.

* The page's torch-free building blocks (seeded noise, the Navier–Stokes pre-fill, PIL's Gaussian feather,
  Lanczos resizing, the HD crop plan) run under node and are compared with the Python pipeline's own.
* The whole app in headless Chromium (Debian's /usr/bin/chromium, driven by Playwright; WASM backend):
  ``moebius export-web`` of the bundled model, served by a local static server; open examples/coffee.jpg,
  paint a mask by mouse drags, set a seed, inpaint, and compare with :class:`OnnxInpaintPipeline` on the same
  export, seed and mask. A screenshot is saved to $MOEBIUS_ARTIFACTS (default: the test's tmp folder).

The app must be built (``npm ci && npm run build`` in web/, as CI does); without it these tests fail.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import http.server
import io
import json
import os
import shutil
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from moebius.cli import main
from moebius.onnx.site import find_web_app

REPO = Path(__file__).resolve().parents[1]
WEB = REPO / "web"
CHROMIUM = os.environ.get("MOEBIUS_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
SEED = 1234


def _cli(argv: list[str]) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue() + err.getvalue()


def _node() -> str:
    node = shutil.which("node")
    assert node, "node is missing: install Node.js (apt-get install nodejs npm) and build web/ (npm ci && npm run build)"
    return node


def _run_node(script: str, payload: dict) -> dict:
    """Run an ES-module snippet with web/src's modules importable as ./X.js; JSON in on stdin, out on stdout."""
    code = f"import {{ readFileSync }} from 'node:fs';\nconst input = JSON.parse(readFileSync(0, 'utf8'));\n{script}"
    done = subprocess.run([_node(), "--input-type=module", "-e", code], input=json.dumps(payload), text=True,
                          capture_output=True, cwd=WEB / "src", timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


# ----------------------------------------------------------------------------------------------------
# The page's building blocks against the Python pipeline's


def test_seeded_noise_is_the_python_pipelines():
    from moebius.onnx.random import TorchCompatibleGenerator

    shapes = [[1, 4, 5, 7], [1, 4, 1, 1], [3], [1, 4, 16, 24], [1]]
    for seed in (0, 1234, 2**63 - 1):
        got = _run_node("import { TorchCompatibleGenerator } from './random.js';\n"
                        "const g = new TorchCompatibleGenerator(input.seed);\n"
                        "console.log(JSON.stringify(input.shapes.map((s) => Array.from(g.randn(s)))));",
                        {"seed": str(seed), "shapes": shapes})
        gen = TorchCompatibleGenerator(seed)
        for shape, values in zip(shapes, got):
            ref = gen.randn(tuple(shape)).ravel()
            assert np.abs(np.asarray(values, np.float32) - ref).max() <= 5e-7, (seed, shape)


def test_navier_stokes_fill_feather_and_lanczos_match_python():
    import cv2

    from moebius.pipeline import masks
    from moebius.pipeline.hd import plan_regions

    rgb = np.asarray(Image.open(REPO / "examples" / "coffee.jpg").convert("RGB"))[:160, :224].copy()
    hole = np.zeros(rgb.shape[:2], bool)
    hole[40:90, 60:130] = True
    hole[100:104, 20:200] = True
    got = _run_node(
        "import { navierStokesFill } from './prefill.js';\n"
        "import { featherAlpha, dilate } from './masks.js';\n"
        "import { resizeLanczos, planRegions } from './hd.js';\n"
        "const rgb = Uint8Array.from(input.rgb), hole = Uint8Array.from(input.hole), [w, h] = input.size;\n"
        "const big = new Uint8Array(1500 * 900); big[300 * 1500 + 200] = 1; big[700 * 1500 + 1300] = 1;\n"
        "console.log(JSON.stringify({ fill: Array.from(navierStokesFill(rgb, hole, w, h)),\n"
        "  feather: Array.from(featherAlpha(hole, w, h, 3)), dilated: Array.from(dilate(hole, w, h, 5)),\n"
        "  small: Array.from(resizeLanczos(rgb, w, h, 97, 61)), large: Array.from(resizeLanczos(rgb, w, h, 301, 250)),\n"
        "  plan: planRegions(big, 1500, 900, input.settings) }));",
        {"rgb": rgb.ravel().tolist(), "hole": hole.ravel().astype(int).tolist(), "size": [224, 160],
         "settings": {"hd_strategy": "crop", "crop_trigger_size": 800, "crop_margin": 128, "resize_limit": 1280,
                      "native_size": 512}})
    fill = np.asarray(got["fill"], np.uint8).reshape(rgb.shape)
    assert np.array_equal(fill, cv2.inpaint(rgb, hole.astype(np.uint8) * 255, 3, cv2.INPAINT_NS))
    assert np.array_equal(np.asarray(got["feather"]).reshape(hole.shape), masks.feather_alpha(hole, 3.0))
    assert np.array_equal(np.asarray(got["dilated"]).reshape(hole.shape) > 0, masks.dilate(hole, 5))
    for key, size in (("small", (97, 61)), ("large", (301, 250))):
        ref = np.asarray(Image.fromarray(rgb).resize(size, Image.LANCZOS)).astype(int)
        diff = np.abs(np.asarray(got[key]).reshape(ref.shape) - ref).max()
        assert diff <= 1, f"Lanczos {size}: max difference {diff} levels"
    big = np.zeros((900, 1500), bool)
    big[300, 200] = big[700, 1300] = True
    strategy, regions = plan_regions(big, "crop", crop_trigger_size=800, crop_margin=128, resize_limit=1280,
                                     native_size=512)
    assert got["plan"] == [strategy, [{"box": list(r.box), "size": list(r.size)} for r in regions]]


# ----------------------------------------------------------------------------------------------------
# export-web


def test_export_web_refuses_bad_destinations_in_one_line(tmp_path):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    code, out = _cli(["export-web", str(tmp_path / "no-such-weights"), str(taken)])
    assert code == 2 and out.count("\n") == 1 and "already holds other files" in out
    afile = tmp_path / "file"
    afile.write_text("x")
    code, out = _cli(["export-web", str(tmp_path), str(afile)])
    assert code == 2 and "is not a folder" in out


def test_export_web_without_a_built_app_says_how_to_build_it(tmp_path, monkeypatch):
    monkeypatch.setenv("MOEBIUS_WEB_DIST", str(tmp_path / "nowhere"))
    code, out = _cli(["export-web", str(tmp_path / "weights"), str(tmp_path / "site")])
    assert code == 2 and out.count("\n") == 1 and "npm ci && npm run build" in out
    assert not (tmp_path / "site").exists()


def test_export_web_refuses_a_build_older_than_its_sources(tmp_path, monkeypatch):
    from moebius.onnx import site as site_module

    web = tmp_path / "web"
    shutil.copytree(find_web_app(), web / "dist")
    (web / "src").mkdir()
    (web / "src" / "app.js").write_text("// edited after the build")
    os.utime(web / "dist" / "index.html", (1_000_000_000, 1_000_000_000))
    monkeypatch.delenv("MOEBIUS_WEB_DIST", raising=False)
    monkeypatch.setattr(site_module, "repo_web_dir", lambda: web)
    code, out = _cli(["export-web", str(tmp_path / "weights"), str(tmp_path / "site")])
    assert code == 2 and out.count("\n") == 1 and "is older than" in out and "npm run build" in out


# ----------------------------------------------------------------------------------------------------
# The app in Chromium


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """``moebius export-web`` of the bundled model; needs the built app (web/dist)."""
    from moebius.weights import default_model_dir

    find_web_app()  # a clear failure, before the export's minutes, when web/ is not built
    out = tmp_path_factory.mktemp("web") / "site"
    code, text = _cli(["export-web", str(default_model_dir()), str(out)])
    assert code == 0, text
    assert "python -m http.server -d" in text
    return out


@contextlib.contextmanager
def static_server(folder: Path):
    """``python -m http.server -d folder`` on a free loopback port, in a thread -> its base URL."""
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def from_data_url(url: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB"))


def artifacts_dir(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("MOEBIUS_ARTIFACTS", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def inpaint_in_browser(url: str, photo: Path, seed: int, screenshot_dir: Path | None = None,
                       backend: str = "wasm") -> dict:
    """Open the site, load ``photo``, paint two strokes, inpaint with ``seed`` -> the page's input, mask, result
    (uint8 arrays), seconds and any page errors or requests that left the site."""
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 900, "height": 700})
            outside: list[str] = []
            page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(url)
                       else (outside.append(route.request.url), route.abort()))
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"{url}?backend={backend}")
            page.wait_for_function("window.moebiusWeb.model() || window.moebiusWeb.modelError()", timeout=60_000)
            assert page.evaluate("window.moebiusWeb.modelError()") is None, page.text_content("#status")
            page.set_input_files("#open-file", str(photo))
            page.wait_for_function("window.moebiusWeb.state() === 'ready'", timeout=10_000)
            page.click("#options-toggle")
            page.fill("#opt-seed", str(seed))
            page.click("#options-toggle")
            box = page.locator("#view").bounding_box()
            cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
            for (x0, y0), (dx, dy) in (((cx - 120, cy - 40), (18, 6)), ((cx + 60, cy + 80), (4, -14))):
                page.mouse.move(x0, y0)
                page.mouse.down()
                for step in range(1, 9):
                    page.mouse.move(x0 + dx * step, y0 + dy * step)
                page.mouse.up()
            original = from_data_url(page.evaluate("window.moebiusWeb.originalDataURL()"))
            mask = from_data_url(page.evaluate("window.moebiusWeb.maskDataURL()"))[:, :, 0]
            page.click("#run")
            page.wait_for_function("['done', 'error'].includes(window.moebiusWeb.state())", timeout=300_000)
            assert page.evaluate("window.moebiusWeb.state()") == "done", page.text_content("#status")
            if screenshot_dir is not None:
                page.screenshot(path=str(screenshot_dir / "web_app_result.png"))
            result = from_data_url(page.evaluate("window.moebiusWeb.workDataURL()"))
            # compare: holding the button shows the original; undo goes back to it
            page.locator("#compare").dispatch_event("pointerdown")
            page.click("#undo")
            undone = from_data_url(page.evaluate("window.moebiusWeb.workDataURL()"))
            return {"original": original, "mask": mask, "result": result, "undone": undone,
                    "seed": page.evaluate("window.moebiusWeb.lastSeed()"),
                    "seconds": page.evaluate("window.moebiusWeb.lastSeconds()"),
                    "model": page.evaluate("window.moebiusWeb.model()"), "errors": errors, "outside": outside}
        finally:
            browser.close()


def _model_error(folder: Path) -> tuple[str, str, bool]:
    """Open the site in ``folder``; wait for the model to fail -> (message, the page's hint, Run disabled)."""
    sync_api = pytest.importorskip("playwright.sync_api")
    with static_server(folder) as url, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(url)
            page.wait_for_function("window.moebiusWeb.modelError()", timeout=30_000)
            assert not errors, errors
            return (page.evaluate("window.moebiusWeb.modelError()"), page.text_content("#hint"),
                    page.is_disabled("#run"))
        finally:
            browser.close()


def test_the_page_says_so_when_the_model_is_missing():
    """The built app alone (no model/ beside it): a clear message instead of a silent failure."""
    message, hint, run_disabled = _model_error(find_web_app())
    assert "no model at /model/" in message and "moebius export-web" in message and message in hint
    assert run_disabled


def test_the_page_refuses_a_model_too_large_for_the_browser(tmp_path):
    site = tmp_path / "site"
    shutil.copytree(find_web_app(), site)
    (site / "model").mkdir()
    files = {"unet": "unet.onnx", "vae_encoder": "vae_encoder.onnx", "vae_decoder": "vae_decoder.onnx"}
    (site / "model" / "moebius_onnx.json").write_text(json.dumps({"format": "moebius-onnx", "format_version": 1,
                                                                 "files": files}))
    for name in files.values():
        (site / "model" / name).write_bytes(b"")
    with open(site / "model" / "unet.onnx", "wb") as handle:  # sparse: 2.5 GB on paper, nothing on disk
        handle.truncate(2_500_000_000)
    message, _, run_disabled = _model_error(site)
    assert "the model is 2.5 GB" in message and "--dtype float16 or --quantize int8" in message, message
    assert run_disabled


@pytest.mark.slow
def test_the_page_inpaints_like_the_python_onnx_pipeline(site, tmp_path):
    from moebius.onnx import OnnxInpaintPipeline
    from moebius.pipeline.masks import feather_alpha

    photo = REPO / "examples" / "coffee.jpg"
    with static_server(site) as url:
        page = inpaint_in_browser(url, photo, SEED, artifacts_dir(tmp_path))
    assert not page["errors"] and not page["outside"], (page["errors"], page["outside"])
    assert page["seed"] == str(SEED) and page["model"]["backend"] == "wasm"
    original, mask, result = page["original"], page["mask"], page["result"]
    assert original.shape == (400, 600, 3) and result.shape == original.shape
    hole = mask > 127
    assert 1000 < hole.sum() < hole.size // 4
    assert np.array_equal(page["undone"], original)

    pipe = OnnxInpaintPipeline(site / "model")
    pipe.set_progress_bar_config(disable=True)
    expected = np.asarray(pipe(Image.fromarray(original), Image.fromarray(mask), seed=SEED).images[0]).astype(int)
    diff = np.abs(result.astype(int) - expected).max(axis=2)
    band = feather_alpha(hole, 3.0) > 0
    assert np.array_equal(result[~band], original[~band]), "pixels outside the mask's feather band changed"
    assert diff.max() <= 2, (f"the page's result differs from OnnxInpaintPipeline's by up to {diff.max()} levels "
                             f"(mean {diff[band].mean():.3f} in the mask and its band)")
    assert np.abs(result.astype(int) - original)[hole].mean() > 1, "the mask was not inpainted"
