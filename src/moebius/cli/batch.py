"""``moebius batch --images DIR --masks DIR_OR_FILE --output DIR``: inpaint a folder.

* Images pair with masks by file stem (``a.jpg`` with ``a.png``, or ``a_mask.png``); a single mask file
  applies to every image. (The official loader pairs by sorted position, which mispairs
  folders whose names do not sort alike.)
* The output of ``<images>/<sub>/a.jpg`` is ``<output>/<sub>/a.<ext>``, from the image's path alone,
  so that ``--skip-existing`` resumes any interrupted run (killed ones too) with exactly one result per
  input. Two images with the same output name (``a.png`` and ``a.jpg``, compared ignoring case) refuse the
  run up front, naming both; so does an ``--output`` that is, or contains, the images or masks folder. An
  output folder inside them is never read as input.
* Each output is written atomically (temp file + rename); a rerun first deletes the temp files a killed
  run left beside its outputs; an output that would replace an input is refused.
* An image that cannot be read, inpainted (out of memory included) or written is reported on one line
  (unprintable characters of names escaped) and skipped; a failed ``--batch-size`` batch is retried image
  by image. A summary follows; the exit status is 1 if anything failed. Ctrl-C stops the run.
* Under ``torchrun`` / ``accelerate launch`` (RANK and WORLD_SIZE set), process r takes pairs r, r + W,
  ... of the sorted list, so no two processes do the same work. Seeds follow the global position
  (``--seed S`` gives pair i seed S + i), so results do not depend on the number of processes.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from ..errors import MoebiusError
from ..image_files import IMAGE_SUFFIXES
from . import _options
from ._batch_inputs import Pair, find_pairs, one_line, remove_leftover_temp_files

_EPILOG = """\
outputs:
  <images>/<sub>/a.jpg is written to <output>/<sub>/a.<format>, whatever else
  the folders hold, so a rerun with --skip-existing after any interruption
  (a kill included) ends with exactly one result per input; it also deletes
  the hidden temp files a killed run left beside those outputs.
  Two images with the same output name (a.png and a.jpg; compared ignoring
  case) stop the run before any work, naming both: rename one, or use
  --format keep. --output may not be the --images or --masks folder nor
  contain them; it may lie inside them (with --recursive too), and nothing
  under it is ever read as an image or a mask.

failures:
  an image that cannot be read, inpainted (out of memory included) or
  written is reported on one line (unprintable characters in names escaped,
  e.g. \\n) and skipped; the summary counts it and the exit status is 1.
  Ctrl-C stops the run."""

# What one image can raise without the others being affected: unreadable or invalid files, decoding
# limits, out of memory (torch.cuda.OutOfMemoryError is a RuntimeError), a file system refusing one name.
_PER_IMAGE_ERRORS = (MoebiusError, ValueError, RuntimeError, MemoryError, OSError)


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "batch", help="inpaint every image of a folder", epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Inpaint each image in --images with the mask of the same file stem in --masks\n"
                    "(or one mask file for all), writing <output>/<stem>.<format>.")
    parser.add_argument("--images", required=True, metavar="DIR", help="folder of input images")
    parser.add_argument("--masks", required=True, metavar="DIR_OR_FILE", help="folder of masks, or one mask for all")
    parser.add_argument("--output", required=True, metavar="DIR", help="folder for the results")
    parser.add_argument("--recursive", action="store_true", help="also read sub-folders (kept in the output)")
    parser.add_argument("--skip-existing", action="store_true", help="leave outputs that already exist")
    parser.add_argument("--format", default="png", choices=("png", "jpg", "webp", "keep"),
                        help="output format (keep: the input's)")
    parser.add_argument("--batch-size", type=int, default=1, help="images per U-Net batch (equal sizes batch best)")
    _options.add_inpaint_options(parser)
    _options.add_model_options(parser)
    parser.set_defaults(run=run)


def shard(items: list[Any]) -> tuple[list[Any], int, int]:
    """This process's share under torchrun/accelerate (RANK, WORLD_SIZE), else everything."""
    from ..errors import InputError

    try:
        rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise InputError("RANK and WORLD_SIZE must be integers") from None
    if not 0 <= rank < world:
        raise InputError(f"RANK={rank} is outside WORLD_SIZE={world}")
    return items[rank::world], rank, world


