"""Training: adaptive multi-granularity distillation of the Moebius student from PixelHacker.

``moebius.train.config`` holds the typed configuration, ``trainer`` the accelerate loop; ``losses``,
``optim``, ``ema`` and ``data`` are its parts (masks and E-LatentLPIPS come from ``moebius.mask_generators``
and ``moebius.perceptual``). Nothing heavy is imported here:
``import moebius.train`` does not import accelerate.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["TrainConfig", "Trainer", "load_config", "train"]

_LAZY = {
    "TrainConfig": ("moebius.train.config", "TrainConfig"),
    "load_config": ("moebius.train.config", "load_config"),
    "Trainer": ("moebius.train.trainer", "Trainer"),
    "train": ("moebius.train.trainer", "train"),
}

if TYPE_CHECKING:
    from .config import TrainConfig, load_config
    from .trainer import Trainer, train


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'moebius.train' has no attribute {name!r}")
