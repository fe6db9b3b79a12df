"""Bounded loopback load test of ``moebius serve``: N concurrent same-size requests, several rounds.

Shows the micro-batching queue at work (pipeline calls < requests), that every request is answered exactly
once with its own seed, and that memory stays flat across rounds. Uses a tiny random-weight pipeline
unless ``--weights`` is given. Only 127.0.0.1 is contacted.

    python bench/serve_load.py --requests 50 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image


def tiny_pipeline(defaults: dict | None = None):
    """A random-weight ``moebius-tiny`` pipeline; ``defaults`` are its call defaults (as a weights folder's)."""
    import torch

    from moebius import create_model
    from moebius.models.vae import AutoencoderKL, VAEConfig
    from moebius.pipeline import MoebiusInpaintPipeline

    with torch.random.fork_rng():
        torch.manual_seed(0)
        unet = create_model("moebius-tiny")
        vae = AutoencoderKL(VAEConfig(block_out_channels=(8, 8, 16, 16), layers_per_block=1, norm_num_groups=4))
    pipe = MoebiusInpaintPipeline(unet, vae, defaults=defaults)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def inputs(size: int) -> tuple[bytes, bytes]:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    mask = np.zeros((size, size), np.uint8)
    mask[size // 4: size // 2, size // 4: size // 2] = 255
    out = []
    for array in (rgb, mask):
        buf = io.BytesIO()
        Image.fromarray(array).save(buf, format="PNG")
        out.append(buf.getvalue())
    return out[0], out[1]


def rss_mb() -> float:
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    except ImportError:  # Linux fallback
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")


async def one_round(url: str, n: int, image: bytes, mask: bytes, steps: int, first_seed: int,
                    timeout: float) -> dict:
    import httpx

    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits) as client:
        async def send(i: int):
            seed = first_seed + i
            r = await client.post("/v1/inpaint", files={"image": ("i.png", image), "mask": ("m.png", mask)},
                                  data={"seed": str(seed), "num_inference_steps": str(steps)},
                                  headers={"X-Request-Id": f"load-{seed}"})
            return seed, r.status_code, r.headers.get("x-seed"), len(r.content)

        started = time.perf_counter()
        answers = await asyncio.gather(*(send(i) for i in range(n)))
        elapsed = time.perf_counter() - started
    ok = [a for a in answers if a[1] == 200]
    seeds = [int(a[2]) for a in ok]
    return {"requests": n, "ok": len(ok), "statuses": sorted({a[1] for a in answers}),
            "seeds_match": all(int(a[2]) == a[0] for a in ok), "unique_answers": len(set(seeds)),
            "seconds": round(elapsed, 2)}


def run(requests: int = 50, rounds: int = 3, size: int = 64, steps: int = 2, max_batch: int = 8,
        max_queue: int = 64, weights: str | None = None, timeout: float = 120.0) -> dict:
    """Start a server on loopback, run ``rounds`` rounds of ``requests`` concurrent requests -> numbers."""
    from moebius.serve import ServeSettings, create_app
    from moebius.serve.app import _load
    from moebius.serve.http_server import serving_in_thread

    settings = ServeSettings(weights=weights, max_batch=max_batch, max_queue=max_queue, max_wait_ms=10,
                             max_connections=requests + 16)
    pipe = _load(settings) if weights else tiny_pipeline()
    app = create_app(settings, pipeline=pipe)
    with serving_in_thread(app, settings, log_level="warning") as port:
        url = f"http://127.0.0.1:{port}"
        image, mask = inputs(size)
        asyncio.run(one_round(url, 2, image, mask, steps, 10**6, timeout))  # warm-up (first call folds the model)
        runner, batcher = app.state.runner, app.state.batcher
        results, rss = [], [round(rss_mb(), 1)]
        calls_before, images_before = runner.calls, batcher.stats.images
        for r in range(rounds):
            results.append(asyncio.run(one_round(url, requests, image, mask, steps, r * requests, timeout)))
            rss.append(round(rss_mb(), 1))
        sizes = dict(sorted(batcher.stats.sizes.items()))
        return {
            "requests": requests * rounds, "answered_ok": sum(r["ok"] for r in results),
            "pipeline_calls": runner.calls - calls_before, "images_batched": batcher.stats.images - images_before,
            "batch_size_histogram_incl_warmup": sizes, "rejected_503": batcher.stats.rejected,
            "timed_out": batcher.stats.timed_out, "all_seeds_match": all(r["seeds_match"] for r in results),
            "answered_once": all(r["unique_answers"] == r["ok"] for r in results),
            "round_seconds": [r["seconds"] for r in results], "rss_mb_after_warmup_then_each_round": rss,
            "queue_depth_after": batcher.depth, "image_size": size, "steps": steps, "max_batch": max_batch,
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--weights", help="a real weights folder instead of the tiny random pipeline")
    args = parser.parse_args(argv)
    if args.requests > 500 or args.rounds > 20:
        parser.error("bounded: at most 500 requests and 20 rounds")
    report = run(args.requests, args.rounds, args.size, args.steps, args.max_batch, max(64, args.requests + 8),
                 args.weights)
    json.dump(report, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
