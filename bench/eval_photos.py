"""Run the offline photo benchmark for the classical baselines and print the README table.

    bash scripts/fetch_real_photos.sh ~/.cache/moebius/real_photos   # once
    python bench/eval_photos.py -o photo_report                          # = moebius eval --photos --threads 1

Same as ``moebius eval --photos``; kept as a script so the README's numbers have a one-line reproduction
that does not depend on the CLI wiring. Extra arguments are passed to ``moebius eval``.
"""

from __future__ import annotations

import argparse
import sys

from moebius.cli import eval as eval_cli
from moebius.errors import MoebiusError


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="eval_photos")
    eval_cli.register(parser.add_subparsers(dest="command", required=True))
    extra = [] if "--threads" in argv else ["--threads", "1"]
    args = parser.parse_args(["eval", "--photos", *extra, *argv])
    try:
        return args.run(args)
    except MoebiusError as exc:
        print(f"eval_photos: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
