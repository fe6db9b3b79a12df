"""The in-browser app (``moebius export-web``): download size of the site and seconds per image in headless
Chromium on the WASM backend (this machine's CPU), for the bundled model and the official-size model.

One run prints every figure side by side, so the times share the machine's load:

    python bench/web_benchmark.py                     # bundled model + full-size fp16 and int8, 512², 2 steps
    python bench/web_benchmark.py --precisions fp32 fp16 int8 --steps 1
    python bench/web_benchmark.py --skip-bundled --precisions int8     # a part at a time, on a slow machine

1. The bundled small model: its site, and one inpainting of examples/coffee.jpg (600×400, two painted strokes)
   with the weights' own call defaults (navier-stokes pre-fill, one DDIM step).
2. The full-size student and the official VAE with random, seeded weights (the cost does not depend on the
   values), exported once in float32 and converted to float16 / int8 as bench/onnx_benchmark.py does; each
   precision's site, and one 512² inpainting (centred strokes, default preset: guidance 2.5 = a CFG batch of 2,
   ``--steps`` DDIM steps).

Per site: the bytes a browser downloads (model + WASM runtime + app), seconds from opening the page to the
model being ready (fetch over loopback and session creation), and seconds per image with its phases. The
page runs onnxruntime-web single-threaded (a plain static server does not make the page cross-origin
isolated, which WASM threads need). Needs the built app (``npm ci && npm run build`` in web/), Playwright and
Chromium (/usr/bin/chromium, or $MOEBIUS_CHROMIUM).
"""

from __future__ import annotations

import argparse
import functools
import http.server
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

from PIL import Image

from moebius.onnx.layout import GRAPH_FILES
from moebius.onnx.site import export_site, site_bytes

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("MOEBIUS_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
PRECISIONS = {"fp32": ("float32", None), "fp16": ("float16", None), "int8": ("float32", "int8")}


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def _measure(site: Path, photo: Path, steps: int | None) -> dict:
    """Serve ``site``, open it in Chromium (WASM), paint strokes over ``photo``, inpaint once."""
    from playwright.sync_api import sync_playwright

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(site)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 900, "height": 700})
                start = time.perf_counter()
                page.goto(f"{url}?backend=wasm")
                page.wait_for_function("window.moebiusWeb.model() || window.moebiusWeb.modelError()", timeout=600_000)
                load_s = time.perf_counter() - start
                error = page.evaluate("window.moebiusWeb.modelError()")
                if error:
                    return {"error": error}
                page.set_input_files("#open-file", str(photo))
                page.wait_for_function("window.moebiusWeb.state() === 'ready'", timeout=30_000)
                page.click("#options-toggle")
                page.fill("#opt-seed", "0")
                if steps is not None:
                    page.fill("#opt-steps", str(steps))
                page.click("#options-toggle")
                box = page.locator("#view").bounding_box()
                cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
                for dy in (-40, 0, 40):
                    page.mouse.move(cx - 80, cy + dy)
                    page.mouse.down()
                    for step in range(1, 9):
                        page.mouse.move(cx - 80 + 20 * step, cy + dy)
                    page.mouse.up()
                page.click("#run")
                page.wait_for_function("['done', 'error'].includes(window.moebiusWeb.state())", timeout=900_000)
                if page.evaluate("window.moebiusWeb.state()") != "done":
                    return {"error": page.text_content("#status"), "load_s": load_s}
                return {"load_s": load_s, "seconds": page.evaluate("window.moebiusWeb.lastSeconds()"),
                        "timings": page.evaluate("window.moebiusWeb.lastTimings()")}
            finally:
                browser.close()
    finally:
        server.shutdown()
        server.server_close()


