"""Milliseconds per denoising step of the Moebius student: fast path vs reference path, fp32 vs bf16.

One run prints every figure side by side, so ratios are measured under the same machine load:

    python bench/step_benchmark.py                 # 512² batch 2 (CFG): ref/fast × fp32/bf16, then sizes
    python bench/step_benchmark.py --sizes 256 512 1024 2048 --repeats 3
    python bench/step_benchmark.py --compile --no-paths --sizes    # only: eager vs torch.compile, 512²

``--compile`` adds the fast path eager against the fast path under ``torch.compile`` (the pipeline's
``compile=True``), fp32 and bf16, with the first compiled call's time (compiling into an empty Inductor cache,
so the figure is what a first run pays) and the ms per step afterwards.

Weights are random (seeded) with randomised BatchNorm statistics: the cost does not depend on the values.
Each figure is the median over ``--repeats`` timed forwards after one warm-up; paths are interleaved.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import tempfile
import time

import torch

from moebius import create_model
from moebius.models.fast import optimize_for_inference


def _model(dtype: torch.dtype, fast: bool, preset: str = "moebius", device: str = "cpu") -> torch.nn.Module:
    torch.manual_seed(0)
    model = create_model(preset).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                m.running_var.uniform_(0.5, 1.5)
    if fast:
        model = optimize_for_inference(model)
    return model.to(device=device, dtype=dtype)


def _inputs(pixels: tuple[int, int], batch: int, dtype: torch.dtype, channels_last: bool, device: str = "cpu"):
    x = torch.randn(batch, 9, pixels[0] // 8, pixels[1] // 8, dtype=dtype).to(device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    ids = torch.tensor([list(range(10, 20)), list(range(10))]).repeat((batch + 1) // 2, 1)[:batch]
    return x, torch.tensor([500], device=device), ids.to(device)


def synchronize(device: torch.device | str) -> None:
    """Wait for the device's queued work, so that wall-clock times cover it (a no-op on the CPU)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def _time(model, inputs, repeats: int, warmup: int = 1) -> list[float]:
    device = inputs[0].device
    with torch.inference_mode():
        for _ in range(warmup):
            model(*inputs)
        times = []
        for _ in range(repeats):
            synchronize(device)
            start = time.perf_counter()
            model(*inputs)
            synchronize(device)
            times.append(time.perf_counter() - start)
    return times


def first_call_seconds(model, inputs) -> float:
    """Seconds of the first compiled call of a :class:`~moebius.pipeline.compiled.CompiledUNet` (tracing and
    compiling included); the call before it, a new shape's first, runs eagerly and is not timed."""
    with torch.inference_mode():
        model(*inputs)
        synchronize(inputs[0].device)
        start = time.perf_counter()
        model(*inputs)
        synchronize(inputs[0].device)
    return time.perf_counter() - start


def compile_comparison(pixels: int, batch: int, dtypes: dict[str, torch.dtype], repeats: int,
                       preset: str = "moebius", device: str = "cpu") -> list[tuple[str, float, float, float]]:
    """Fast path eager vs :class:`~moebius.pipeline.compiled.CompiledUNet` (the pipeline's ``compile=True``)
    at ``pixels``², interleaved -> (dtype name, eager ms, compiled ms, first compiled call s) per dtype.
    CUDA graphs record on the first calls after compiling, so the compiled path warms up three times."""
    from moebius.pipeline.compiled import CompiledUNet

    rows = []
    for name, dtype in dtypes.items():
        eager = _model(dtype, fast=True, preset=preset, device=device)
        compiled = CompiledUNet(eager, torch.device(device))
        inputs = _inputs((pixels, pixels), batch, dtype, True, device)
        first = first_call_seconds(compiled, inputs)
        eager_times, compiled_times = [], []
        _time(compiled, inputs, 0, warmup=3)
        for _ in range(repeats):  # interleaved, so drift hits both alike
            eager_times += _time(eager, inputs, 1)
            compiled_times += _time(compiled, inputs, 1, warmup=0)
        rows.append((name, statistics.median(eager_times) * 1e3, statistics.median(compiled_times) * 1e3, first))
        del eager, compiled
    return rows


@contextlib.contextmanager
def _environ(**values: str):
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--sizes", type=int, nargs="*", default=[256, 512, 1024],
                        help="square image sides in pixels for the scaling table (fast path)")
    parser.add_argument("--scaling-dtype", choices=["fp32", "bf16"], default="bf16")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--compile", action="store_true",
                        help="also compare the fast path eager against torch.compile (first compile takes minutes)")
    parser.add_argument("--compile-size", type=int, default=512, help="square side in pixels for --compile")
    parser.add_argument("--compile-dtypes", nargs="+", choices=["fp32", "bf16"], default=["fp32", "bf16"])
    parser.add_argument("--no-paths", action="store_true", help="skip the reference-vs-fast table")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}

    print(f"# {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    if args.compile:
        side = args.compile_size
        print(f"## fast path eager vs torch.compile, {side}×{side}, batch {args.batch}: ms per step (median of "
              f"{args.repeats}), and the first compiled call, compiling into an empty Inductor cache")
        print("| dtype | eager | compiled | speed-up | first compiled call |")
        print("|---|---|---|---|---|")
        chosen = {name: dtypes[name] for name in args.compile_dtypes}
        with tempfile.TemporaryDirectory() as cache, _environ(TORCHINDUCTOR_CACHE_DIR=cache):
            for name, e, c, first in compile_comparison(side, args.batch, chosen, args.repeats):
                print(f"| {name} | {e:.0f} | {c:.0f} | {e / c:.2f}× | {first:.0f} s |", flush=True)
        print()

    if not args.no_paths:
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
        print()

    if not args.sizes:
        return
    dtype = dtypes[args.scaling_dtype]
    print(f"## fast path, {args.scaling_dtype}, batch {args.batch}: time per step against image size")
    print("| pixels | ms per step | ms per megapixel |")
    print("|---|---|---|")
    fast = _model(dtype, fast=True)
    for side in args.sizes:
        ms = statistics.median(_time(fast, _inputs((side, side), args.batch, dtype, True), args.repeats)) * 1e3
        print(f"| {side}×{side} | {ms:.0f} | {ms / (side * side / 1e6):.0f} |", flush=True)


if __name__ == "__main__":
    main()
