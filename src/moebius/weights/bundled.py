"""The small Moebius model that travels inside the package (configs/small, scripts/train_small_model.py).

It is what the command line and the server use when no weights are named and no official weights are
installed, so that inpainting works offline on a fresh machine. Its folder is a pipeline written by
``MoebiusInpaintPipeline.save_pretrained`` plus ``MODEL_CARD.md``.
"""

from __future__ import annotations

from pathlib import Path

from .locations import PIPELINE_FILE

BUNDLED_MODEL_DIR = Path(__file__).resolve().parent / "small"


def default_model_dir() -> Path | None:
    """The bundled small model's pipeline folder, or None when this installation carries none."""
    return BUNDLED_MODEL_DIR if (BUNDLED_MODEL_DIR / PIPELINE_FILE).is_file() else None
