"""Standard-normal draws equal to ``torch.randn(shape, generator=torch.Generator().manual_seed(seed))`` on
CPU, in numpy, so a seed means the same noise with or without torch.

torch's CPU generator is a Mersenne Twister (MT19937) seeded with the seed's low 32 bits, numpy's legacy
``RandomState`` seeding. A float32 tensor of at least 16 values is filled with uniforms (24 random bits
each), then Box–Muller turns each block of 16 into normals (value j and j + 8 from one pair); a size
that is not a multiple of 16 redraws its last 16. Smaller tensors draw one double-precision Box–Muller
pair per two values (53-bit uniforms from two 32-bit words), and an odd count keeps the spare value for
the next draw, as torch does. The float32 logarithm, sine and cosine are numpy's, which differ from
torch's vectorised ones by at most an ulp (normals agree to about 5e-7).
"""

from __future__ import annotations

import math

import numpy as np


class TorchCompatibleGenerator:
    """A numpy stand-in for a seeded CPU ``torch.Generator`` that answers :meth:`randn`."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._mt = np.random.RandomState(seed & 0xFFFFFFFF)
        self._spare: float | None = None

    def _words(self, n: int) -> np.ndarray:
        return self._mt.randint(0, 2**32, size=n, dtype=np.uint64).astype(np.uint64)

    def _uniform24(self, n: int) -> np.ndarray:
        return ((self._words(n) & 0xFFFFFF).astype(np.float32) * np.float32(2.0**-24)).astype(np.float32)

    def randn(self, shape: tuple[int, ...]) -> np.ndarray:
        """float32 standard normals of ``shape``."""
        size = math.prod(shape)
        if size >= 16:
            data = self._uniform24(size)
            for start in range(0, size - 15, 16):
                data[start:start + 16] = _box_muller_16(data[start:start + 16])
            if size % 16:
                data[size - 16:] = _box_muller_16(self._uniform24(16))
            return data.reshape(shape)
        out = np.empty(size, dtype=np.float32)
        for i in range(size):
            out[i] = np.float32(self._normal_double())
        return out.reshape(shape)

    def _normal_double(self) -> float:
        if self._spare is not None:
            value, self._spare = self._spare, None
            return value
        words = self._words(4)
        u1, u2 = ((((words[0::2] << np.uint64(32)) | words[1::2]) & np.uint64(2**53 - 1)).astype(np.float64)
                  * 2.0**-53)
        radius = math.sqrt(-2.0 * math.log1p(-u2))
        theta = 2.0 * math.pi * u1
        self._spare = radius * math.sin(theta)
        return radius * math.cos(theta)


def _box_muller_16(uniforms: np.ndarray) -> np.ndarray:
    """16 float32 uniforms in [0, 1) -> 16 normals: values j and j + 8 from the pair (1 − u_j, u_{j+8})."""
    u1 = np.float32(1) - uniforms[:8]
    u2 = uniforms[8:]
    radius = np.sqrt(np.float32(-2) * np.log(u1))
    theta = np.float32(2.0 * math.pi) * u2
    return np.concatenate([radius * np.cos(theta), radius * np.sin(theta)])
