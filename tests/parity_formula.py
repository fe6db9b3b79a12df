"""The deterministic "formula" weights the parity vectors were computed with.

The rules: tests/data/parity/README.md, "Weight formula".

Pure numpy, bit-exact: every operation is an IEEE-exact elementwise op evaluated in the documented order.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

PARITY_DIR = Path(__file__).parent / "data" / "parity"

_GOLDEN = 0x9E3779B97F4A7C15
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def uniforms(stream: int, n: int) -> np.ndarray:
    """n float64 uniforms in [0, 1): splitmix64 finaliser of idx + (stream + 1) * golden (mod 2**64)."""
    z = np.arange(n, dtype=np.uint64) + np.uint64(((stream + 1) * _GOLDEN) % 2**64)
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53


def formula_tensor(key: str, stream: int, shape: tuple[int, ...]) -> np.ndarray:
    shape = tuple(shape)
    n = math.prod(shape)
    if key.endswith("num_batches_tracked"):
        return np.zeros(shape, np.int64)
    u = uniforms(stream, n).reshape(shape)
    if key.endswith("running_var"):
        v = 0.5 + u
    elif key.endswith("running_mean"):
        v = 0.2 * (u - 0.5)
    elif len(shape) == 1 and key.endswith("weight"):
        v = 0.8 + 0.4 * u
    elif key.endswith("bias"):
        v = 0.1 * (2.0 * u - 1.0)
    elif len(shape) >= 2:
        v = (2.0 * u - 1.0) * math.sqrt(3.0 / (n // shape[0]))
    else:
        v = 0.1 * (2.0 * u - 1.0)
    return v.astype(np.float32)


def load_layout(name: str) -> dict[str, tuple[int, ...]]:
    """Official key -> shape, in state_dict order, from ``{name}_keys.json`` (student, teacher, vae)."""
    entries = json.loads((PARITY_DIR / f"{name}_keys.json").read_text())
    return {e["key"]: tuple(e["shape"]) for e in entries}


def formula_state_dict(layout: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """The formula checkpoint for a layout, in the layout's own key order."""
    streams = {k: i for i, k in enumerate(sorted(layout))}
    return {k: torch.from_numpy(formula_tensor(k, streams[k], layout[k])) for k in layout}


def std_normal(stream: int, shape: tuple[int, ...]) -> np.ndarray:
    """Box-Muller normals from one stream (first n uniforms u1, last n u2)."""
    n = math.prod(shape)
    u = uniforms(stream, 2 * n)
    u1, u2 = u[:n], u[n:]
    z = np.sqrt(-2.0 * np.log(1.0 - u1)) * np.cos(2.0 * np.pi * u2)
    return z.reshape(shape).astype(np.float32)
