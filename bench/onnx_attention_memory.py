"""Peak memory and time of the ONNX pipeline with the autoencoder's attention whole or in query blocks.

    python bench/onnx_attention_memory.py                          # bundled model, 600×400, 800×600, 1024×768
    python bench/onnx_attention_memory.py --sizes 600x400 --whole-sizes 600x400

The bundled model is exported once (its autoencoder's middle-block attention as a Scan over blocks of 1024
queries, what ``moebius export`` writes) and copied with the attention restored to the exporter's
MatMul → Softmax → MatMul, which holds the whole (N, N) score matrix; N = latent pixels, (W/4)·(H/4) for the
bundled f4 autoencoder, over the region the pipeline works on (the whole image up to 800 px; above, the
hole's bounding box with a 128 px margin). Each (graph, size) runs ``OnnxInpaintPipeline`` once in a fresh process on
examples/coffee.jpg resized to the size, with a centred 25 % hole and the weights' defaults, and reports the
process's peak resident memory, the call's seconds, and the largest difference from the block-wise output.
The whole-matrix graph runs only at ``--whole-sizes``: its memory grows with the square of the area, and a
size it cannot hold ends the process (the row says so).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

WORKER = r"""
import json, resource, sys, time
import numpy as np
from PIL import Image
from moebius.onnx import OnnxInpaintPipeline
folder, w, h, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
image = np.asarray(Image.open("examples/coffee.jpg").convert("RGB").resize((w, h), Image.LANCZOS))
mask = np.zeros((h, w), np.uint8)
mask[h // 4: 3 * h // 4, w // 4: 3 * w // 4] = 255
pipe = OnnxInpaintPipeline(folder)
pipe.set_progress_bar_config(disable=True)
start = time.perf_counter()
result = pipe(image, mask, seed=0, output_type="np").images[0]
seconds = time.perf_counter() - start
np.save(out, result)
print(json.dumps({"seconds": seconds, "peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}))
"""


def _size(text: str) -> tuple[int, int]:
    w, h = text.lower().split("x")
    return int(w), int(h)


def _run(folder: Path, size: tuple[int, int], out: Path) -> dict | None:
    done = subprocess.run([sys.executable, "-c", WORKER, str(folder), str(size[0]), str(size[1]), str(out)],
                          capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    if done.returncode != 0:
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", type=_size, default=[(600, 400), (800, 600), (1024, 768)],
                        metavar="WxH")
    parser.add_argument("--whole-sizes", nargs="*", type=_size, default=[(600, 400), (800, 600), (1024, 768)],
                        metavar="WxH",
                        help="sizes at which the whole-matrix graph also runs")
    args = parser.parse_args()

    from moebius.onnx.attention import restore_attention_file
    from moebius.onnx.export import export_weights
    from moebius.weights import default_model_dir

    root = Path(tempfile.mkdtemp(prefix="attention-bench-"))
    try:
        export_weights(default_model_dir(), root / "blocks")
        shutil.copytree(root / "blocks", root / "whole")
        for name in ("vae_encoder.onnx", "vae_decoder.onnx"):
            restore_attention_file(root / "whole" / name)
        print("| size | attention | peak memory GB | s per image | max diff to block-wise (levels) |")
        print("|---|---|---|---|---|")
        for size in args.sizes:
            blocks = _run(root / "blocks", size, root / "blocks.npy")
            rows = [("blocks of 1024 queries", blocks, None)]
            if size in args.whole_sizes:
                whole = _run(root / "whole", size, root / "whole.npy")
                diff = None
                if whole is not None and blocks is not None:
                    a, b = (np.load(root / f"{n}.npy").astype(int) for n in ("whole", "blocks"))
                    diff = int(np.abs(a - b).max())
                rows.append(("whole matrix", whole, diff))
            for label, result, diff in rows:
                if result is None:
                    print(f"| {size[0]}×{size[1]} | {label} | (the process died: out of memory) | | |")
                else:
                    print(f"| {size[0]}×{size[1]} | {label} | {result['peak_gb']:.2f} | "
                          f"{result['seconds']:.1f} | {'' if diff is None else diff} |", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
