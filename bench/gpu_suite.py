"""Every GPU figure the project quotes, measured in one run and printed as one Markdown table.

    python bench/gpu_suite.py                       # one CUDA device; sized for about 8 minutes on an H100
    python bench/gpu_suite.py --device cpu --quick  # tiny models and sizes: a smoke run of every figure

Full-size networks with random (seeded) weights: the cost does not depend on the values. The figures:

* U-Net step: ms per denoising step of the student's fast path at 512² and 1024², batch 1, 2 and 8, in fp16
  and bf16, eager; and under ``torch.compile`` as the pipeline's ``compile=True`` runs it (CUDA graphs),
  in bf16 at 512² and 1024², batch 2, with the first compiled call (compiling included; an Inductor cache
  left by an earlier run shortens it). Each compiled shape compiles anew (a minute or more), so the other
  shapes stay eager-only to keep the suite in budget.
* teacher step: PixelHacker (862M) at 512² batch 2 in bf16, with fla's Triton GLA kernel (the optional
  ``fla`` package; "not installed" when absent) and with our chunked GLA (``moebius.layers.gla``).
* VAE encode and decode at 512², batch 1, in bf16 (the channels-last, phase-split variant the pipeline uses
  in reduced precision).
* end to end: seconds per 512² image, default preset, 20 steps, bf16, eager and compiled.
* training: images per second of the full distillation step (``configs/moebius_distill.yaml``: student,
  frozen teacher, VAE encoder, losses, Muon) at 512² on random images, random teacher and VAE.

Peak memory is ``torch.cuda.max_memory_allocated`` over each figure; on the CPU each row says "n/a" and
the process's peak resident memory is printed once. Times are medians of 5 calls (1 with ``--quick``)
after warm-ups, with the device synchronised before and after each timed call. A figure that fails (out of
memory, a missing extra) prints its error in its row and the suite goes on.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable
from unittest import mock

import numpy as np
import torch
from PIL import Image

import e2e_benchmark
import step_benchmark
import train_step_profile
from moebius import create_model
from moebius.layers import gla
from moebius.models.fast import optimize_for_inference
from moebius.models.vae import OFFICIAL_VAE_CONFIG, TINY_VAE_CONFIG, AutoencoderKL, VAEConfig
from moebius.pipeline.compiled import CompiledUNet

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class Plan:
    """What one run measures."""

    unet: str  # student preset
    teacher: str  # teacher preset
    vae: VAEConfig
    sides: tuple[int, ...]  # square image sides in pixels of the U-Net table
    batches: tuple[int, ...]
    dtypes: tuple[str, ...]  # of the U-Net table
    dtype: str  # of every other figure
    compiled: tuple[tuple[int, int], ...]  # (side, batch) of the U-Net table also compiled, in ``dtype``
    compile_on_cpu: bool  # measure the compiled figures on a CPU too
    side: int  # of the teacher, VAE and end-to-end figures
    teacher_batch: int
    steps: int  # end to end
    repeats: int
    train_config: Path
    train_overrides: tuple[str, ...]
    train_batch: int
    train_side: int
    train_steps: int
    train_warmup: int


FULL = Plan(unet="moebius", teacher="pixelhacker", vae=OFFICIAL_VAE_CONFIG, sides=(512, 1024), batches=(1, 2, 8),
            dtypes=("fp16", "bf16"), dtype="bf16", compiled=((512, 2), (1024, 2)), compile_on_cpu=True,
            side=512, teacher_batch=2, steps=20, repeats=5, train_config=CONFIGS / "moebius_distill.yaml",
            train_overrides=("model.teacher_weights=null", "vae.weights=null", "loss.perceptual.weights=null",
                             "data.object_mask_p=0", "data.num_workers=4"),
            train_batch=8, train_side=512, train_steps=3, train_warmup=2)
# --quick: the tiny test networks at tiny sizes. Inductor takes minutes to compile even the tiny student
# on a CPU, so on the CPU --quick leaves the compiled figures out.
QUICK = Plan(unet="moebius-tiny", teacher="pixelhacker-tiny", vae=TINY_VAE_CONFIG, sides=(32,), batches=(1, 2),
             dtypes=("fp32", "bf16"), dtype="bf16", compiled=((32, 2),), compile_on_cpu=False, side=64,
             teacher_batch=1, steps=2, repeats=1, train_config=CONFIGS / "tiny_cpu.yaml",
             train_overrides=("data.num_workers=0",), train_batch=2, train_side=16, train_steps=1, train_warmup=1)


class Table:
    """Prints the header once and each row as soon as it is measured, so a cut-short run keeps its rows."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.rows: list[tuple[str, str, str, str]] = []
        print("| figure | case | value | peak memory |\n|---|---|---|---|", flush=True)

    def measure(self, figure: str, case: str, run: Callable[[], str]) -> str | None:
        """``run()`` -> the value's text; its error's first line instead when it fails."""
        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        try:
            value = run()
        except Exception as exc:  # noqa: BLE001 - reported in the row; the other figures still run
            lines = str(exc).strip().splitlines()
            value = f"error: {type(exc).__name__}: {lines[0] if lines else ''}".rstrip(": ")
            ok = False
        else:
            ok = True
        memory = f"{torch.cuda.max_memory_allocated(self.device) / 2**30:.2f} GiB" if cuda else "n/a"
        if cuda and not ok:
            torch.cuda.empty_cache()
        self.add(figure, case, value, memory)
        return value if ok else None

    def add(self, figure: str, case: str, value: str, memory: str = "n/a") -> None:
        self.rows.append((figure, case, value, memory))
        print(f"| {figure} | {case} | {value} | {memory} |", flush=True)


