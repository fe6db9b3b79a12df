"""``moebius export-web SOURCE OUT_DIR``: a static site that inpaints in the browser (no server)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export-web", help="write a static web site that inpaints in the browser (no server)",
        description="Write OUT_DIR: the browser app (built from the repository's web/ folder with "
                    "`npm ci && npm run build`) and model/, the ONNX export of SOURCE, which the page runs with "
                    "onnxruntime-web (WebGPU where the browser has it, WASM otherwise). Host it with any static "
                    "file server, e.g. `python -m http.server -d OUT_DIR`. The folder is written whole or not at all.")
    parser.add_argument("source", help="weights folder (anything --weights takes), or a folder `moebius export` wrote")
    parser.add_argument("out_dir", help="new (or empty) output folder")
    parser.add_argument("--dtype", choices=("float32", "float16"), default="float32",
                        help="precision of the model's weights and activations (inputs and outputs stay float32)")
    parser.add_argument("--quantize", choices=("int8",), help="int8 weights for MatMul/Gemm/Conv (dynamic quantization)")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier site in OUT_DIR")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..onnx.site import export_site, site_bytes
    from .export import _human

    written = export_site(args.source, args.out_dir, dtype=args.dtype, quantize=args.quantize,
                          overwrite=args.overwrite)
    for path in written:
        print(f"wrote {path} ({_human(path.stat().st_size)})")
    sizes = site_bytes(args.out_dir)
    print(f"site {args.out_dir}: {_human(sum(sizes.values()))} to download (model {_human(sizes['model'])}, "
          f"runtime {_human(sizes['runtime'])}, app {_human(sizes['app'])}); "
          f"serve it with: python -m http.server -d {args.out_dir}")
    return 0
