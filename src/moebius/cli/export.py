"""``moebius export SOURCE OUT_DIR``: ONNX graphs of a pipeline or of one U-Net checkpoint."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export", help="export weights to ONNX (run them without PyTorch)",
        description="Write unet.onnx, vae_encoder.onnx, vae_decoder.onnx and moebius_onnx.json for a weights folder "
                    "(anything --weights takes), or unet.onnx alone for a single U-Net checkpoint. Batch, height and "
                    "width stay dynamic. The folder is written whole or not at all.")
    parser.add_argument("source", help="weights folder (official layout, save_pretrained, the bundled model), "
                                       "or one U-Net checkpoint (diffusion_pytorch_model.bin, .safetensors)")
    parser.add_argument("out_dir", help="new (or empty) output folder")
    parser.add_argument("--dtype", choices=("float32", "float16"), default="float32",
                        help="precision of weights and activations (inputs and outputs stay float32)")
    parser.add_argument("--quantize", choices=("int8",), help="int8 weights for MatMul/Gemm/Conv (dynamic quantization)")
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default 18)")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier export in OUT_DIR")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..onnx.export import DEFAULT_OPSET, export_weights

    written = export_weights(args.source, args.out_dir, dtype=args.dtype, quantize=args.quantize,
                             opset=DEFAULT_OPSET if args.opset is None else args.opset, overwrite=args.overwrite)
    total = 0
    for path in written:
        size = path.stat().st_size
        total += size
        print(f"wrote {path} ({_human(size)})")
    print(f"total {_human(total)}")
    return 0


def _human(size: float) -> str:
    if size < 1000:
        return f"{size:.0f} B"
    for unit in ("KB", "MB", "GB"):
        size /= 1000
        if size < 1000:
            break
    return f"{size:.1f} {unit}"
