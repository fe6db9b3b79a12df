"""What an inpainting call returns: the images and, for each, a record of how it was made."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class InpaintMetadata:
    """How one output image was made (the preset is recorded in every output).

    ``seed`` is the seed of the generator the image's noise came from (``initial_seed()`` of a caller's
    generator). ``steps_run`` is what the strength leaves of ``num_inference_steps`` (19 of 20 at 0.99), run
    by ``scheduler`` (``"ddim"``, ``"dpmpp-2m"``, ``"dpmpp-2m-karras"`` or ``"unipc"``).
    ``regions`` are the (x0, y0, x1, y1) boxes inpainted, in input pixels, and ``work_sizes`` the
    (width, height) each was processed at. ``skipped`` is True when the mask was empty and the input
    came back unchanged. ``settings`` holds every field of the resolved preset.
    """

    preset: str
    seed: int
    num_inference_steps: int
    steps_run: int
    scheduler: str
    guidance_scale: float
    strength: float
    size: tuple[int, int]
    hd_strategy: str
    regions: tuple[tuple[int, int, int, int], ...] = ()
    work_sizes: tuple[tuple[int, int], ...] = ()
    skipped: bool = False
    variant: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        """Compact JSON, e.g. for a PNG text chunk."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class InpaintOutput:
    """``images``: one per input, as PIL images, uint8 numpy arrays (H, W, 3|4) or float tensors
    (3|4, H, W) in [0, 1], by ``output_type``; ``metadata``: one :class:`InpaintMetadata` per image."""

    images: list[Any]
    metadata: list[InpaintMetadata]
