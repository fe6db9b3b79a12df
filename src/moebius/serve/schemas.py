"""Pydantic models of the server's requests and responses, one per route.

The native options are strict (``extra="forbid"``): a misspelled field is a 422 naming it, never a setting
silently left at its default (IOPaint's web UI lost its HD settings to exactly that: it sends misspelt
size keys that IOPaint's server ignores).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ..pipeline.presets import list_presets
from ..schedulers.registry import SchedulerName

Preset = Literal[tuple(list_presets())]  # type: ignore[valid-type]  # the registry's names, whatever they are
HDStrategy = Literal["crop", "resize", "original"]


class InpaintOptions(BaseModel):
    """Typed options of ``POST /v1/inpaint`` (multipart form fields beside ``image`` and ``mask``).

    Unset fields keep the preset's value (see :class:`moebius.pipeline.InpaintPreset`).
    """

    model_config = ConfigDict(extra="forbid")

    preset: Preset = "default"
    num_inference_steps: int | None = Field(None, ge=1, le=200, description="sampler steps (preset: 20)")
    scheduler: SchedulerName | None = Field(None, description="sampler (preset: ddim)")
    guidance_scale: float | None = Field(None, ge=1.0, le=30.0, description="CFG scale; 1 switches CFG off")
    strength: float | None = Field(None, gt=0.0, le=1.0, description="1.0 = start from pure noise")
    prefill: Literal["none", "telea", "navier-stokes"] | None = Field(
        None, description="fill the hole with this OpenCV method first, then refine it (strength < 1)")
    seed: int | None = Field(None, ge=0, lt=2**63, description="random seed; unset draws one (see X-Seed)")
    hd_strategy: HDStrategy | None = None
    crop_margin: int | None = Field(None, ge=0, le=4096)
    crop_trigger_size: int | None = Field(None, ge=1, le=65536)
    resize_limit: int | None = Field(None, ge=1, le=65536)
    mask_threshold: float | None = Field(None, ge=0, le=255)
    invert_mask: bool | None = None
    mask_dilate: int | None = Field(None, ge=0, le=512)
    mask_blur: float | None = Field(None, ge=0, le=256)
    resize_mask: bool | None = None
    paste: Literal["official", "keep_unmasked", "none"] | None = None
    compensate: bool | None = None

    def call_options(self) -> dict:
        """Pipeline keyword arguments: every set field except ``seed``."""
        return self.model_dump(exclude_none=True, exclude={"seed"})


class ErrorResponse(BaseModel):
    """Every 4xx/5xx body: a one-line ``error`` a person can act on."""

    error: str
    detail: list | None = None


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    model: str
    device: str
    queue_depth: int
    queue_limit: int
    pixels_in_flight: int = Field(description="decoded pixels of the requests admitted now")
    pixel_budget: int = Field(description="most decoded pixels admitted at once (--max-megapixels-in-flight)")
    waiting_for_pixels: int = Field(description="requests waiting for room in the pixel budget")
    requests: int
    batches: int
    images_per_batch: float


class ModelInfo(BaseModel):
    name: str
    family: str
    variant: str | None
    device: str
    dtype: str
    presets: list[str]
    size_multiple: int


class Models(BaseModel):
    current: str
    models: list[ModelInfo]


class Progress(BaseModel):
    state: Literal["queued", "running", "done", "unknown"]
    step: int = 0
    total: int = 0


class IOPaintInpaintRequest(BaseModel):
    """IOPaint's ``InpaintRequest`` (iopaint/schema.py), the fields Moebius can honour.

    IOPaint's front-end sends about fifty fields for every model it knows (prompts, samplers, ControlNet...);
    those are accepted and ignored so existing clients work unchanged, and their names are returned in the
    ``X-Moebius-Ignored`` header. ``sd_mask_blur`` is one of them: it feathers Stable Diffusion results, and
    IOPaint changes nothing outside the hole of an erase model. Values of the fields below are checked strictly.
    """

    model_config = ConfigDict(extra="allow")

    image: str = Field(..., description="base64 image (a data: URL prefix is accepted)")
    mask: str = Field(..., description="base64 mask, 255 = inpaint")
    hd_strategy: Literal["Original", "Resize", "Crop", "original", "resize", "crop"] = "Crop"
    hd_strategy_crop_margin: int = Field(128, ge=0, le=4096)
    hd_strategy_crop_trigger_size: int = Field(800, ge=1, le=65536)
    hd_strategy_resize_limit: int = Field(1280, ge=1, le=65536)
    sd_steps: int | None = Field(None, ge=1, le=200)
    sd_guidance_scale: float | None = Field(None, ge=0.0, le=30.0)
    sd_strength: float | None = Field(None, gt=0.0, le=1.0)
    sd_seed: int = Field(42, ge=-1, lt=2**63, description="-1 draws a random seed; IOPaint's default is 42")
    sd_keep_unmasked_area: bool = True
    sd_match_histograms: bool = False
