"""The methods an evaluation runs: the classical baselines by name, and ``moebius``, the inpainting pipeline
with fixed settings. ``moebius eval`` and bench/eval_photos.py build theirs here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..errors import InputError
from .runner import Inpainter

MethodFactory = Callable[[str], tuple[Inpainter, str]]


@dataclass(frozen=True)
class MoebiusSettings:
    """How the ``moebius`` method loads the pipeline (weights folder, variant, VAE folder, device, dtype, fast
    path) and calls it (preset, steps, guidance; None keeps the preset's value; a fixed seed)."""

    weights: str
    variant: str | None = None
    vae: str | None = None
    device: str = "cpu"
    dtype: str = "float32"
    fast: bool = True
    preset: str = "default"
    steps: int | None = None
    guidance: float | None = None
    seed: int = 0


def moebius_inpainter(settings: MoebiusSettings) -> tuple[Inpainter, str]:
    """Wrap the pipeline as ``(image, mask) -> image`` with a fixed seed; describe its settings."""
    from ..pipeline.builder import build_pipeline

    pipe = build_pipeline(settings.weights, variant=settings.variant, vae=settings.vae, device=settings.device,
                          dtype=settings.dtype, fast=settings.fast)
    pipe.set_progress_bar_config(disable=True)
    options = {"preset": settings.preset, "seed": settings.seed}
    if settings.steps:
        options["num_inference_steps"] = settings.steps
    if settings.guidance is not None:
        options["guidance_scale"] = settings.guidance

    def inpaint(image, mask):
        return pipe(image, mask, **options).images[0]

    guidance = "preset" if settings.guidance is None else settings.guidance
    details = (f"MoebiusInpaintPipeline weights={settings.weights} variant={settings.variant or 'default'} "
               f"vae={settings.vae or 'weights'} dtype={settings.dtype} fast={settings.fast} "
               f"preset={settings.preset} steps={settings.steps or 'preset'} guidance={guidance} "
               f"seed={settings.seed} (strength: the preset's)")
    return inpaint, details


def method_factory(moebius: Callable[[], MoebiusSettings] | None = None) -> MethodFactory:
    """``name -> (inpainter, description)``, building each method once (a model is loaded once).

    ``moebius`` gives the pipeline's settings when the ``moebius`` method is first asked for; without it, only
    the baselines are available.
    """
    built: dict[str, tuple[Inpainter, str]] = {}

    def make(name: str) -> tuple[Inpainter, str]:
        if name not in built:
            if name == "moebius":
                if moebius is None:
                    raise InputError("the moebius method needs its weights; give them with --weights")
                built[name] = moebius_inpainter(moebius())
            else:
                from .baselines import describe, get_method

                built[name] = (get_method(name), describe(name))
        return built[name]

    return make
