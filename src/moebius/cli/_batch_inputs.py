"""What ``moebius batch`` reads and writes: the image/mask pairs, their output names, and the rules that keep
a rerun with ``--skip-existing`` finishing with exactly one result per input.

* The output name is a pure function of the image's path: ``<output>/<path relative to --images>`` with the
  extension of ``--format``. Two images that would get the same output name (``a.png`` and ``a.jpg``;
  compared ignoring case, as macOS and Windows file systems do) refuse the whole run up front, naming them.
* ``--output`` may not be the ``--images`` or ``--masks`` folder nor contain either; it may lie inside them,
  and then nothing under it is read as an image or a mask. A mask folder inside the images folder is not
  read as images either.

Standard library only, so that building the parser stays fast.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..image_files import list_image_files

_MASK_SUFFIX = "_mask"
# The hidden temp file save_image writes before renaming it to <name> = <stem><ext>, which a process killed
# mid-write (SIGKILL) leaves behind: ".<stem>.XXXXXXXX<ext>" from tempfile.mkstemp (8 characters of its
# alphabet), or ".<name>.<8 hex digits>.tmp" from an atomic writer that names its temp files that way.
_TEMP_NAMES = (re.compile(r"\.(?P<stem>.+)\.[a-z0-9_]{8}(?P<suffix>\.[^.]+)", re.DOTALL),
               re.compile(r"\.(?P<stem>.+)()\.[0-9a-f]{8}\.tmp", re.DOTALL))


@dataclass
class Pair:
    """One unit of work: global position, image path, mask path (or None when missing), output path."""

    index: int
    image: Path
    mask: Path | None
    output: Path


def one_line(text: str) -> str:
    """``text`` with newlines and other unprintable characters escaped (``\\n``, ``\\x1b``, ``\\udcff``), so
    that a report naming any file stays one line and can always be encoded."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def _is_within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _list_images(folder: Path, recursive: bool, skip: list[Path]) -> list[Path]:
    """Image files of ``folder`` (sorted, hidden files left out), leaving out anything inside a ``skip`` folder
    (resolved paths)."""
    resolved: dict[Path, Path] = {}
    return [path for path in list_image_files(folder, recursive)
            if not any(_is_within(resolved.setdefault(path.parent, path.parent.resolve()), s) for s in skip)]


def _check_output_folder(output: Path, images: Path, masks: Path) -> Path:
    """The resolved output folder, refused when it is an input folder or holds one."""
    out = output.resolve()
    for option, folder in (("--images", images), ("--masks", masks)):
        if folder.is_dir() and _is_within(folder.resolve(), out):
            same = "is" if folder.resolve() == out else "contains"
            raise InputError(f"--output {one_line(str(output))} {same} the {option} folder; write the results "
                             f"to a separate folder (a sub-folder of {option} works: it is never read as input)")
    return out


def _check_collisions(pairs: list[Pair], output: Path) -> None:
    by_name: dict[str, list[Pair]] = {}
    for pair in pairs:
        by_name.setdefault(pair.output.relative_to(output).as_posix().casefold(), []).append(pair)
    groups = [group for group in by_name.values() if len(group) > 1]
    if groups:
        names = " and ".join(one_line(str(pair.image)) for pair in groups[0])
        more = f" ({len(groups) - 1} more such groups)" if len(groups) > 1 else ""
        raise InputError(f"{names} would both be written to {one_line(str(groups[0][0].output))}{more}; "
                         "rename one of them (output names are the input's name with the --format extension)")


def find_pairs(images: Path, masks: Path, output: Path, fmt: str, recursive: bool = False) -> list[Pair]:
    """Pair every image with its mask by stem (relative folder included), sorted by image path.

    Raises InputError for a missing folder, an output folder that is or holds an input folder, two masks
    for one image, and two images with the same output name.
    """
    if not images.is_dir():
        raise InputError(f"--images {one_line(str(images))}: not a folder")
    if not masks.exists():
        raise InputError(f"--masks {one_line(str(masks))}: no such file or folder")
    out = _check_output_folder(output, images, masks)
    same_folder = masks.is_dir() and masks.resolve() == images.resolve()
    by_stem: dict[Path, list[Path]] = {}
    skip_as_images = [out]
    if masks.is_dir():
        for path in _list_images(masks, recursive, [out]):
            by_stem.setdefault(path.relative_to(masks).with_suffix(""), []).append(path)
        if not same_folder:
            skip_as_images.append(masks.resolve())
    pairs = []
    for path in _list_images(images, recursive, skip_as_images):
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
                raise InputError(f"several masks for {one_line(path.name)}: "
                                 f"{', '.join(one_line(p.name) for p in found)}")
        suffix = path.suffix if fmt == "keep" else f".{fmt}"
        pairs.append(Pair(len(pairs), path, mask, output / stem.parent / (path.stem + suffix)))
    _check_collisions(pairs, output)
    return pairs


def _temp_file_targets(name: str) -> set[str]:
    """The names of the files that the temp file ``name`` may have been written for (none if not one)."""
    return {m.group(1) + m.group(2) for m in (p.fullmatch(name) for p in _TEMP_NAMES) if m}


def remove_leftover_temp_files(outputs: list[Path], keep: set[Path]) -> None:
    """Delete the temp files a killed run left beside these outputs (never a path in ``keep``)."""
    wanted: dict[Path, set[str]] = {}
    for path in outputs:
        wanted.setdefault(path.parent, set()).add(path.name)
    for folder, names in wanted.items():
        try:
            entries = [e for e in os.scandir(folder) if e.name.startswith(".") and e.is_file(follow_symlinks=False)]
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            path = folder / entry.name
            if _temp_file_targets(entry.name) & names and path.resolve() not in keep:
                path.unlink(missing_ok=True)