def _median_ms(call: Callable[..., Any], inputs: tuple, repeats: int, warmup: int = 1) -> float:
    return statistics.median(step_benchmark._time(call, inputs, repeats, warmup=warmup)) * 1e3


def unet_steps(table: Table, plan: Plan, device: torch.device) -> None:
    compiled_here = plan.compiled if device.type == "cuda" or plan.compile_on_cpu else ()
    for name in plan.dtypes:
        dtype = DTYPES[name]
        model = step_benchmark._model(dtype, fast=True, preset=plan.unet, device=str(device))
        compiled = CompiledUNet(model, device) if name == plan.dtype and compiled_here else None
        for side in plan.sides:
            for batch in plan.batches:
                inputs = step_benchmark._inputs((side, side), batch, dtype, True, str(device))
                case = f"{side}² batch {batch} {name}"
                eager = table.measure("U-Net step", f"{case} eager",
                                      lambda: f"{_median_ms(model, inputs, plan.repeats):.1f} ms")
                if compiled is None or (side, batch) not in compiled_here:
                    continue

                def run_compiled() -> str:
                    first = step_benchmark.first_call_seconds(compiled, inputs)
                    step_benchmark._time(compiled, inputs, 0, warmup=3)  # CUDA graphs record on the first calls
                    ms = _median_ms(compiled, inputs, plan.repeats, warmup=0)
                    ratio = f"{float(eager.split()[0]) / ms:.2f}× eager, " if eager else ""
                    return f"{ms:.1f} ms ({ratio}first call {first:.0f} s)"

                table.measure("U-Net step", f"{case} compiled", run_compiled)
    if not compiled_here:
        table.add("U-Net step", "compiled", "not measured: --quick on a CPU (Inductor compiles for minutes)")
    torch._dynamo.reset()


def teacher_steps(table: Table, plan: Plan, device: torch.device) -> None:
    dtype = DTYPES[plan.dtype]
    torch.manual_seed(0)
    teacher = create_model(plan.teacher).eval().to(device=device, dtype=dtype)
    inputs = step_benchmark._inputs((plan.side, plan.side), plan.teacher_batch, dtype, False, str(device))
    case = f"PixelHacker {plan.side}² batch {plan.teacher_batch} {plan.dtype}"
    if device.type != "cuda":
        table.add("teacher step", f"{case}, fla GLA kernel", "n/a: fla's kernel is CUDA-only")
    elif gla._fla_chunk_gla() is None:
        table.add("teacher step", f"{case}, fla GLA kernel", "not installed")
    else:
        table.measure("teacher step", f"{case}, fla GLA kernel",
                      lambda: f"{_median_ms(teacher, inputs, plan.repeats):.1f} ms")
    with mock.patch.object(gla, "_fla_chunk_gla", lambda: None):  # our chunked GLA even where fla is installed
        table.measure("teacher step", f"{case}, chunked GLA (ours)",
                      lambda: f"{_median_ms(teacher, inputs, plan.repeats):.1f} ms")


def vae_passes(table: Table, plan: Plan, device: torch.device) -> None:
    dtype = DTYPES[plan.dtype]
    torch.manual_seed(0)
    vae = AutoencoderKL(plan.vae).eval().to(device=device, dtype=dtype)
    if dtype != torch.float32:
        vae = optimize_for_inference(vae)  # what the pipeline runs in reduced precision
    pixels = torch.rand(1, 3, plan.side, plan.side, device=device, dtype=dtype) * 2 - 1
    factor = plan.vae.downsample_factor
    latents = torch.randn(1, plan.vae.latent_channels, plan.side // factor, plan.side // factor, device=device,
                          dtype=dtype)
    case = f"{plan.side}² batch 1 {plan.dtype}"
    table.measure("VAE encode", case,
                  lambda: f"{_median_ms(lambda x: vae.encode(x).mean, (pixels,), plan.repeats):.1f} ms")
    table.measure("VAE decode", case,
                  lambda: f"{_median_ms(vae.decode_latents, (latents,), plan.repeats):.1f} ms")


