"""Inference presets: named, frozen bundles of every knob the inpainting pipeline reads.

Two presets matter:

* ``official`` reproduces the official ``infer_moebius`` pipeline step for step: a 512² square resize,
  20 DDIM steps at strength 0.99 (19 steps from t = 900, starting from the noised image latent), VAE
  posterior samples, noise offset 0.0357, a radius-3 Gaussian-feathered paste-back over the whole image,
  truncation to uint8, and seed 0 when none is given.
* ``default`` fixes the official traps: pure noise start (strength 1.0), deterministic encoding (posterior
  mean), a real seed, the original size and aspect ratio, pixels outside the mask byte-identical to the
  input apart from a thin feather band, and thin strokes never lost when the mask is taken to latent size.

``portrait`` is ``default`` with guidance 2.0, the scale the paper picked for faces (paper Table 6);
2.5 is its choice for natural scenes.

``fast`` is ``default`` with the UniPC sampler at 8 steps and guidance on the first half of them only
(the other steps run one U-Net row instead of two): 12 U-Net rows per image against the default's 40. It is
the cheapest setting that ``bench/sampler_quality.py`` found as close to a 50-step DDIM run from the same
noise as the 20-step DDIM ``default`` (docs/experiments/sampler-choice.md, with the model it was measured
on); ``bench/e2e_benchmark.py --compare default fast`` times the two.

A call overrides any field by name (``pipe(image, mask, preset="default", hd_strategy="resize")``);
:meth:`InpaintPreset.replace` validates every override, so a misspelt knob is an error, never ignored.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from ..errors import ConfigError
from ..schedulers.registry import SCHEDULER_NAMES, SchedulerName
from .prefill import PREFILLS, Prefill

HDStrategy = Literal["crop", "resize", "original"]
SizeRule = Literal["official", "native"]
PasteMode = Literal["official", "keep_unmasked", "none"]
MaskDownsample = Literal["nearest", "max"]
Quantize = Literal["truncate", "round"]

SCENE_GUIDANCE = 2.5
PORTRAIT_GUIDANCE = 2.0
FAST_SCHEDULER: SchedulerName = "unipc"
FAST_STEPS = 8
FAST_GUIDANCE_INTERVAL = (0.0, 0.5)

_CHOICES: dict[str, tuple[str, ...]] = {
    "size_rule": ("official", "native"),
    "hd_strategy": ("crop", "resize", "original"),
    "paste": ("official", "keep_unmasked", "none"),
    "mask_downsample": ("nearest", "max"),
    "quantize": ("truncate", "round"),
    "prefill": PREFILLS,
    "scheduler": SCHEDULER_NAMES,
}


@dataclass(frozen=True)
class InpaintPreset:
    """Every setting one inpainting call uses. Construct through :func:`get_preset` + :meth:`replace`.

    Sampling:
        num_inference_steps: sampler steps laid out over the 1000 training timesteps.
        scheduler: ``"ddim"`` (the official sampler, "leading" timesteps), ``"dpmpp-2m"``,
            ``"dpmpp-2m-karras"`` or ``"unipc"`` (:mod:`moebius.schedulers.registry`).
        guidance_scale: classifier-free guidance; 1.0 switches CFG off (one U-Net pass per step).
        guidance_interval: (start, end) fractions of the steps run; step i of n uses CFG when
            start <= i/n < end, the others run the conditional branch alone (a batch of one). (0, 1): all.
        strength: fraction of the schedule run; 1.0 starts from pure noise, below 1 from the noised image.
        prefill: ``"none"``, or ``"telea"`` / ``"navier-stokes"``: fill the hole with that OpenCV method
            before encoding, so a ``strength`` < 1 refines a classical fill (:mod:`moebius.pipeline.prefill`).
        noise_offset: scale of the extra per-channel noise added to the start noise (trained with 0.0357).
        sample_posterior: encode with a VAE posterior sample (official) instead of its mean.
        seed: the seed used when the caller gives neither ``seed`` nor ``generator``; None draws a fresh one.
    Geometry:
        size_rule: ``"official"`` squashes to 512² and answers at 512²; ``"native"`` keeps the input size.
        hd_strategy: for ``native``: ``crop`` (crops around the mask above ``crop_trigger_size``),
            ``resize`` (long side down to ``resize_limit``), or ``original`` (full size).
        crop_trigger_size, crop_margin, resize_limit: IOPaint's names and defaults (800, 128, 1280).
        native_size: the resolution the model was trained at; crops are not upscaled past it.
    Masks:
        mask_threshold: mask values >= this (0-255 scale) are holes.
        invert_mask: swap hole and keep after thresholding.
        mask_dilate: grow the hole by this many pixels before inpainting.
        mask_downsample: ``nearest`` keeps the top-left pixel of each latent cell (official, loses thin
            strokes); ``max`` marks a cell as hole if any of its pixels is.
        resize_mask: resize a mask of another size to the image (nearest) instead of refusing it.
    Output:
        paste: ``official`` blends the radius-3 blurred mask over the whole image; ``keep_unmasked`` keeps
            every pixel outside the hole and its ``mask_blur``-pixel feather band byte-identical;
            ``none`` returns the raw decode.
        mask_blur: feather radius in pixels (PIL GaussianBlur radius) of the paste-back.
        compensate: shift the hole's mean colour toward its surroundings (official ``--cps``, fac 1.1).
        quantize: float -> uint8 by truncation (official) or rounding.
    """

    name: str
    num_inference_steps: int = 20
    scheduler: SchedulerName = "ddim"
    guidance_scale: float = SCENE_GUIDANCE
    guidance_interval: tuple[float, float] = (0.0, 1.0)
    strength: float = 1.0
    prefill: Prefill = "none"
    noise_offset: float = 0.0357
    sample_posterior: bool = False
    seed: int | None = None
    size_rule: SizeRule = "native"
    hd_strategy: HDStrategy = "crop"
    crop_trigger_size: int = 800
    crop_margin: int = 128
    resize_limit: int = 1280
    native_size: int = 512
    mask_threshold: float = 127.5
    invert_mask: bool = False
    mask_dilate: int = 0
    mask_downsample: MaskDownsample = "max"
    resize_mask: bool = False
    paste: PasteMode = "keep_unmasked"
    mask_blur: float = 3.0
    compensate: bool = False
    quantize: Quantize = "round"

    def __post_init__(self) -> None:
        for key, allowed in _CHOICES.items():
            if getattr(self, key) not in allowed:
                raise ConfigError(f"{key} must be one of {', '.join(allowed)}; got {getattr(self, key)!r}")
        if not isinstance(self.num_inference_steps, int) or self.num_inference_steps < 1:
            raise ConfigError(f"num_inference_steps must be a positive integer, got {self.num_inference_steps!r}")
        if not 0.0 < self.strength <= 1.0:
            raise ConfigError(f"strength must lie in (0, 1], got {self.strength}")
        if self.prefill != "none" and self.strength >= 1.0:
            # From pure noise the start ignores the image, and the model only ever sees the hole as grey.
            raise ConfigError(f"prefill {self.prefill!r} needs strength < 1 (or prefill='none')")
        if self.guidance_scale < 1.0:
            raise ConfigError(f"guidance_scale must be >= 1, got {self.guidance_scale}")
        self._check_guidance_interval()
        for key, lowest in (("crop_trigger_size", 1), ("resize_limit", 1), ("native_size", 1),
                            ("crop_margin", 0), ("mask_dilate", 0)):
            value = getattr(self, key)
            if not isinstance(value, int) or value < lowest:
                raise ConfigError(f"{key} must be an integer >= {lowest}, got {value!r}")
        if not 0.0 <= self.mask_threshold <= 255.0:
            raise ConfigError(f"mask_threshold must lie in [0, 255], got {self.mask_threshold}")
        if self.mask_blur < 0 or self.noise_offset < 0:
            raise ConfigError("mask_blur and noise_offset must be non-negative")
        if self.seed is not None and not 0 <= self.seed < 2**63:
            raise ConfigError(f"seed must lie in [0, 2**63), got {self.seed}")

    def _check_guidance_interval(self) -> None:
        interval = self.guidance_interval
        try:
            start, end = (float(v) for v in interval)
        except (TypeError, ValueError):
            raise ConfigError(f"guidance_interval must be a pair (start, end), got {interval!r}") from None
        if not 0.0 <= start <= end <= 1.0:
            raise ConfigError(f"guidance_interval needs 0 <= start <= end <= 1, got {interval!r}")
        object.__setattr__(self, "guidance_interval", (start, end))  # a list (JSON, CLI) becomes the tuple

    def uses_guidance(self, step: int, num_steps: int) -> bool:
        """Whether step ``step`` (0-based) of the ``num_steps`` run combines both CFG branches."""
        start, end = self.guidance_interval
        return self.guidance_scale != 1.0 and start <= step / num_steps < end

    def replace(self, **overrides: Any) -> InpaintPreset:
        """A copy with ``overrides`` applied; ``None`` values keep the preset's setting."""
        overrides = {k: v for k, v in overrides.items() if v is not None}
        fields = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - fields)
        if unknown:
            raise ConfigError(f"unknown inpainting option(s): {', '.join(unknown)}; known: {', '.join(sorted(fields))}")
        return dataclasses.replace(self, **overrides) if overrides else self

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of every field (recorded in each output's metadata)."""
        return dataclasses.asdict(self)


_PRESETS: dict[str, InpaintPreset] = {
    "official": InpaintPreset(
        name="official", strength=0.99, sample_posterior=True, seed=0, size_rule="official",
        mask_downsample="nearest", paste="official", compensate=False, quantize="truncate",
    ),
    "default": InpaintPreset(name="default"),
    "portrait": InpaintPreset(name="portrait", guidance_scale=PORTRAIT_GUIDANCE),
    "fast": InpaintPreset(name="fast", scheduler=FAST_SCHEDULER, num_inference_steps=FAST_STEPS,
                          guidance_interval=FAST_GUIDANCE_INTERVAL),
}
_SUMMARIES = {
    "default": "fixes the official traps",
    "official": "reproduces the official pipeline",
    "portrait": f"default with guidance {PORTRAIT_GUIDANCE:g}",
    "fast": f"default with {FAST_SCHEDULER} at {FAST_STEPS} steps, guidance on the first half",
}


def preset_summary(name: str) -> str:
    """One line saying what the built-in preset ``name`` is (for help texts)."""
    return _SUMMARIES[get_preset(name).name]


def list_presets() -> list[str]:
    """Names of the built-in presets."""
    return sorted(_PRESETS)


def get_preset(preset: str | InpaintPreset) -> InpaintPreset:
    """The preset called ``preset`` (an :class:`InpaintPreset` is returned as is)."""
    if isinstance(preset, InpaintPreset):
        return preset
    if preset not in _PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; known: {', '.join(list_presets())}")
    return _PRESETS[preset]


def check_call_defaults(defaults: Any) -> dict[str, Any]:
    """``defaults`` if it is a dict of valid :class:`~moebius.pipeline.presets.InpaintPreset` fields, else a
    ConfigError. ``name`` and ``seed`` are refused: they describe a call, not what the weights need."""
    if not isinstance(defaults, dict):
        raise ConfigError(f"expected a mapping of inpainting options, got {type(defaults).__name__}")
    refused = sorted({"name", "seed"} & set(defaults))
    if refused:
        raise ConfigError(f"{', '.join(refused)} cannot be a pipeline default")
    try:
        get_preset("default").replace(**defaults)  # unknown names and bad values raise here
    except TypeError as exc:  # a value of the wrong type, e.g. a string scale from a hand-edited file
        raise ConfigError(f"a value of the wrong type ({exc})") from None
    return dict(defaults)
