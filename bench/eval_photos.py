"""Run the offline photo benchmark for the classical baselines and print the README table.

    bash scripts/fetch_real_photos.sh ~/.cache/moebius/real_photos   # once
    python bench/eval_photos.py -o photo_report                          # = moebius eval --photos --threads 1

Same as ``moebius eval --photos`` with one torch thread; kept as a script so the README's numbers have a
one-line reproduction that calls the evaluation library directly. ``--method moebius --weights DIR`` adds
the model (repeat ``--method`` for several).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from moebius.errors import MoebiusError
from moebius.eval.methods import MoebiusSettings, method_factory
from moebius.eval.photos import DEFAULT_METHODS, DEFAULT_RESOLUTIONS, run_photo_benchmark


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="eval_photos", description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", required=True, metavar="DIR", help="folder for the reports")
    parser.add_argument("--photos-dir", metavar="DIR", help="fetched photos (default $MOEBIUS_PHOTOS or "
                                                            "~/.cache/moebius/real_photos)")
    parser.add_argument("--method", action="append", metavar="NAME",
                        help=f"a baseline or moebius (repeatable; default: {', '.join(DEFAULT_METHODS)})")
    parser.add_argument("--weights", metavar="DIR", help="with --method moebius: the weights folder")
    parser.add_argument("--resolutions", type=int, nargs="+", metavar="N", default=list(DEFAULT_RESOLUTIONS))
    parser.add_argument("--masks-per-image", type=int, default=2)
    parser.add_argument("--limit", type=int, metavar="N", help="use only the first N photos (a marked subset)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    moebius = (lambda: MoebiusSettings(weights=args.weights)) if args.weights else None
    try:
        summary = run_photo_benchmark(Path(args.output), args.method or DEFAULT_METHODS, args.resolutions,
                                      photos_dir=Path(args.photos_dir) if args.photos_dir else None,
                                      masks_per_image=args.masks_per_image, limit=args.limit,
                                      make_method=method_factory(moebius))
    except MoebiusError as exc:
        print(f"eval_photos: error: {exc}", file=sys.stderr)
        return 2
    print((Path(args.output) / "photos_summary.md").read_text())
    return 0 if summary["results"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
