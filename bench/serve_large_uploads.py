"""Memory of ``moebius serve`` under N concurrent 12-megapixel uploads, for several pixel budgets.

For each ``--budgets`` value (``--max-megapixels-in-flight``) a fresh server process on 127.0.0.1 (a tiny
random-weight pipeline, as in serve_load.py, inpainting a 128-pixel crop) takes ``--requests`` concurrent
4000x3000 JPEG photos, each with a PNG mask holding a small hole. Reported per budget: the server's resident
memory before the uploads, at its peak (the kernel's high-water mark, VmHWM) and once every answer is in
(settled), and the wall time. Linux only.

    python bench/serve_large_uploads.py --requests 12 --budgets 144 48 24 12
    python bench/serve_large_uploads.py --requests 4 --size 7000x7000 --flat-png --budgets 196 49
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

WIDTH, HEIGHT = 4000, 3000
NATIVE_SIZE = 128  # the tiny model's crop: the figures are the full-size image work, not a large model's


def upload_pair(width: int = WIDTH, height: int = HEIGHT, flat: bool = False) -> tuple[bytes, bytes]:
    """A smooth photo-like JPEG (``flat``: a one-colour PNG of a few KB that decodes to full size) and a PNG mask
    with a 64x64 hole -> (image bytes, mask bytes)."""
    mask = np.zeros((height, width), np.uint8)
    mask[height // 2: height // 2 + 64, width // 2: width // 2 + 64] = 255
    image_file, mask_file = io.BytesIO(), io.BytesIO()
    if flat:
        Image.new("RGB", (width, height), (90, 120, 150)).save(image_file, format="PNG")
    else:
        y, x = np.mgrid[0:height, 0:width].astype(np.float32)
        rgb = np.stack([128 + 100 * np.sin(x / (97 + 13 * c)) * np.cos(y / (71 + 7 * c)) for c in range(3)], -1)
        Image.fromarray(rgb.astype(np.uint8)).save(image_file, format="JPEG", quality=90)
    Image.fromarray(mask).save(mask_file, format="PNG")
    return image_file.getvalue(), mask_file.getvalue()


def memory_mb(pid: int) -> dict[str, float]:
    """Resident memory of process ``pid`` now (VmRSS) and at its peak (VmHWM), MiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = round(int(value.split()[0]) / 1024, 1)
    return {"rss": fields["VmRSS"], "peak": fields["VmHWM"]}


def serve(port: int, budget_mp: float, max_batch: int) -> None:
    """The server process: the tiny pipeline behind the real server settings, until killed."""
    import uvicorn
    from serve_load import tiny_pipeline

    from moebius.serve import ServeSettings, create_app
    from moebius.serve.http_server import server_config

    settings = ServeSettings(max_pixels=min(50_000_000, int(budget_mp * 1e6)),
                             max_pixels_in_flight=int(budget_mp * 1e6), max_batch=max_batch, max_queue=64,
                             request_timeout_s=900, body_timeout_s=300)
    app = create_app(settings, pipeline=tiny_pipeline(defaults={"native_size": NATIVE_SIZE}))
    uvicorn.Server(server_config(app, settings, "127.0.0.1", port, log_level="warning")).run()


async def _send_all(url: str, n: int, image: bytes, mask: bytes, steps: int) -> list[int]:
    import httpx

    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(base_url=url, timeout=900, limits=limits) as client:
        async def send(seed: int) -> int:
            r = await client.post("/v1/inpaint", files={"image": ("photo.jpg", image), "mask": ("mask.png", mask)},
                                  data={"seed": str(seed), "num_inference_steps": str(steps)})
            return r.status_code

        return list(await asyncio.gather(*(send(i) for i in range(n))))


def measure(budget_mp: float, requests: int, steps: int, max_batch: int, image: bytes, mask: bytes,
            upload_pixels: int, small: tuple[bytes, bytes]) -> dict:
    """Start a server with this budget, warm it up, send the uploads at once -> its memory figures."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1] / "src"),
                                                        os.environ.get("PYTHONPATH", "")])}
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(port), "--budgets", str(budget_mp),
                               "--max-batch", str(max_batch)], env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        import httpx

        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/v1/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError("server did not start")
            time.sleep(0.2)
        asyncio.run(_send_all(url, 1, *small, steps))  # the first call folds the model
        before = memory_mb(server.pid)
        started = time.perf_counter()
        statuses = asyncio.run(_send_all(url, requests, image, mask, steps))
        seconds = time.perf_counter() - started
        time.sleep(1.0)
        after = memory_mb(server.pid)
        health = httpx.get(f"{url}/v1/health", timeout=5).json()
    finally:
        server.terminate()
        server.wait(30)
    return {"budget_mp": budget_mp, "images_in_flight_at_most": int(budget_mp * 1e6 // upload_pixels),
            "ok": statuses.count(200), "statuses": sorted(set(statuses)), "rss_before_mb": before["rss"],
            "peak_rss_mb": after["peak"], "settled_rss_mb": after["rss"],
            "peak_above_before_mb": round(after["peak"] - before["rss"], 1), "seconds": round(seconds, 1),
            "batches": health["batches"], "images_per_batch": health["images_per_batch"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=12, help="concurrent uploads per budget (12)")
    parser.add_argument("--budgets", type=float, nargs="+", default=[144.0, 48.0, 24.0, 12.0],
                        help="--max-megapixels-in-flight values to compare")
    parser.add_argument("--size", default=f"{WIDTH}x{HEIGHT}", help="upload size, WIDTHxHEIGHT (4000x3000)")
    parser.add_argument("--flat-png", action="store_true",
                        help="upload one-colour PNGs of a few KB instead of photo-like JPEGs")
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--serve", type=int, metavar="PORT", help=argparse.SUPPRESS)  # the server process
    args = parser.parse_args(argv)
    if args.serve is not None:
        serve(args.serve, args.budgets[0], args.max_batch)
        return 0
    width, height = (int(v) for v in args.size.lower().split("x"))
    if not 1 <= args.requests <= 32 or len(args.budgets) > 6 or min(args.budgets) * 1e6 < width * height \
            or width * height > 50_000_000:
        parser.error("bounded: 1..32 requests, at most 6 budgets, uploads of at most 50 MP, each budget at least "
                     "one upload")
    image, mask = upload_pair(width, height, args.flat_png)
    small = upload_pair(64, 64)
    rows = [measure(b, args.requests, args.steps, args.max_batch, image, mask, width * height, small)
            for b in args.budgets]
    report = {"requests": args.requests, "size": f"{width}x{height}", "upload_bytes": len(image) + len(mask),
              "max_batch": args.max_batch, "steps": args.steps, "per_budget": rows}
    json.dump(report, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
