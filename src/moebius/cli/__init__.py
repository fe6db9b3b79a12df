"""The ``moebius`` command line: ``inpaint``, ``batch``, ``convert``, ``export``, ``export-web``, ``download``, ``doctor``,
``train``, ``gen-masks``, ``eval``, ``serve``.

Command modules import only the standard library at module level; torch and the models are imported
when a command runs, so ``moebius --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from ..errors import MoebiusError
from ..files import WriteError


def _build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(prog="moebius", description="Moebius image inpainting.")
    parser.add_argument("--version", action="version", version=f"moebius {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    convert = commands.add_parser(
        "convert", help="official diffusion_pytorch_model.bin <-> our folder (config.json + model.safetensors)",
        description="Convert an official checkpoint to our folder format, or a folder back to the official .bin. "
                    "The tensors are copied bit for bit.")
    convert.add_argument("input", help="official .bin/.safetensors (or a folder holding one), or one of our folders")
    convert.add_argument("output", help="a new folder (from official) or a new .bin path (from a folder)")
    convert.set_defaults(run=_run_convert)

    from . import batch, inpaint, serve, train, weights
    from . import eval as eval_command
    from . import export as export_command
    from . import export_web

    inpaint.register(commands)
    batch.register(commands)
    weights.register(commands)
    train.register(commands)
    eval_command.register(commands)
    serve.register(commands)
    export_command.register(commands)
    export_web.register(commands)
    return parser


def _run_convert(args: argparse.Namespace) -> int:
    from ..weights.serialization import convert

    out = convert(args.input, args.output)
    print(f"wrote {out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parse, run, and turn a user's mistake into one line on stderr and exit status 2."""
    args = _build_parser().parse_args(argv)
    try:
        return args.run(args)
    except MoebiusError as exc:
        print(f"moebius {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except WriteError as exc:  # read-only folder, full disk, ...: "cannot write PATH: reason"
        print(f"moebius {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"moebius {args.command}: error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
