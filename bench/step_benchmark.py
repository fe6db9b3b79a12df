"""Milliseconds per denoising step of the Moebius student: fast path vs reference path, fp32 vs bf16.

One run prints every figure side by side, so ratios are measured under the same machine load:

    python bench/step_benchmark.py                 # 512² batch 2 (CFG): ref/fast × fp32/bf16, then sizes
    python bench/step_benchmark.py --sizes 256 512 1024 2048 --repeats 3

Weights are random (seeded) with randomised BatchNorm statistics: the cost does not depend on the values.
Each figure is the median over ``--repeats`` timed forwards after one warm-up; paths are interleaved.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from moebius import create_model
from moebius.models.fast import optimize_for_inference


def _model(dtype: torch.dtype, fast: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    model = create_model("moebius").eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                m.running_var.uniform_(0.5, 1.5)
    if fast:
        model = optimize_for_inference(model)
    return model.to(dtype)


def _inputs(pixels: tuple[int, int], batch: int, dtype: torch.dtype, channels_last: bool):
    x = torch.randn(batch, 9, pixels[0] // 8, pixels[1] // 8, dtype=dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    ids = torch.tensor([list(range(10, 20)), list(range(10))]).repeat((batch + 1) // 2, 1)[:batch]
    return x, torch.tensor([500]), ids


def _time(model, inputs, repeats: int) -> list[float]:
    with torch.inference_mode():
        model(*inputs)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            model(*inputs)
            times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--sizes", type=int, nargs="*", default=[256, 512, 1024],
                        help="square image sides in pixels for the scaling table (fast path)")
    parser.add_argument("--scaling-dtype", choices=["fp32", "bf16"], default="bf16")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}

    print(f"# {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"## 512×512, batch {args.batch}: ms per step (median of {args.repeats})")
    print("| dtype | reference | fast | speed-up |")
    print("|---|---|---|---|")
    for name, dtype in dtypes.items():
        ref, fast = _model(dtype, fast=False), _model(dtype, fast=True)
        ref_in = _inputs((512, 512), args.batch, dtype, channels_last=False)
        fast_in = _inputs((512, 512), args.batch, dtype, channels_last=True)
        ref_times, fast_times = [], []
        for _ in range(args.repeats):  # interleaved, so drift hits both paths alike
            ref_times += _time(ref, ref_in, 1)
            fast_times += _time(fast, fast_in, 1)
        r, f = statistics.median(ref_times) * 1e3, statistics.median(fast_times) * 1e3
        print(f"| {name} | {r:.0f} | {f:.0f} | {r / f:.2f}× |", flush=True)
        del ref, fast

    dtype = dtypes[args.scaling_dtype]
    print(f"\n## fast path, {args.scaling_dtype}, batch {args.batch}: time per step against image size")
    print("| pixels | ms per step | ms per megapixel |")
    print("|---|---|---|")
    fast = _model(dtype, fast=True)
    for side in args.sizes:
        ms = statistics.median(_time(fast, _inputs((side, side), args.batch, dtype, True), args.repeats)) * 1e3
        print(f"| {side}×{side} | {ms:.0f} | {ms / (side * side / 1e6):.0f} |", flush=True)


if __name__ == "__main__":
    main()
