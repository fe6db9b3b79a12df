"""PyTorch against ONNX Runtime on CPU: U-Net step, end to end, export time, file sizes, precision drift.

One run prints every figure side by side, so ratios are measured under the same machine load:

    python bench/onnx_benchmark.py                       # full-size random weights, 512², 20 steps
    python bench/onnx_benchmark.py --steps 5 --repeats 2 --photos examples/coffee.jpg
    python bench/onnx_benchmark.py --drift-only --photos photos/*.jpg   # the precision drift alone

1. The full-size student and the official VAE (random, seeded weights: the cost does not depend on the values)
   are saved as a pipeline folder and exported once in float32 (timed); float16 and int8 copies are converted
   from it (timed). File sizes per precision.
2. ms per U-Net step at 512², batch 2 (the CFG batch): the PyTorch fast path in fp32 and bf16, ONNX Runtime
   in fp32, fp16 and int8 (median of ``--repeats`` after a warm-up, interleaved).
3. Seconds per 512² image end to end (default preset, ``--steps`` DDIM steps, one image with a centred hole)
   for the same five.
   With ``--openvino-python PY`` (an interpreter with the ``onnxruntime-openvino`` package, which replaces
   plain onnxruntime and so cannot share this process), the same step and image under OpenVINO's execution
   provider, run by ``bench/onnx_provider_worker.py`` after a warm-up that lets OpenVINO compile each shape.
4. Drift of float16 and int8 against float32 on real photos (``--photos``, each with a centred 25 % hole) with
   the bundled small model, whose weights are trained: max and mean absolute difference of the output in
   levels inside the hole, and ST-LPIPS between the outputs (needs the stlpips-pytorch package).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from PIL import Image

from moebius import MoebiusInpaintPipeline
from moebius.models.fast import optimize_for_inference
from moebius.models.vae import OFFICIAL_VAE_CONFIG, AutoencoderKL
from moebius.onnx.export import export_weights
from moebius.onnx.layout import GRAPH_FILES, external_data_name
from moebius.onnx.pipeline import OnnxInpaintPipeline
from moebius.onnx.precision import convert_precision
from moebius.schedulers.ddim import DDIMConfig
from moebius.pipeline.loading import PipelineParts, save_pipeline
from moebius.weights import default_model_dir
from step_benchmark import _model as step_benchmark_model  # bench/ is on sys.path when run as a script

PRECISIONS = {"fp32": ("float32", None), "fp16": ("float16", None), "int8": ("float32", "int8")}


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())


def _exports(weights: Path, root: Path) -> tuple[dict[str, Path], dict[str, float]]:
    """fp32 export (timed) and its fp16/int8 conversions (timed, on top of it)."""
    folders, seconds = {}, {}
    start = time.perf_counter()
    export_weights(weights, root / "fp32")
    seconds["fp32"] = time.perf_counter() - start
    folders["fp32"] = root / "fp32"
    for name in ("fp16", "int8"):
        dtype, quantize = PRECISIONS[name]
        shutil.copytree(root / "fp32", root / name)
        start = time.perf_counter()
        for graph in GRAPH_FILES:
            convert_precision(root / name / graph, dtype, quantize)
        seconds[name] = seconds["fp32"] + time.perf_counter() - start
        folders[name] = root / name
    return folders, seconds


def _session(folder: Path) -> ort.InferenceSession | None:
    try:
        return ort.InferenceSession(str(folder / "unet.onnx"), providers=["CPUExecutionProvider"])
    except Exception as exc:  # e.g. a float16 kernel this CPU build lacks
        print(f"  (ONNX Runtime cannot run {folder.name}: {str(exc).splitlines()[0][:120]})")
        return None


def _scene(side: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
    mask = np.zeros((side, side), np.uint8)
    mask[side // 4: 3 * side // 4, side // 4: 3 * side // 4] = 255
    return image, mask


def _hole_mask(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    mask = np.zeros((h, w), np.uint8)
    mask[h // 4: 3 * h // 4, w // 4: 3 * w // 4] = 255
    return mask


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20, help="DDIM steps of the end-to-end runs")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--photos", nargs="*", default=["examples/coffee.jpg"], help="photos for the drift table")
    parser.add_argument("--openvino-python", default=None, metavar="PY",
                        help="a Python with onnxruntime-openvino: adds OpenVINO's execution provider to the tables")
    parser.add_argument("--drift-only", action="store_true", help="only the drift table (minutes, not an hour)")
    parser.add_argument("--workdir", type=Path, default=None, help="where exports go (default: a temporary folder)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="onnx-bench-", dir=args.workdir))
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"onnxruntime {ort.__version__}")
    if args.drift_only:
        _drift(root, args)
        shutil.rmtree(root, ignore_errors=True)
        return

    unet = step_benchmark_model(torch.float32, fast=False)  # seeded random weights, randomised BN statistics
    parts = PipelineParts(unet, AutoencoderKL(OFFICIAL_VAE_CONFIG).eval(), DDIMConfig(), None)
    save_pipeline(parts, root / "weights")
    folders, export_s = _exports(root / "weights", root)
    print("\n## export (full-size student + official VAE)")
    print("| precision | export s | unet.onnx MB | whole folder MB |")
    print("|---|---|---|---|")
    for name, folder in folders.items():
        unet_mb = sum((folder / n).stat().st_size for n in ("unet.onnx", external_data_name("unet.onnx"))
                      if (folder / n).is_file()) / 1e6
        print(f"| {name} | {export_s[name]:.0f} | {unet_mb:.0f} | {_folder_bytes(folder) / 1e6:.0f} |", flush=True)

    # U-Net step at size², batch 2
    lat = args.size // 8
    x = torch.randn(2, 9, lat, lat)
    ids = torch.tensor([list(range(10, 20)), list(range(10))])
    t = torch.tensor([500, 500])
    runners = {}
    for dtype_name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        fast = optimize_for_inference(unet).to(dtype)
        x_in = x[:1].to(dtype).contiguous(memory_format=torch.channels_last)  # the fast path shares the CFG input
        runners[f"PyTorch fast {dtype_name}"] = (lambda f=fast, xi=x_in: f(xi, t[:1], ids))
    for name, folder in folders.items():
        session = _session(folder)
        if session is not None:
            feed = {"sample": x.numpy(), "timestep": t.numpy(), "input_ids": ids.numpy()}
            runners[f"ONNX Runtime {name}"] = (lambda s=session, fd=feed: s.run(None, fd))
    times: dict[str, list[float]] = {name: [] for name in runners}
    with torch.inference_mode():
        for run in runners.values():
            run()
        for _ in range(args.repeats):
            for name, run in runners.items():
                start = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - start)
    print(f"\n## U-Net step, {args.size}², batch 2: ms (median of {args.repeats})")
    print("| runtime | ms per step |")
    print("|---|---|")
    for name, values in times.items():
        print(f"| {name} | {statistics.median(values) * 1e3:.0f} |", flush=True)
    del runners  # five live sessions and two fast copies of the full-size model: about 10 GB

    # end to end
    image, mask = _scene(args.size)
    print(f"\n## end to end, one {args.size}² image, default preset, {args.steps} steps: seconds")
    print("| runtime | s per image |")
    print("|---|---|")
    for dtype_name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        pipe = MoebiusInpaintPipeline(parts.unet, parts.vae).to(dtype=dtype)
        pipe.set_progress_bar_config(disable=True)
        start = time.perf_counter()
        pipe(image, mask, seed=0, num_inference_steps=args.steps)
        print(f"| PyTorch fast {dtype_name} | {time.perf_counter() - start:.1f} |", flush=True)
        parts.unet.float(), parts.vae.float()
    for name, folder in folders.items():
        try:
            onnx_pipe = OnnxInpaintPipeline(folder)
        except Exception as exc:  # noqa: BLE001 - reported, the table goes on
            print(f"| ONNX Runtime {name} | cannot run ({str(exc).splitlines()[0][:80]}) |")
            continue
        onnx_pipe.set_progress_bar_config(disable=True)
        start = time.perf_counter()
        onnx_pipe(image, mask, seed=0, num_inference_steps=args.steps)
        print(f"| ONNX Runtime {name} | {time.perf_counter() - start:.1f} |", flush=True)
        del onnx_pipe

    if args.openvino_python:
        _openvino(folders, args)
    _drift(root, args)
    shutil.rmtree(root, ignore_errors=True)


def _openvino(folders: dict[str, Path], args: argparse.Namespace) -> None:
    bench = Path(__file__).resolve().parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(bench.parent / "src"), os.environ.get("PYTHONPATH", "")])}
    print(f"\n## OpenVINO execution provider ({args.openvino_python}): U-Net step, {args.size}², batch 2, "
          f"and one {args.size}² image, {args.steps} steps")
    print("| runtime | ms per step | s per image |")
    print("|---|---|---|")
    for name, folder in folders.items():
        run = subprocess.run([args.openvino_python, str(bench / "onnx_provider_worker.py"), str(folder),
                              "--provider", "OpenVINOExecutionProvider", "--size", str(args.size),
                              "--steps", str(args.steps), "--repeats", str(args.repeats)],
                             capture_output=True, text=True, env=env)
        if run.returncode != 0:
            print(f"| ONNX Runtime {name}, OpenVINO | cannot run ({(run.stderr.strip().splitlines() or ['?'])[-1][:80]}) | |")
            continue
        result = json.loads(run.stdout.strip().splitlines()[-1])
        print(f"| ONNX Runtime {result['onnxruntime']} {name}, OpenVINO | {result['step_ms']:.0f} | "
              f"{result['e2e_s']:.1f} |", flush=True)


def _drift(root: Path, args: argparse.Namespace) -> None:
    bundled = default_model_dir()
    if bundled is None or not args.photos:
        return
    folders, _ = _exports(bundled, root / "small")
    outputs: dict[str, list[np.ndarray]] = {}
    holes = []
    for name, folder in folders.items():
        pipe = OnnxInpaintPipeline(folder)
        pipe.set_progress_bar_config(disable=True)
        outputs[name] = []
        for photo in args.photos:
            image = np.asarray(Image.open(photo).convert("RGB"))
            mask = _hole_mask(image)
            outputs[name].append(pipe(image, mask, seed=0, output_type="np").images[0])
            if name == "fp32":
                holes.append(mask > 0)
    try:
        from moebius.perceptual.lpips import load_lpips

        lpips = load_lpips("alex", "shift-tolerant")
    except Exception as exc:  # noqa: BLE001 - the table is printed without the column
        print(f"  (no ST-LPIPS: {str(exc).splitlines()[0][:100]})")
        lpips = None
    print(f"\n## drift against float32, bundled small model, {len(args.photos)} photo(s), centred 25 % hole, default preset")
    print("| precision | max abs diff (levels, hole) | mean abs diff (levels, hole) | ST-LPIPS to fp32 |")
    print("|---|---|---|---|")
    for name in ("fp16", "int8"):
        diffs = [np.abs(a.astype(int) - b.astype(int))[hole] for a, b, hole in zip(outputs[name], outputs["fp32"], holes)]
        distance = "n/a"
        if lpips is not None:
            def tensor(a: np.ndarray) -> torch.Tensor:
                return torch.from_numpy(a).permute(2, 0, 1)[None].float() / 127.5 - 1
            with torch.no_grad():
                distance = f"{np.mean([lpips(tensor(a), tensor(b)).item() for a, b in zip(outputs[name], outputs['fp32'])]):.4f}"
        print(f"| {name} | {max(int(d.max()) for d in diffs)} | {np.mean(np.concatenate(diffs)):.2f} | {distance} |",
              flush=True)


if __name__ == "__main__":
    main()
