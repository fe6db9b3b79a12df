"""``moebius inpaint IMAGE [MASK] -o OUT``: inpaint one image."""

from __future__ import annotations

import argparse
from pathlib import Path

from . import _options


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "inpaint", help="inpaint one image",
        description="Fill the white part of MASK in IMAGE. Without MASK, the image's transparent pixels are filled. "
                    "The output format follows OUT's extension; how it was made is stored in a PNG text chunk.")
    parser.add_argument("image", help="input image (any format Pillow reads; EXIF orientation is applied)")
    parser.add_argument("mask", nargs="?", help="mask image, white = fill (default: the image's alpha channel)")
    parser.add_argument("-o", "--output", required=True, help="output file (.png keeps alpha and metadata)")
    _options.add_inpaint_options(parser)
    _options.add_model_options(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import InputError
    from ..pipeline.image_io import save_image, to_image_data, to_mask_array

    output = Path(args.output)
    inputs = [Path(p) for p in (args.image, args.mask) if p]
    if any(output.resolve() == p.resolve() for p in inputs):
        raise InputError(f"output {output} is one of the inputs; choose another path")
    data = to_image_data(args.image)  # read (and fail) before loading any weights
    mask = to_mask_array(args.mask) if args.mask else None
    image = data.rgb if data.alpha is None else _rgba(data)
    pipe = _options.load_pipeline(args)
    result = pipe(image, mask, seed=args.seed, **_options.call_options(args))
    meta = result.metadata[0]
    save_image(result.images[0], output, exif=data.exif, icc_profile=data.icc_profile,
               text=_options.metadata_text(meta))
    note = " (mask empty: copied unchanged)" if meta.skipped else ""
    print(f"wrote {output} (preset {meta.preset}, seed {meta.seed}){note}")
    return 0


def _rgba(data):  # (H, W, 4) uint8
    import numpy as np

    return np.dstack([data.rgb, data.alpha])