def end_to_end(table: Table, plan: Plan, device: torch.device) -> None:
    dtype = DTYPES[plan.dtype]
    reference, fast = e2e_benchmark._pipelines(dtype, str(device), plan.unet, plan.vae)
    del reference
    image = Image.open(e2e_benchmark.SAMPLE / "test_image.png").convert("RGB").resize((plan.side, plan.side))
    mask = Image.open(e2e_benchmark.SAMPLE / "test_mask.png").convert("L").resize((plan.side, plan.side))
    case = f"{plan.side}² default preset, {plan.steps} steps, {plan.dtype}"

    def seconds() -> float:
        return e2e_benchmark._timed(fast, image, mask, num_inference_steps=plan.steps, seed=0)[0]

    e2e_benchmark._timed(fast, image, mask, num_inference_steps=1, seed=0)  # warm-up
    eager = table.measure("end to end", f"{case} eager", lambda: f"{seconds():.2f} s per image")
    if device.type != "cuda" and not plan.compile_on_cpu:
        return

    def compiled() -> str:
        fast.compile_unet()
        first = seconds()
        steady = statistics.median(seconds() for _ in range(2))
        ratio = f"{float(eager.split()[0]) / steady:.2f}× eager, " if eager else ""
        return f"{steady:.2f} s per image ({ratio}first call {first:.0f} s)"

    table.measure("end to end", f"{case} compiled", compiled)
    torch._dynamo.reset()  # drops the compiled graphs and, with them, the last references to the networks


def training(table: Table, plan: Plan, device: torch.device) -> None:
    from accelerate import Accelerator

    from moebius.train.config import load_config

    with tempfile.TemporaryDirectory() as tmp:
        images = Path(tmp) / "images"
        images.mkdir()
        rng = np.random.default_rng(0)
        side = plan.train_side + plan.train_side // 4
        for i in range(2 * plan.train_batch):  # smooth random images: cheap to decode
            small = (rng.random((side // 8, side // 8, 3)) * 255).astype(np.uint8)
            Image.fromarray(small).resize((side, side), Image.BICUBIC).save(images / f"{i}.png")
        overrides = [*plan.train_overrides, f"data.image_dirs=[{images}]", "data.jsonl=[]",
                     f"data.batch_size={plan.train_batch}", f"data.resolution={plan.train_side}"]
        precision = load_config(plan.train_config, overrides).mixed_precision
        case = f"{plan.train_config.name}, {plan.train_side}², batch {plan.train_batch}, {precision}"

        def images_per_second() -> str:
            trainer = train_step_profile.build_trainer(
                str(plan.train_config), overrides, str(Path(tmp) / "run"),
                Accelerator(mixed_precision=precision, cpu=device.type == "cpu"))
            for _ in range(plan.train_warmup):  # cuDNN's search, the optimizer's state
                trainer.train_step()
            start = time.perf_counter()
            for _ in range(plan.train_steps):
                trainer.train_step()  # returns host floats: the step's device work is done
            rate = plan.train_steps * plan.train_batch / (time.perf_counter() - start)
            return f"{rate:.2f} images/s on {trainer.device}"

        table.measure("training", case, images_per_second)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:1, cpu")
    parser.add_argument("--quick", action="store_true", help="tiny networks and sizes, few repeats: a smoke run")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            sys.exit("gpu_suite: CUDA is not available here; pass --device cpu (with --quick for a smoke run)")
        if device.index is not None:
            torch.cuda.set_device(device)
    plan = QUICK if args.quick else FULL
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"# {where}, torch {torch.__version__}{', --quick' if args.quick else ''}\n", flush=True)
    start = time.perf_counter()
    table = Table(device)
    with torch.inference_mode():
        unet_steps(table, plan, device)
        teacher_steps(table, plan, device)
        vae_passes(table, plan, device)
    end_to_end(table, plan, device)
    training(table, plan, device)
    if device.type != "cuda":
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
        print(f"\npeak resident memory of the whole run: {peak:.2f} GiB")
    print(f"\n{time.perf_counter() - start:.0f} s in all")


if __name__ == "__main__":
    main()
