"""Times one export folder under one ONNX Runtime execution provider; prints a JSON line.

Run by ``bench/onnx_benchmark.py --openvino-python PY`` in another interpreter, because execution providers
such as OpenVINO ship as their own onnxruntime package (``onnxruntime-openvino``), which replaces the plain
one. Imports only onnxruntime, numpy, Pillow and the torch-free ``moebius.onnx``:

    PYTHONPATH=src python bench/onnx_provider_worker.py EXPORT_DIR --provider OpenVINOExecutionProvider
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import onnxruntime as ort

from moebius.onnx.pipeline import OnnxInpaintPipeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder")
    parser.add_argument("--provider", required=True)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    pipe = OnnxInpaintPipeline(args.folder, providers=[args.provider])
    pipe.set_progress_bar_config(disable=True)
    session = pipe.sessions["unet"]
    lat = args.size // 8
    rng = np.random.default_rng(0)
    feed = {"sample": rng.standard_normal((2, 9, lat, lat)).astype(np.float32), "timestep": np.array([500, 500]),
            "input_ids": np.array([list(range(10, 20)), list(range(10))])}
    session.run(None, feed)  # warm-up: OpenVINO compiles the graph for this shape on the first call
    step_s = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        session.run(None, feed)
        step_s.append(time.perf_counter() - start)

    image = np.random.default_rng(0).integers(0, 256, (args.size, args.size, 3), dtype=np.uint8)
    mask = np.zeros((args.size, args.size), np.uint8)
    mask[args.size // 4: 3 * args.size // 4, args.size // 4: 3 * args.size // 4] = 255
    pipe(image, mask, seed=0, num_inference_steps=1, strength=1.0, prefill="none")  # warm-up: the VAE graphs compile on first use too
    start = time.perf_counter()
    pipe(image, mask, seed=0, num_inference_steps=args.steps, strength=1.0, prefill="none")
    e2e_s = time.perf_counter() - start
    print(json.dumps({"onnxruntime": ort.__version__, "providers": session.get_providers(),
                      "step_ms": statistics.median(step_s) * 1e3, "e2e_s": e2e_s}))


if __name__ == "__main__":
    main()
