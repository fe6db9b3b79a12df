"""The file suffixes read as images, and the one way the package lists a folder of images (batch runs,
evaluation, training).

Standard library only, so that the command line can list a folder without importing torch.
"""

from __future__ import annotations

from pathlib import Path

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


def list_image_files(folder: str | Path, recursive: bool = False) -> list[Path]:
    """Image files in ``folder`` (and below it with ``recursive``), sorted so a listing is reproducible.

    Hidden files (names starting with a dot, such as macOS's ``._photo.jpg``) are not images and are skipped.
    """
    pattern = "**/*" if recursive else "*"
    return sorted(p for p in Path(folder).glob(pattern)
                  if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
