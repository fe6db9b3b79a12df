"""``moebius batch --images DIR --masks DIR_OR_FILE --output DIR``: inpaint a folder.

* Images pair with masks by file stem (``a.jpg`` with ``a.png``, or ``a_mask.png``); a single mask file
  applies to every image. (The official loader pairs by sorted position, spec §9 item 9.)
* Each output is written atomically (temp file + rename) as ``<output>/<stem>.<ext>``; an output that
  would replace an input is refused; ``--skip-existing`` resumes an interrupted run.
* A bad file is reported and skipped; a summary follows; the exit status is 1 if anything failed.
* Under ``torchrun`` / ``accelerate launch`` (RANK and WORLD_SIZE set), process r takes pairs r, r + W,
  ... of the sorted list, so no two processes do the same work. Seeds follow the global position
  (``--seed S`` gives pair i seed S + i), so results do not depend on the number of processes.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..image_files import IMAGE_SUFFIXES, list_image_files
from . import _options

_MASK_SUFFIX = "_mask"


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "batch", help="inpaint every image of a folder",
        description="Inpaint each image in --images with the mask of the same file stem in --masks "
                    "(or one mask file for all), writing <output>/<stem>.<ext>.")
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


@dataclass
class Pair:
    """One unit of work: global position, image path, mask path (or None when missing), output path."""

    index: int
    image: Path
    mask: Path | None
    output: Path


def find_pairs(images: Path, masks: Path, output: Path, fmt: str, recursive: bool = False) -> list[Pair]:
    """Pair every image with its mask by stem (relative folder included), sorted by image path."""
    from ..errors import InputError

    if not images.is_dir():
        raise InputError(f"--images {images}: not a folder")
    if not masks.exists():
        raise InputError(f"--masks {masks}: no such file or folder")
    same_folder = masks.is_dir() and masks.resolve() == images.resolve()
    by_stem: dict[Path, list[Path]] = {}
    if masks.is_dir():
        for path in list_image_files(masks, recursive):
            by_stem.setdefault(path.relative_to(masks).with_suffix(""), []).append(path)
    pairs = []
    for path in list_image_files(images, recursive):
        stem = path.relative_to(images).with_suffix("")
        if same_folder and stem.name.endswith(_MASK_SUFFIX):
            continue  # a mask living beside its image
        if masks.is_file():
            mask: Path | None = masks
        else:
            exact = [] if same_folder else by_stem.get(stem, [])
            found = exact or by_stem.get(stem.with_name(stem.name + _MASK_SUFFIX), [])
            mask = found[0] if len(found) == 1 else None
            if len(found) > 1:
                raise InputError(f"several masks for {path.name}: {', '.join(p.name for p in found)}")
        suffix = path.suffix if fmt == "keep" else f".{fmt}"
        pairs.append(Pair(len(pairs), path, mask, output / stem.with_suffix(suffix)))
    return pairs


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


def run(args: argparse.Namespace) -> int:
    from ..errors import InputError
    from ..pipeline._progress import ProgressBar

    if args.batch_size < 1:
        raise InputError("--batch-size must be at least 1")
    output = Path(args.output)
    pairs = find_pairs(Path(args.images), Path(args.masks), output, args.format, args.recursive)
    if not pairs:
        raise InputError(f"no images in {args.images} (looked for {', '.join(IMAGE_SUFFIXES)})")
    mine, rank, world = shard(pairs)
    inputs = {p.resolve() for pair in pairs for p in (pair.image, pair.mask) if p is not None}

    failures: list[tuple[Path, str]] = []
    todo: list[Pair] = []
    skipped = 0
    for pair in mine:
        if pair.mask is None:
            failures.append((pair.image, "no mask with this file stem"))
        elif pair.output.resolve() in inputs:
            failures.append((pair.image, f"output {pair.output} would overwrite an input"))
        elif args.skip_existing and pair.output.exists():
            skipped += 1
        else:
            todo.append(pair)

    written = 0
    if todo:
        pipe = _options.load_pipeline(args)
        desc = f"batch (rank {rank}/{world})" if world > 1 else "batch"
        enabled = not args.quiet and sys.stderr.isatty()
        with ProgressBar(len(todo), desc, enabled) as bar:
            for start in range(0, len(todo), args.batch_size):
                chunk = todo[start:start + args.batch_size]
                written += _process(pipe, chunk, args, failures)
                bar.update(len(chunk))

    where = f"rank {rank}/{world}: " if world > 1 else ""
    print(f"{where}{written} written, {skipped} skipped (already there), {len(failures)} failed "
          f"of {len(mine)} images -> {output}")
    for path, reason in failures:
        print(f"failed: {path}: {reason}", file=sys.stderr)
    return 1 if failures else 0


def _process(pipe: Any, chunk: list[Pair], args: argparse.Namespace, failures: list[tuple[Path, str]]) -> int:
    """Inpaint one chunk together; on a failure, retry its images one by one to isolate the bad one."""
    from ..errors import MoebiusError
    from ..pipeline.image_io import match_mask_size, to_image_data, to_mask_array

    loaded = []
    for pair in chunk:
        try:
            data = to_image_data(pair.image)
            mask = to_mask_array(pair.mask)
            if not args.resize_mask:
                match_mask_size(mask, data.size, False, f"mask {pair.mask.name}")
            loaded.append((pair, data, mask))
        except MoebiusError as exc:
            failures.append((pair.image, str(exc)))
    if not loaded:
        return 0
    try:
        return _inpaint(pipe, loaded, args)
    except MoebiusError as exc:
        if len(loaded) == 1:
            failures.append((loaded[0][0].image, str(exc)))
            return 0
    written = 0
    for item in loaded:
        try:
            written += _inpaint(pipe, [item], args)
        except MoebiusError as exc:
            failures.append((item[0].image, str(exc)))
    return written


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
