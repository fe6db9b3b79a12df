"""Install a trained small-model pipeline as the model bundled with the package (moebius/weights/small/).

    python scripts/ship_small_model.py runs/small/kl/distill/pipeline --card MODEL_CARD.md [--replace]

The pipeline folder (from ``scripts/train_small_model.py``'s export) is stored in float16, which halves it
(weights load back into float32 networks), checked against the float32 original on one denoiser call and one
decode, kept under the 20 MB the package allows, and installed with its model card in one rename, so the
bundled folder is never half written. Without ``--replace`` an installed model is left alone.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import torch

from moebius.errors import MoebiusError
from moebius.pipeline import MoebiusInpaintPipeline
from moebius.weights.bundled import BUNDLED_MODEL_DIR

MAX_BYTES = 20 * 10**6
# Float16 rounding moves a denoiser output or a decoded pixel by about 1e-3 of its scale; a wrong
# conversion (a dropped tensor, a swapped key) moves it by order 1.
MAX_DRIFT = 0.02


def to_float16(folder: Path) -> None:
    """Rewrite every .safetensors file under ``folder`` with its floating-point tensors in float16."""
    from safetensors.torch import load_file, save_file

    for path in folder.rglob("*.safetensors"):
        state = {k: v.half() if v.is_floating_point() else v for k, v in load_file(str(path)).items()}
        save_file(state, str(path), metadata={"format": "pt"})


def drift(a: MoebiusInpaintPipeline, b: MoebiusInpaintPipeline) -> float:
    """Largest relative change between two pipelines' denoiser outputs and decodes on a fixed input."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, a.unet.config.in_channels, 16, 16, generator=gen)  # [x_t | mask | masked latent]
    ids = torch.tensor([list(range(10))])
    z = torch.randn(1, a.unet.config.out_channels, 16, 16, generator=gen)
    worst = 0.0
    with torch.inference_mode():
        for t in (50, 500, 950):
            ya, yb = a.unet(x, t, ids), b.unet(x, t, ids)
            worst = max(worst, ((ya - yb).abs().max() / ya.abs().max()).item())
        da, db = a.vae.decode_latents(z), b.vae.decode_latents(z)
        worst = max(worst, ((da - db).abs().max() / da.abs().max()).item())
    return worst


def ship(pipeline: Path, card: Path, target: Path, replace: bool) -> int:
    """Pack ``pipeline`` with ``card`` into ``target``; -> the installed size in bytes."""
    if not card.is_file():
        raise MoebiusError(f"{card}: no such model card (data, compute, steps, metrics, limitations)")
    if target.exists() and not replace:
        raise MoebiusError(f"{target} already holds a model; pass --replace to swap it")
    original = MoebiusInpaintPipeline.from_pretrained(pipeline)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".ship-") as tmp:
        staged = Path(tmp) / "small"
        original.save_pretrained(staged)
        to_float16(staged)
        shutil.copyfile(card, staged / "MODEL_CARD.md")
        for path in [staged, *staged.rglob("*")]:  # temporary folders are private; a package is not
            path.chmod(0o755 if path.is_dir() else 0o644)
        size = sum(f.stat().st_size for f in staged.rglob("*") if f.is_file())
        if size > MAX_BYTES:
            raise MoebiusError(f"{size / 1e6:.1f} MB in float16: over the {MAX_BYTES / 1e6:.0f} MB the package allows")
        change = drift(original, MoebiusInpaintPipeline.from_pretrained(staged))
        if change > MAX_DRIFT:
            raise MoebiusError(f"float16 copy drifts by {change:.3g} of the output scale (limit {MAX_DRIFT})")
        old = Path(tmp) / "old"
        if target.exists():
            target.rename(old)  # dropped with the temporary folder
        staged.rename(target)
    return size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pipeline", type=Path, help="an exported pipeline folder (save_pretrained layout)")
    parser.add_argument("--card", type=Path, required=True, help="the model card to ship beside the weights")
    parser.add_argument("--target", type=Path, default=BUNDLED_MODEL_DIR, help=f"default {BUNDLED_MODEL_DIR}")
    parser.add_argument("--replace", action="store_true", help="swap out an installed model")
    args = parser.parse_args()
    try:
        size = ship(args.pipeline, args.card, args.target, args.replace)
    except MoebiusError as exc:
        sys.exit(f"error: {exc}")
    print(f"installed {args.target} ({size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
