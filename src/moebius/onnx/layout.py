"""What an ONNX export folder holds, and reading its manifest (torch-free).

An export of a whole pipeline is a folder::

    moebius_onnx.json    the manifest: format version, file names, latent scaling, the DDIM schedule with
                         its alphas_cumprod table, call defaults and presets, mask rules (any language can
                         run the model from it and the three graphs)
    unet.onnx            sample (B, C_in, h, w) float, timestep (B,) int64, input_ids (B, 10) int64
                         -> noise (B, C_lat, h, w); B, h, w dynamic (h, w multiples of the latent multiple)
    vae_encoder.onnx     image (B, 3, H, W) in [-1, 1] -> mean, std (B, C_lat, H/f, W/f), unscaled
    vae_decoder.onnx     latent (B, C_lat, h, w), unscaled -> image (B, 3, h·f, w·f), about [-1, 1]

A graph whose weights are large keeps them beside it in ``<name>.onnx.data`` (ONNX external data). An
export of a single U-Net checkpoint is ``unet.onnx`` alone.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import CheckpointError

MANIFEST_FILE = "moebius_onnx.json"
FORMAT = "moebius-onnx"
FORMAT_VERSION = 1
UNET_FILE = "unet.onnx"
VAE_ENCODER_FILE = "vae_encoder.onnx"
VAE_DECODER_FILE = "vae_decoder.onnx"
GRAPH_FILES = (UNET_FILE, VAE_ENCODER_FILE, VAE_DECODER_FILE)


def external_data_name(graph_file: str) -> str:
    """The file beside ``graph_file`` that holds its weights when they are stored externally."""
    return graph_file + ".data"


def is_export_folder(path: str | Path) -> bool:
    """Whether ``path`` is a folder holding an ONNX export of a whole pipeline (it may still be unreadable)."""
    return (Path(path).expanduser() / MANIFEST_FILE).is_file()


def holds_export(path: str | Path) -> bool:
    """Whether ``path`` holds any export output: a manifest or a graph file."""
    folder = Path(path).expanduser()
    return any((folder / name).exists() for name in (MANIFEST_FILE, *GRAPH_FILES))


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """The manifest of an export folder, after checking its format version and that its graphs are there."""
    folder = Path(folder).expanduser()
    path = folder / MANIFEST_FILE
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: unreadable ONNX export manifest ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a {FORMAT} manifest")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{folder}: ONNX export format version {version!r}, but this moebius reads version "
                              f"{FORMAT_VERSION}; export the weights again with this version (moebius export)")
    missing = [name for name in manifest.get("files", {}).values() if not (folder / name).is_file()]
    if missing:
        raise CheckpointError(f"{folder}: the export is incomplete, missing {', '.join(missing)}")
    return manifest
