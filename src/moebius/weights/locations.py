"""Where the weights live: the hub repositories, the official variants, the cache folder, the download, and
the one-line message saying which files to put where. Standard library only, so that the command line can
offer the variants without importing torch.

Official layout (hf.co/hustvl/Moebius + the VAE of hf.co/hustvl/PixelHacker)::

    <root>/{pretrained,ft_places2,ft_celebahq,ft_ffhq}/diffusion_pytorch_model.bin
    <root>/vae/config.json
    <root>/vae/diffusion_pytorch_model.bin | diffusion_pytorch_model.safetensors

A variant folder may instead hold our converted format (``config.json`` + ``model.safetensors``, see
``moebius convert``). A folder written by ``MoebiusInpaintPipeline.save_pretrained`` is marked by
:data:`PIPELINE_FILE` (layout in :mod:`moebius.pipeline.loading`).
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from ..errors import CheckpointError

logger = logging.getLogger(__name__)

OFFICIAL_WEIGHTS_NAME = "diffusion_pytorch_model.bin"
MODEL_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
VAE_WEIGHT_NAMES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
OFFICIAL_VARIANTS = ("pretrained", "ft_places2", "ft_celebahq", "ft_ffhq")
DEFAULT_VARIANT = "ft_places2"
PIPELINE_FILE = "moebius_pipeline.json"
STUDENT_REPO = "hustvl/Moebius"
VAE_REPO = "hustvl/PixelHacker"


def default_weights_dir() -> Path:
    """Where the CLI looks for weights: ``$MOEBIUS_HOME``, else ``$XDG_CACHE_HOME/moebius`` (~/.cache/moebius)."""
    if os.environ.get("MOEBIUS_HOME"):
        return Path(os.environ["MOEBIUS_HOME"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache).expanduser() / "moebius"


def holds_weights(root: Path) -> bool:
    """Whether ``root`` looks like a weights folder of either layout (it may still fail to load)."""
    return (root / PIPELINE_FILE).is_file() or any(has_unet(root / v) for v in OFFICIAL_VARIANTS)


def missing_weights_message(root: Path, variant: str | None) -> str:
    """One line saying exactly which files to put where."""
    variant = variant or DEFAULT_VARIANT
    return (
        f"no Moebius weights in {root}: put the student at {root / variant / OFFICIAL_WEIGHTS_NAME} "
        f"(from hf.co/{STUDENT_REPO}, folder {variant}/) and the VAE at {root / 'vae' / CONFIG_NAME} + "
        f"{root / 'vae' / VAE_WEIGHT_NAMES[1]} (from hf.co/{VAE_REPO}, folder vae/), "
        f"or point to a folder written by save_pretrained ({PIPELINE_FILE}, unet/, vae/)"
    )


def official_unet_dir(root: Path, variant: str | None) -> tuple[Path, str]:
    """The variant folder of an official-layout ``root`` and its name: ``variant`` when given, else
    :data:`DEFAULT_VARIANT` if present, else the first present one."""
    present = [v for v in OFFICIAL_VARIANTS if has_unet(root / v)]
    if variant is not None:
        if variant not in OFFICIAL_VARIANTS and not has_unet(root / variant):
            raise CheckpointError(f"unknown variant {variant!r}; the official ones are {', '.join(OFFICIAL_VARIANTS)}")
        if not has_unet(root / variant):
            found = f" (found: {', '.join(present)})" if present else ""
            raise CheckpointError(f"variant {variant!r} is missing: put {root / variant / OFFICIAL_WEIGHTS_NAME} "
                                  f"(from hf.co/{STUDENT_REPO}, folder {variant}/){found}")
        return root / variant, variant
    if not present:
        raise CheckpointError(missing_weights_message(root, None))
    chosen = DEFAULT_VARIANT if DEFAULT_VARIANT in present else present[0]
    if len(present) > 1:
        logger.info("several variants in %s (%s); using %s", root, ", ".join(present), chosen)
    return root / chosen, chosen


def has_unet(folder: Path) -> bool:
    """Whether ``folder`` holds a U-Net checkpoint: official ``.bin``/``.safetensors`` or our converted format."""
    return (folder / OFFICIAL_WEIGHTS_NAME).is_file() or (folder / "diffusion_pytorch_model.safetensors").is_file() \
        or ((folder / CONFIG_NAME).is_file() and (folder / MODEL_NAME).is_file())


def fetch_official(root: str | Path, variants: tuple[str, ...], local_files_only: bool = False) -> Path:
    """Download (or, with ``local_files_only``, only look up in the hub cache) the official files into
    ``root`` in the official layout: ``<root>/<variant>/`` from hf.co/hustvl/Moebius and ``<root>/vae/``
    from hf.co/hustvl/PixelHacker. Needs the ``huggingface_hub`` package."""
    import importlib.util

    root = Path(root).expanduser()
    if importlib.util.find_spec("huggingface_hub") is None:
        raise CheckpointError("huggingface_hub is not installed (pip install huggingface_hub); or by hand: "
                              + missing_weights_message(root, variants[0]))
    from huggingface_hub import snapshot_download

    try:
        snapshot_download(STUDENT_REPO, allow_patterns=[f"{v}/*" for v in variants], local_dir=root,
                          local_files_only=local_files_only)
        snapshot_download(VAE_REPO, allow_patterns=["vae/*"], local_dir=root, local_files_only=local_files_only)
    except Exception as exc:  # network, authentication and cache errors come in many types
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"download failed ({detail}); by hand: " + missing_weights_message(root, variants[0])) from None
    return root


def is_hub_id(path: str | Path) -> bool:
    """Whether ``path`` is spelt like a hub repository id, ``owner/name`` (whether or not such a folder exists)."""
    return isinstance(path, str) and re.fullmatch(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*", path) is not None


def _hub_snapshot(repo_id: str, local_files_only: bool) -> Path:
    """The whole of hub repository ``repo_id``, downloaded into (or only looked up in) the hub cache."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise CheckpointError(f"{repo_id}: no such local folder, and loading it as a hub repository needs "
                              "huggingface_hub (pip install 'moebius-inpaint[hub]')") from None
    try:
        return Path(snapshot_download(repo_id, local_files_only=local_files_only))
    except Exception as exc:  # network, authentication and cache errors come in many types
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{repo_id}: no such local folder, and no such hub repository in reach ({detail})") \
            from None


def resolve_source(path: str | Path, variant: str | None, local_files_only: bool) -> Path:
    """A local folder for ``path``. An ``owner/name`` id with no such local folder is a hub repository:
    ``hustvl/Moebius`` maps to :func:`default_weights_dir`, filled in the official layout unless the files are
    already there; any other is downloaded whole into the hub cache."""
    local = Path(path).expanduser()
    if local.exists() or not is_hub_id(path):
        return local
    if path != STUDENT_REPO:
        return _hub_snapshot(str(path), local_files_only)
    root = default_weights_dir()
    wanted = variant or DEFAULT_VARIANT
    if not (has_unet(root / wanted) and (root / "vae" / CONFIG_NAME).is_file()):
        fetch_official(root, (wanted,), local_files_only)
    return root