def _row(name: str, site: Path, result: dict) -> str:
    sizes = site_bytes(site)
    total = sum(sizes.values()) / 1e6
    sizes_text = f"{total:.1f} | {sizes['model'] / 1e6:.1f} | {sizes['runtime'] / 1e6:.1f} | {sizes['app'] / 1e3:.0f} KB"
    if "seconds" not in result:
        return f"| {name} | {sizes_text} | | cannot run: {str(result.get('error'))[:120]} | |"
    t = result["timings"] or {}
    phases = ", ".join(f"{k} {t[k] / 1e3:.1f}" for k in ("prefill", "encode", "unet", "decode") if k in t)
    return f"| {name} | {sizes_text} | {result['load_s']:.1f} | {result['seconds']:.1f} | {phases} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2, help="DDIM steps of the full-size runs")
    parser.add_argument("--size", type=int, default=512, help="side of the full-size runs' image")
    parser.add_argument("--precisions", nargs="*", default=["fp16", "int8"], choices=tuple(PRECISIONS),
                        help="full-size precisions to run (none: the bundled model only)")
    parser.add_argument("--skip-bundled", action="store_true", help="only the full-size runs")
    parser.add_argument("--small-export", type=Path, default=None,
                        help="an existing `moebius export` of the bundled model (default: export it now)")
    parser.add_argument("--workdir", type=Path, default=None, help="where sites go (default: a temporary folder)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="web-bench-", dir=args.workdir))
    rows = []
    try:
        from moebius.weights import default_model_dir

        if not args.skip_bundled:
            start = time.perf_counter()
            export_site(args.small_export or default_model_dir(), root / "site-small")
            print(f"# bundled model site in {time.perf_counter() - start:.0f} s", flush=True)
            rows.append(_row("bundled small model, fp32, coffee.jpg 600×400, its defaults (1 step)",
                             root / "site-small", _measure(root / "site-small", REPO / "examples" / "coffee.jpg", None)))
            print(rows[-1], flush=True)
            shutil.rmtree(root / "site-small", ignore_errors=True)
        if args.precisions:
            folders = _full_size_exports(root, args.precisions)
            photo = root / "photo.png"
            Image.open(REPO / "examples" / "coffee.jpg").convert("RGB").resize((args.size, args.size)).save(photo)
            for name, folder in folders.items():
                export_site(folder, root / f"site-{name}")
                rows.append(_row(f"official size, {name}, {args.size}², guidance 2.5, {args.steps} steps",
                                 root / f"site-{name}", _measure(root / f"site-{name}", photo, args.steps)))
                print(rows[-1], flush=True)
                shutil.rmtree(root / f"site-{name}", ignore_errors=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print("\n| site | download MB | model MB | WASM runtime MB | app | model ready s | s per image | "
          "phases s |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(row)


def _full_size_exports(root: Path, precisions: list[str]) -> dict[str, Path]:
    """The full-size student + official VAE (random weights): fp32 export, then fp16 / int8 conversions."""
    import torch

    from moebius.models.vae import OFFICIAL_VAE_CONFIG, AutoencoderKL
    from moebius.onnx.export import export_weights
    from moebius.onnx.precision import convert_precision
    from moebius.pipeline.loading import PipelineParts, save_pipeline
    from moebius.schedulers.ddim import DDIMConfig
    from step_benchmark import _model as step_benchmark_model  # bench/ is on sys.path when run as a script

    unet = step_benchmark_model(torch.float32, fast=False)
    torch.manual_seed(0)
    parts = PipelineParts(unet, AutoencoderKL(OFFICIAL_VAE_CONFIG).eval(), DDIMConfig(), None)
    save_pipeline(parts, root / "weights")
    start = time.perf_counter()
    export_weights(root / "weights", root / "fp32")
    print(f"# full-size fp32 export in {time.perf_counter() - start:.0f} s", flush=True)
    folders = {}
    for name in precisions:
        if name != "fp32":
            dtype, quantize = PRECISIONS[name]
            shutil.copytree(root / "fp32", root / name)
            for graph in GRAPH_FILES:
                convert_precision(root / name / graph, dtype, quantize)
        folders[name] = root / name
    return folders


if __name__ == "__main__":
    main()
