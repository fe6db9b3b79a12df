"""Where one denoising step of the Moebius student spends its time, by module kind.

    python bench/step_profile.py [--dtype bf16] [--size 512]

Times each top-level part (resnets, Local-λ, Interactive-λ, Mix-FFN, samplers, ...) with forward hooks
over one step after a warm-up, for the reference path and the fast path, at batch 2.
"""

from __future__ import annotations

import argparse
import collections
import time

import torch

from moebius import create_model
from moebius.layers.dw_resblock import DWResnetBlock
from moebius.layers.lambda_layers import InteractiveLambda, LocalLambda
from moebius.layers.mix_ffn import MixFFN
from moebius.layers.resample import Downsample, Upsample
from moebius.models import fast as fast_path

PARTS = {
    DWResnetBlock: "DW resnets",
    LocalLambda: "Local-λ", fast_path.FastLocalLambda: "Local-λ",
    InteractiveLambda: "Interactive-λ", fast_path.FastInteractiveLambda: "Interactive-λ",
    MixFFN: "Mix-FFN", fast_path.FastMixFFN: "Mix-FFN",
    Downsample: "down/upsamplers", Upsample: "down/upsamplers", fast_path.PhaseUpsample: "down/upsamplers",
}


def profile(model: torch.nn.Module, x: torch.Tensor, ids: torch.Tensor) -> tuple[float, dict[str, float]]:
    spent: dict[str, float] = collections.defaultdict(float)
    starts: dict[int, float] = {}
    handles = []
    for module in model.modules():
        part = PARTS.get(type(module))
        if part is None:
            continue
        handles.append(module.register_forward_pre_hook(lambda m, _: starts.__setitem__(id(m), time.perf_counter())))
        handles.append(module.register_forward_hook(
            lambda m, _i, _o, part=part: spent.__setitem__(part, spent[part] + time.perf_counter() - starts[id(m)])))
    with torch.inference_mode():
        model(x, 500, ids)
        spent.clear()
        start = time.perf_counter()
        model(x, 500, ids)
        total = time.perf_counter() - start
    for handle in handles:
        handle.remove()
    return total, dict(spent)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--size", type=int, default=512, help="image side in pixels")
    args = parser.parse_args()
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    torch.manual_seed(0)
    reference = create_model("moebius").eval()
    ids = torch.tensor([list(range(10, 20)), list(range(10))])
    x = torch.randn(2, 9, args.size // 8, args.size // 8)
    rows = {}
    for name, model, inp in (
        ("reference", reference.to(dtype), x.to(dtype)),
        ("fast", fast_path.optimize_for_inference(reference).to(dtype), x.to(dtype).contiguous(memory_format=torch.channels_last)),
    ):
        rows[name] = profile(model, inp, ids)
    parts = sorted({p for _, spent in rows.values() for p in spent}, key=lambda p: -rows["reference"][1].get(p, 0))
    print(f"## {args.size}², batch 2, {args.dtype}: ms per step by part")
    print("| part | reference | fast |")
    print("|---|---|---|")
    for part in parts + ["other (norms, projections, glue)", "total"]:
        cells = []
        for total, spent in rows.values():
            if part == "total":
                value = total
            elif part.startswith("other"):
                value = total - sum(spent.values())
            else:
                value = spent.get(part, 0.0)
            cells.append(f"{value * 1e3:.0f}")
        print(f"| {part} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