class FailureLog:
    """Failed images, each reported on stderr as one line when it happens (above the progress bar)."""

    def __init__(self) -> None:
        self.count = 0
        self.bar: Any = None

    def add(self, image: Path, reason: str) -> None:
        self.count += 1
        line = f"failed: {one_line(str(image))}: {one_line(reason)}"
        if self.bar is not None:
            self.bar.write(line)
        else:
            print(line, file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    from ..errors import InputError
    from ..pipeline._progress import ProgressBar

    if args.batch_size < 1:
        raise InputError("--batch-size must be at least 1")
    output = Path(args.output)
    pairs = find_pairs(Path(args.images), Path(args.masks), output, args.format, args.recursive)
    if not pairs:
        raise InputError(f"no images in {one_line(args.images)} (looked for {', '.join(IMAGE_SUFFIXES)})")
    mine, rank, world = shard(pairs)
    inputs = {p.resolve() for pair in pairs for p in (pair.image, pair.mask) if p is not None}

    failures = FailureLog()
    todo: list[Pair] = []
    skipped = 0
    for pair in mine:
        if pair.mask is None:
            failures.add(pair.image, "no mask with this file stem")
        elif pair.output.resolve() in inputs:
            failures.add(pair.image, f"output {pair.output} would overwrite an input")
        elif args.skip_existing and pair.output.exists():
            skipped += 1
        else:
            todo.append(pair)
    remove_leftover_temp_files([pair.output for pair in mine], keep=inputs)

    written = 0
    if todo:
        output.mkdir(parents=True, exist_ok=True)  # an unusable output folder stops the run before any work
        pipe = _options.load_pipeline(args)
        desc = f"batch (rank {rank}/{world})" if world > 1 else "batch"
        enabled = not args.quiet and sys.stderr.isatty()
        with ProgressBar(len(todo), desc, enabled) as bar:
            failures.bar = bar
            pipe.set_progress_bar_config(disable=not enabled, parent=bar)  # the step count joins this line
            for start in range(0, len(todo), args.batch_size):
                chunk = todo[start:start + args.batch_size]
                written += _process(pipe, chunk, args, failures)
                bar.update(len(chunk))

    where = f"rank {rank}/{world}: " if world > 1 else ""
    print(f"{where}{written} written, {skipped} skipped (already there), {failures.count} failed "
          f"of {len(mine)} images -> {one_line(str(output))}")
    return 1 if failures.count else 0


def _process(pipe: Any, chunk: list[Pair], args: argparse.Namespace, failures: FailureLog) -> int:
    """Inpaint one chunk together; on a failure, retry its images one by one to isolate the bad one."""
    from ..pipeline.image_io import match_mask_size, to_image_data, to_mask_array

    loaded = []
    for pair in chunk:
        try:
            data = to_image_data(pair.image)
            mask = to_mask_array(pair.mask)
            if not args.resize_mask:
                match_mask_size(mask, data.size, False, f"mask {pair.mask.name}")
            loaded.append((pair, data, mask))
        except _PER_IMAGE_ERRORS as exc:
            failures.add(pair.image, _reason(exc))
    if not loaded:
        return 0
    try:
        return _inpaint(pipe, loaded, args)
    except _PER_IMAGE_ERRORS as exc:
        if len(loaded) == 1:
            failures.add(loaded[0][0].image, _reason(exc))
            _release_cached_memory()
            return 0
    _release_cached_memory()
    written = 0
    for item in loaded:
        try:
            written += _inpaint(pipe, [item], args)
        except _PER_IMAGE_ERRORS as exc:
            failures.add(item[0].image, _reason(exc))
            _release_cached_memory()
    return written


def _reason(exc: BaseException) -> str:
    """Our own errors as they are; anything else as its type and first line (torch's can run to pages)."""
    if isinstance(exc, MoebiusError):
        return str(exc)
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def _release_cached_memory() -> None:
    """Give the CUDA caching allocator's blocks back after a failure (out of memory), so the next image
    starts from a clean slate."""
    import torch

    if torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def _inpaint(pipe: Any, loaded: list[tuple[Pair, Any, Any]], args: argparse.Namespace) -> int:
    import numpy as np

    from ..pipeline.image_io import save_image

    images = [d.rgb if d.alpha is None else np.dstack([d.rgb, d.alpha]) for _, d, _ in loaded]
    seeds = None if args.seed is None else [args.seed + pair.index for pair, _, _ in loaded]
    result = pipe(images, [m for _, _, m in loaded], seed=seeds, **_options.call_options(args))
    for (pair, data, _), image, meta in zip(loaded, result.images, result.metadata):
        save_image(image, pair.output, exif=data.exif, icc_profile=data.icc_profile,
                   text=_options.metadata_text(meta))
    return len(loaded)
