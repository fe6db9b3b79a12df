"""The README's main command with the bundled model, by autoencoder path, measured side by side.

    python bench/bundled_main_command.py [--repeats 3]

``moebius inpaint examples/coffee.jpg examples/coffee_mask.png -o out.png`` runs one pipeline call on a
600×400 photo (640×512 once padded): a two-image encode, one student step and a decode, where the
autoencoder costs over 90 % of the call. This loads the bundled model once and times that call, the paths
interleaved, after one warm-up call each:

* ``reference VAE fp32``: the fast student with the reference autoencoder modules, in float32;
* ``fast VAE fp32``: :func:`~moebius.models.fast.optimize_for_inference` applied to the autoencoder too,
  in float32, NCHW (the default);
* ``fast VAE fp32, channels-last``: the same copy in the channels-last layout that reduced precision uses;
* ``fast VAE bf16``: the autoencoder alone in bfloat16 (``pipe.vae.to(torch.bfloat16)``), the student in
  float32;
* ``--dtype bfloat16``: both networks in bfloat16, as the command's ``--dtype bfloat16`` runs.

Each row reports the median seconds per call and how far its output image is from the reference row's
(uint8 levels). Then the whole command is run as a subprocess, split into import, model load and call.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from moebius import MoebiusInpaintPipeline
from moebius.models.fast import optimize_for_inference
from moebius.pipeline.sampler import SamplerModels
from moebius.weights.bundled import default_model_dir

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

# Run in a fresh interpreter: the command's own cost, import and weight loading included.
_COMMAND_TIMING = """
import time
start = time.perf_counter()
import numpy as np
import torch
from PIL import Image
from moebius import MoebiusInpaintPipeline
from moebius.models.fast import optimize_for_inference
from moebius.weights.bundled import default_model_dir
imported = time.perf_counter()
pipe = MoebiusInpaintPipeline.from_pretrained(default_model_dir(), dtype={dtype})
pipe.set_progress_bar_config(disable=True)
loaded = time.perf_counter()
pipe(np.asarray(Image.open({image!r}).convert("RGB")), np.asarray(Image.open({mask!r}).convert("L")), seed=0)
done = time.perf_counter()
print(imported - start, loaded - imported, done - loaded)
"""


def _pipelines() -> dict[str, MoebiusInpaintPipeline]:
    base = MoebiusInpaintPipeline.from_pretrained(default_model_dir())
    reference = MoebiusInpaintPipeline.from_pretrained(default_model_dir())
    fast_models = reference._models()
    # The fast student with the reference autoencoder modules: the baseline the other rows are held to.
    reference._fast_models = SamplerModels(fast_models.unet, reference.vae, reference.dtype, channels_last=True,
                                           shared_cfg_input=True)
    channels_last = MoebiusInpaintPipeline.from_pretrained(default_model_dir())
    channels_last._fast_models = SamplerModels(fast_models.unet, optimize_for_inference(channels_last.vae),
                                               channels_last.dtype, channels_last=True, shared_cfg_input=True)
    vae_bf16 = MoebiusInpaintPipeline(copy.deepcopy(base.unet), copy.deepcopy(base.vae).to(torch.bfloat16),
                                      base.scheduler_config, defaults=base.defaults)
    all_bf16 = MoebiusInpaintPipeline.from_pretrained(default_model_dir(), dtype=torch.bfloat16)
    pipes = {"reference VAE fp32": reference, "fast VAE fp32": base,
             "fast VAE fp32, channels-last": channels_last, "fast VAE bf16": vae_bf16,
             "--dtype bfloat16": all_bf16}
    for pipe in pipes.values():
        pipe.set_progress_bar_config(disable=True)
    return pipes


def _command_split(dtype: str) -> list[float]:
    code = _COMMAND_TIMING.format(dtype=dtype, image=str(EXAMPLES / "coffee.jpg"),
                                  mask=str(EXAMPLES / "coffee_mask.png"))
    with tempfile.TemporaryDirectory() as folder:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=folder)
    return [float(v) for v in out.stdout.split()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    image = np.asarray(Image.open(EXAMPLES / "coffee.jpg").convert("RGB"))
    mask = np.asarray(Image.open(EXAMPLES / "coffee_mask.png").convert("L"))
    pipes = _pipelines()
    outputs = {name: pipe(image, mask, seed=0, output_type="np").images[0] for name, pipe in pipes.items()}
    seconds: dict[str, list[float]] = {name: [] for name in pipes}
    for _ in range(args.repeats):
        for name, pipe in pipes.items():
            start = time.perf_counter()
            pipe(image, mask, seed=0, output_type="np")
            seconds[name].append(time.perf_counter() - start)

    reference = outputs["reference VAE fp32"].astype(np.int16)
    base = statistics.median(seconds["reference VAE fp32"])
    print(f"# {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"CPU capability {torch.backends.cpu.get_cpu_capability()}; 600×400 sample, median of {args.repeats}")
    print("| path | s per call | speed-up | max diff (levels) | pixels differing |")
    print("|---|---|---|---|---|")
    for name, times in seconds.items():
        diff = np.abs(outputs[name].astype(np.int16) - reference)
        median = statistics.median(times)
        print(f"| {name} | {median:.2f} | {base / median:.2f}× | {diff.max()} | "
              f"{(diff.max(axis=2) > 0).mean() * 100:.2f} % |", flush=True)

    print("\n| whole command, fresh interpreter | import s | load s | call s | total s |")
    print("|---|---|---|---|---|")
    for dtype in ("None", "torch.bfloat16"):
        parts = _command_split(dtype)
        label = "float32 (default)" if dtype == "None" else "--dtype bfloat16"
        print(f"| {label} | " + " | ".join(f"{p:.2f}" for p in parts) + f" | {sum(parts):.2f} |", flush=True)


if __name__ == "__main__":
    main()
