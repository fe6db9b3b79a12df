"""Where the randomness of an inpainting call comes from: seeds, generators, or explicit tensors.

Every draw is made on the CPU from a ``torch.Generator`` and then moved, so a seed gives the same noise on
any device. Nothing touches torch's global generator (the official pipeline reseeds it to 0 on every
call).

Two modes:

* per image (``seed=`` or a list of generators; the default preset's fresh seeds): each image has its own
  generator and each of its tiles draws its tensors in a fixed order when the tile is cut, so an image's
  result does not depend on what else is in the batch;
* shared (one ``generator=``, or the official preset's seed 0): each group of tiles draws batched tensors
  in the official order (image posterior, masked-image posterior, initial noise, noise offset), which is
  what the official pipeline does with torch's global generator.

:class:`NoiseDraws` replaces any of those draws with given tensors, e.g. the recorded draws of a trace.
A caller's generator on another device (CUDA) draws there instead; its draws come to the CPU like the rest.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, fields
from typing import Sequence

import torch

from ..errors import InputError


@dataclass(frozen=True)
class NoiseDraws:
    """Standard-normal tensors to use instead of drawing them; one row per tile, in call order.

    With the default ``original`` geometry (or the official preset) a tile is an image. Latent-shaped
    fields are (N, 4, h, w) with h, w the tile's latent size; ``offset`` is (N, 4, 1, 1). A field left
    None is drawn from the generator as usual.
    """

    image_posterior: torch.Tensor | None = None
    masked_image_posterior: torch.Tensor | None = None
    initial: torch.Tensor | None = None
    offset: torch.Tensor | None = None


def _fresh_seed() -> int:
    return secrets.randbits(63)


def resolve_generators(count: int, seed: int | Sequence[int] | None,
                       generator: torch.Generator | Sequence[torch.Generator] | None,
                       preset_seed: int | None) -> tuple[list[torch.Generator] | torch.Generator, list[int]]:
    """Generators for ``count`` images and the seed recorded for each.

    ``generator`` (one -> shared mode; a list -> one per image) wins over ``seed`` (an int s gives images
    seeds s, s+1, ...; a list gives one each); with neither, ``preset_seed`` seeds one shared generator
    (the official behaviour), and failing that each image gets a fresh random seed.
    """
    if generator is not None and seed is not None:
        raise InputError("pass either seed or generator, not both")
    if isinstance(generator, torch.Generator):
        return generator, [generator.initial_seed()] * count
    if generator is not None:
        gens = list(generator)
        if len(gens) != count:
            raise InputError(f"got {len(gens)} generators for {count} images")
        return gens, [g.initial_seed() for g in gens]
    if seed is None and preset_seed is not None:
        return torch.Generator("cpu").manual_seed(preset_seed), [preset_seed] * count
    if seed is None:
        seeds = [_fresh_seed() for _ in range(count)]
    elif isinstance(seed, int):
        seeds = [seed + i for i in range(count)]
    else:
        seeds = [int(s) for s in seed]
        if len(seeds) != count:
            raise InputError(f"got {len(seeds)} seeds for {count} images")
    for s in seeds:
        if not 0 <= s < 2**63:
            raise InputError(f"seeds must lie in [0, 2**63), got {s}")
    return [torch.Generator("cpu").manual_seed(s) for s in seeds], seeds


def _randn(shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """Standard-normal float32 draws from ``generator`` on its own device (a CUDA one included), on the CPU."""
    return torch.randn(shape, generator=generator, device=generator.device).cpu()


class NoiseSource:
    """Hands each tile group the random tensors named in ``names`` (see :func:`composition.draws_needed`)."""

    def __init__(self, generators: list[torch.Generator] | torch.Generator, names: tuple[str, ...],
                 explicit: NoiseDraws | None = None) -> None:
        self._generators = generators
        self._names = names
        self._explicit = {f.name: getattr(explicit, f.name) for f in fields(NoiseDraws)} if explicit else {}
        self._per_tile: dict[int, dict[str, torch.Tensor]] = {}

    def _shape(self, name: str, latent_shape: tuple[int, int, int]) -> tuple[int, ...]:
        return (latent_shape[0], 1, 1) if name == "offset" else latent_shape

    def add_tile(self, tile: int, image: int, latent_shape: tuple[int, int, int]) -> None:
        """Register tile number ``tile`` of image ``image``; in per-image mode its draws are made now."""
        if isinstance(self._generators, torch.Generator):
            return
        gen = self._generators[image]
        self._per_tile[tile] = {
            name: _randn((1, *self._shape(name, latent_shape)), gen)
            for name in self._names if self._explicit.get(name) is None
        }

    def for_group(self, tiles: list[int], latent_shape: tuple[int, int, int]) -> dict[str, torch.Tensor]:
        """The draws of a group of tiles (in ``tiles`` order): name -> (B, ...) float32 CPU tensors."""
        out = {}
        for name in self._names:  # the official draw order
            shape = self._shape(name, latent_shape)
            given = self._explicit.get(name)
            if given is not None:
                out[name] = self._rows(name, given, tiles, shape)
            elif isinstance(self._generators, torch.Generator):
                out[name] = _randn((len(tiles), *shape), self._generators)
            else:
                out[name] = torch.cat([self._per_tile[t][name] for t in tiles])
        return out

    @staticmethod
    def _rows(name: str, given: torch.Tensor, tiles: list[int], shape: tuple[int, ...]) -> torch.Tensor:
        if given.ndim != len(shape) + 1 or tuple(given.shape[1:]) != shape or given.shape[0] <= max(tiles):
            raise InputError(f"noise.{name} has shape {tuple(given.shape)}; this call needs "
                             f"(N >= {max(tiles) + 1}, {', '.join(map(str, shape))}), one row per tile")
        return given[tiles].float().cpu()
