"""``moebius export-web``: a static web site that inpaints in the browser with no server behind it.

The site is the web app built from the repository's ``web/`` folder (``npm ci && npm run build`` writes
``web/dist``: the page, its scripts and onnxruntime-web's runtime files) plus ``model/``, an ONNX export
(:mod:`.export`) that the page loads from beside its ``index.html``. Any static file server can host it.

Like ``moebius export``, the site is assembled in a temporary folder beside the destination and renamed into
place, so a failure never leaves half a site behind.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from ..errors import InputError
from .layout import MANIFEST_FILE, is_export_folder, read_manifest

WEB_DIST_ENV = "MOEBIUS_WEB_DIST"
MODEL_DIR = "model"
# What a built app holds: the page and the WASM runtime it always loads.
_APP_FILES = ("index.html", "app.js", "pipeline.js", "ort/ort.wasm.min.mjs", "ort/ort-wasm-simd-threaded.wasm")


def repo_web_dir() -> Path:
    """``web/`` of the checkout this package runs from (src layout: <repo>/src/moebius)."""
    return Path(__file__).resolve().parents[3] / "web"


def find_web_app() -> Path:
    """The built web app: ``$MOEBIUS_WEB_DIST``, else ``web/dist`` of this checkout."""
    explicit = os.environ.get(WEB_DIST_ENV)
    folder = Path(explicit).expanduser() if explicit else repo_web_dir() / "dist"
    missing = [name for name in _APP_FILES if not (folder / name).is_file()]
    if missing:
        if explicit:
            raise InputError(f"{WEB_DIST_ENV}={explicit} is not a built web app (no {missing[0]}); "
                             "build one with `npm ci && npm run build` in the repository's web/ folder")
        raise InputError(f"the web app is not built (no {folder / missing[0]}); run `npm ci && npm run build` "
                         f"in {folder.parent}, or set {WEB_DIST_ENV} to a built web/dist")
    if not explicit:
        _check_up_to_date(folder)
    return folder


def _check_up_to_date(dist: Path) -> None:
    """A checkout's web/dist must be built from its web/src as it is now: a site is never made from stale code."""
    sources = dist.parent / "src"
    built = (dist / "index.html").stat().st_mtime
    stale = [p for p in sources.rglob("*") if p.is_file() and p.stat().st_mtime > built] if sources.is_dir() else []
    if stale:
        raise InputError(f"{dist} is older than {stale[0]}; run `npm run build` in {dist.parent}")


def _check_destination(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} exists and is not a folder; choose a new output folder")
    if out.is_dir() and any(out.iterdir()):
        if not (out / "index.html").is_file() or not is_export_folder(out / MODEL_DIR):
            raise InputError(f"{out} is a folder that already holds other files; choose a new or empty output folder")
        if not overwrite:
            raise InputError(f"{out} already holds a web site; pass --overwrite to replace it")
    probe = next((p for p in (out, *out.parents) if p.exists()), Path("."))
    if not probe.is_dir():
        raise InputError(f"cannot write {out}: {probe} is not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise InputError(f"cannot write into {probe}: permission denied")


def export_site(source: str | Path, out_dir: str | Path, *, dtype: str = "float32", quantize: str | None = None,
                overwrite: bool = False) -> list[Path]:
    """Write the site for ``source`` into ``out_dir`` -> the model files written, in order.

    ``source`` is anything ``moebius export`` takes for a whole pipeline, or a folder it already wrote (copied
    as it is; ``dtype`` and ``quantize`` must then be left at their defaults).
    """
    out = Path(out_dir).expanduser()
    _check_destination(out, overwrite)
    app = find_web_app()
    source_path = Path(source).expanduser()
    reuse = is_export_folder(source_path)
    if reuse:
        if dtype != "float32" or quantize is not None:
            raise InputError(f"{source} is already an ONNX export; --dtype and --quantize apply when exporting weights")
        read_manifest(source_path)  # a complete export, or a one-line error
    parent = out.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=parent))
    except OSError as exc:
        raise InputError(f"cannot write into {parent}: {exc.strerror or exc}") from None
    try:
        os.chmod(tmp, 0o777 & ~_umask())
        site = tmp / "site"
        shutil.copytree(app, site)
        if reuse:
            shutil.copytree(source_path, site / MODEL_DIR)
        else:
            from .export import export_weights  # torch and onnx: only when there are weights to export

            export_weights(source, site / MODEL_DIR, dtype=dtype, quantize=quantize)  # type: ignore[arg-type]
            if not (site / MODEL_DIR / MANIFEST_FILE).is_file():
                raise InputError(f"{source} is a single U-Net checkpoint; the web app needs a whole pipeline "
                                 "(a weights folder with its autoencoder)")
        _move_into_place(site, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    model = out / MODEL_DIR
    return sorted((p for p in model.iterdir() if p.is_file()), key=lambda p: p.name)


def site_bytes(folder: str | Path) -> dict[str, int]:
    """Bytes a browser downloads from a site: ``app`` (page and scripts), ``runtime`` (the WASM runtime) and
    ``model``; the WebGPU runtime, fetched instead of the WASM one where WebGPU is used, is not counted."""
    root = Path(folder)
    sizes = {"app": 0, "runtime": 0, "model": 0}
    for path in root.rglob("*"):
        if not path.is_file():
            continue
        rel = path.relative_to(root).as_posix()
        if rel.startswith(f"{MODEL_DIR}/"):
            sizes["model"] += path.stat().st_size
        elif rel in ("ort/ort.wasm.min.mjs", "ort/ort-wasm-simd-threaded.mjs", "ort/ort-wasm-simd-threaded.wasm"):
            sizes["runtime"] += path.stat().st_size
        elif not rel.startswith("ort/"):
            sizes["app"] += path.stat().st_size
    return sizes


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _move_into_place(site: Path, out: Path) -> None:
    """Rename ``site`` to ``out``; an earlier site there is removed only once the new one is in place."""
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
        os.replace(out, old / "site")
    os.replace(site, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
