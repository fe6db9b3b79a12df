"""MoebiusInpaintPipeline: image + mask in, inpainted image out, shaped like a diffusers pipeline.

The call vocabulary is diffusers' (``image``, ``mask_image``, ``num_inference_steps``, ``guidance_scale``,
``strength``, ``generator``, ``output_type``, ``callback_on_step_end``); white (255) in the mask means
"fill". Everything else is a field of the chosen preset (:mod:`moebius.pipeline.presets`), overridable by
keyword.

One call runs: decode inputs (:mod:`image_io`) -> threshold/invert/dilate masks (:mod:`masks`) -> cut
each image into model-sized tiles (:mod:`hd`; the official preset squashes to 512²) -> group equal-size
tiles into one U-Net batch (:mod:`sampler`) -> paste the generated pixels back (:mod:`blend`).

Example::

    pipe = MoebiusInpaintPipeline.from_pretrained("weights/Moebius", variant="ft_places2")
    out = pipe(Image.open("photo.jpg"), Image.open("mask.png"), seed=0)
    out.images[0].save("result.png"); print(out.metadata[0].seed)
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any, Sequence, TextIO

import numpy as np
import torch
import torch.nn as nn

from ..errors import InputError
from ..models.vae import AutoencoderKL
from ..schedulers.ddim import DDIMConfig, strength_start_index
from ..weights.locations import resolve_source
from . import composition
from ._progress import ProgressBar
from .compiled import CompiledUNet, check_compile_available
from .composition import Job, StepCallback, StepEndCallback, StepInfo, draws_needed
from .image_io import ImageData, ImageInput
from .loading import PipelineParts, check_call_defaults, load_pipeline_parts, save_pipeline
from .noise import NoiseDraws, NoiseSource, resolve_generators
from .output import InpaintOutput
from .presets import InpaintPreset, get_preset
from .sampler import SamplerModels, sample

_OUTPUT_TYPES = ("pil", "np", "pt")
_CALLBACK_TENSOR_INPUTS = ("latents",)


class MoebiusInpaintPipeline:
    """Moebius inpainting: a latent-category U-Net, an AutoencoderKL and a sampler (DDIM by default).

    Args:
        unet: a :class:`~moebius.models.LatentCategoryDenoiser` (``load_official``/``create_model``).
        vae: the :class:`~moebius.models.vae.AutoencoderKL` whose latents the U-Net denoises.
        scheduler_config: the noise schedule and prediction type every sampler uses (the official one by default).
        variant: the official checkpoint variant the U-Net came from, recorded in metadata.
        fast: run the student and the autoencoder through :func:`~moebius.models.fast.optimize_for_inference`
            (same functions: BatchNorms folded, cheaper λ layers and upsampling, fewer copies); turn off only
            for debugging or benchmarks.
        compile: ``torch.compile`` the U-Net the sampling loop calls (see :meth:`compile_unet`).
        defaults: inpainting options these weights need, applied over every named preset (explicit call
            arguments and :class:`InpaintPreset` objects win) and saved with the folder. Our small models
            carry ``{"guidance_scale": 1.0}``: CFG contrasts with the foreground category embeddings, which
            their training data never uses.
    """

    def __init__(self, unet: nn.Module, vae: AutoencoderKL, scheduler_config: DDIMConfig = DDIMConfig(), *,
                 variant: str | None = None, fast: bool = True, defaults: dict[str, Any] | None = None,
                 compile: bool = False) -> None:
        self.unet = unet.eval()
        self.vae = vae.eval()
        self.scheduler_config = scheduler_config
        self.variant = variant
        self.defaults = check_call_defaults(defaults or {})
        self.fast = fast
        self._fast_models: SamplerModels | None = None
        self._compile = False
        self._compiled: CompiledUNet | None = None
        self._progress_enabled: bool | None = None  # None: only when stderr is a terminal
        self._progress_stream: TextIO | None = None
        self._progress_parent: ProgressBar | None = None
        if compile:
            self.compile_unet()

    # ------------------------------------------------------------------------------------------------
    # Loading, saving, devices

    @classmethod
    def from_pretrained(cls, path: str | Path, *, variant: str | None = None, vae: str | Path | None = None,
                        device: str | torch.device | None = None, dtype: torch.dtype | None = None,
                        torch_dtype: torch.dtype | None = None, fast: bool = True,
                        local_files_only: bool = False, compile: bool = False) -> MoebiusInpaintPipeline:
        """Load the official layout (``<root>/<variant>/diffusion_pytorch_model.bin`` + ``<root>/vae/``) or a
        folder written by :meth:`save_pretrained`. An ``owner/name`` that is no local folder is a hub
        repository (needs ``huggingface_hub``): ``"hustvl/Moebius"`` is fetched into ``$MOEBIUS_HOME`` in the
        official layout, any other is downloaded whole into the hub cache. ``torch_dtype`` is diffusers'
        name for ``dtype``. Missing files raise a CheckpointError naming them. ``compile``: see
        :meth:`compile_unet`."""
        if torch_dtype is not None and dtype is not None and torch_dtype != dtype:
            raise InputError(f"dtype={dtype} and torch_dtype={torch_dtype} disagree; give one of them")
        parts = load_pipeline_parts(resolve_source(path, variant, local_files_only), variant, vae)
        pipe = cls(parts.unet, parts.vae, parts.scheduler_config, variant=parts.variant, fast=fast,
                   defaults=parts.defaults)
        pipe = pipe.to(device, dtype if dtype is not None else torch_dtype)
        if compile:
            pipe.compile_unet()
        return pipe

    def save_pretrained(self, folder: str | Path) -> Path:
        """Write our layout (unet/, vae/, scheduler.json, moebius_pipeline.json) into a new folder."""
        return save_pipeline(PipelineParts(self.unet, self.vae, self.scheduler_config, self.variant, self.defaults),
                             folder)

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> MoebiusInpaintPipeline:
        """Move both networks (in place) and return self. Sampling arithmetic stays float32 whatever ``dtype``."""
        if device is None and dtype is None:
            return self
        self.unet.to(device=device, dtype=dtype)
        self.vae.to(device=device, dtype=dtype)
        self._fast_models = None  # rebuilt from the moved networks on the next call
        self._compiled = None  # the compile mode depends on the device
        return self

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    def set_progress_bar_config(self, disable: bool | None = None, stream: TextIO | None = None,
                                parent: ProgressBar | None = None) -> None:
        """``disable=True`` hides the per-step progress bar; by default it shows when stderr is a terminal.
        ``parent``: an outer bar (e.g. a batch's) whose line the per-step count joins instead of its own."""
        self._progress_enabled = None if disable is None else not disable
        self._progress_stream = stream
        self._progress_parent = parent

    def compile_unet(self) -> None:
        """``torch.compile`` the U-Net that sampling calls (the fast copy when ``fast``) from the next call on:
        CUDA graphs (mode ``"reduce-overhead"``) on CUDA, the default mode elsewhere. Each new image size
        compiles once (minutes on a CPU); compiled kernels are kept on disk
        (:func:`~moebius.pipeline.compiled.compile_cache_dir`, ``$TORCHINDUCTOR_CACHE_DIR`` when set), so
        later processes skip most of that. A ConfigError when torch.compile cannot work here."""
        check_compile_available(self.device)
        self._compile = True

    @property
    def compiled(self) -> bool:
        """Whether sampling calls a ``torch.compile``-d U-Net (:meth:`compile_unet`)."""
        return self._compile

    def _models(self) -> SamplerModels:
        models = self._eager_models()
        if not self._compile:
            return models
        if self._compiled is None or self._compiled.unet is not models.unet:
            check_compile_available(self.device)  # again: the pipeline may have moved since compile_unet
            self._compiled = CompiledUNet(models.unet, self.device)
        return dataclasses.replace(models, unet=self._compiled)

    def _eager_models(self) -> SamplerModels:
        student = getattr(self.unet.config, "family", None) == "moebius"
        if not (self.fast and student):
            return SamplerModels(self.unet, self.vae, self.dtype)
        if self._fast_models is None:
            from ..models.fast import optimize_for_inference

            # Folded in float32, returned in each network's own device and dtype. In float32 the VAE's copy
            # keeps the NCHW layout: channels-last convolutions move the official trace's posteriors by more
            # than its parity tolerance; in reduced precision that is below the rounding.
            vae = optimize_for_inference(self.vae, channels_last=self.vae_dtype != torch.float32)
            self._fast_models = SamplerModels(optimize_for_inference(self.unet), vae, self.dtype,
                                              channels_last=True, shared_cfg_input=True)
        return self._fast_models

    @property
    def vae_dtype(self) -> torch.dtype:
        return next(self.vae.parameters()).dtype

    @property
    def size_multiple(self) -> int:
        """Working sizes are padded to this many pixels: VAE factor × the U-Net's latent multiple (32)."""
        unet_multiple = getattr(self.unet.config, "latent_multiple", 8)
        return self.vae.config.downsample_factor * unet_multiple

    # ------------------------------------------------------------------------------------------------
    # The call

    def __call__(
        self,
        image: ImageInput | Sequence[ImageInput],
        mask_image: ImageInput | Sequence[ImageInput] | None = None,
        *,
        preset: str | InpaintPreset = "default",
        num_inference_steps: int | None = None,
        scheduler: str | None = None,
        guidance_scale: float | None = None,
        guidance_interval: tuple[float, float] | None = None,
        strength: float | None = None,
        seed: int | Sequence[int] | None = None,
        generator: torch.Generator | Sequence[torch.Generator] | None = None,
        noise: NoiseDraws | None = None,
        output_type: str = "pil",
        callback_on_step_end: StepEndCallback | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = _CALLBACK_TENSOR_INPUTS,
        intermediates: dict[str, torch.Tensor] | None = None,
        **options: Any,
    ) -> InpaintOutput:
        """Inpaint one image or a list of them (equal-size tiles share one U-Net batch).

        Args:
            image: PIL image, numpy array, tensor or path, or a list of them.
            mask_image: the same kinds (white = fill); one mask for every image, one per image, or None to
                use each image's alpha channel (transparent = fill).
            preset: ``"default"``, ``"official"``, ``"portrait"``, ``"fast"`` (each with this pipeline's ``defaults``
                applied) or an :class:`InpaintPreset` (used as is).
            num_inference_steps, guidance_scale, strength: override the preset's.
            scheduler: ``"ddim"`` (every preset's but ``fast``), ``"dpmpp-2m"``, ``"dpmpp-2m-karras"`` or ``"unipc"``;
                recorded in the metadata.
            guidance_interval: (start, end) fractions of the steps run that use CFG (step i of n when
                start <= i/n < end); the other steps run the conditional branch alone. Default (0, 1).
            seed: an int (image i gets seed + i) or one per image; recorded in the metadata.
            generator: one ``torch.Generator`` shared by the batch, or one per image, on any device; the
                noise is drawn on the generator's device and then moved, so a CPU generator gives the same
                image on every device.
            noise: explicit standard-normal draws replacing the generator's (e.g. a recorded trace).
            output_type: ``"pil"``, ``"np"`` (uint8 (H, W, C)) or ``"pt"`` (float (C, H, W) in [0, 1]).
            callback_on_step_end: called after each DDIM step as diffusers does,
                ``callback(pipe, step, timestep, callback_kwargs)``. ``callback_kwargs`` holds the tensors
                named in ``callback_on_step_end_tensor_inputs`` (only ``"latents"``: (B, 4, h, w) float32) and
                ``"step_info"``, a :class:`~moebius.pipeline.sampler.StepInfo` (step count, tile group). Return
                the dict; latents put back into it are what sampling continues from.
            intermediates: a dict to fill with every stage's tensors (names as in the parity trace, prefixed
                ``group<k>/`` when several tile groups run), for debugging and parity checks.
            **options: any other :class:`InpaintPreset` field (``hd_strategy``, ``mask_dilate``, ...).
        """
        base = get_preset(preset).replace(**self.defaults) if isinstance(preset, str) else preset
        settings = base.replace(num_inference_steps=num_inference_steps, scheduler=scheduler,
                                guidance_scale=guidance_scale, guidance_interval=guidance_interval,
                                strength=strength, **options)
        if output_type not in _OUTPUT_TYPES:
            raise InputError(f"output_type must be one of {', '.join(_OUTPUT_TYPES)}, got {output_type!r}")
        steps_run = settings.num_inference_steps - strength_start_index(settings.num_inference_steps, settings.strength)
        items = composition.decode_inputs(image, mask_image, settings)
        generators, seeds = resolve_generators(len(items), seed, generator, settings.seed)
        noise_source = NoiseSource(generators, draws_needed(settings), noise)

        jobs, strategies = composition.plan_jobs(items, settings, self.vae.config.downsample_factor,
                                                 self.vae.config.latent_channels, self.size_multiple,
                                                 noise_source.add_tile)
        callback = self._step_callback(callback_on_step_end, callback_on_step_end_tensor_inputs)
        generated = self._run_jobs(jobs, settings, noise_source, steps_run, callback, intermediates)
        finished = composition.finish(items, jobs, generated, settings, seeds, strategies, steps_run, self.variant)
        images = [_convert(rgb, alpha, output_type, item.data) for (rgb, alpha, _), item in zip(finished, items)]
        metadata = [meta for _, _, meta in finished]
        return InpaintOutput(images, metadata)

    # ------------------------------------------------------------------------------------------------
    # Steps of the call

    def _step_callback(self, callback: StepEndCallback | None, tensor_inputs: Sequence[str]) -> StepCallback | None:
        """The sampler's per-step hook for a diffusers-style ``callback_on_step_end``."""
        unknown = sorted(set(tensor_inputs) - set(_CALLBACK_TENSOR_INPUTS))
        if unknown:
            raise InputError(f"callback_on_step_end_tensor_inputs: {', '.join(unknown)} not available; "
                             f"choose from {', '.join(_CALLBACK_TENSOR_INPUTS)}")
        if callback is None:
            return None

        def on_step(info: StepInfo) -> torch.Tensor | None:
            callback_kwargs: dict[str, Any] = {name: info.latents for name in tensor_inputs}
            callback_kwargs["step_info"] = info
            returned = callback(self, info.step, info.timestep, callback_kwargs)
            return None if returned is None else returned.get("latents")

        return on_step

    def _run_jobs(self, jobs: list[Job], settings: InpaintPreset, noise: NoiseSource, steps_run: int,
                  callback: StepCallback | None, intermediates: dict[str, torch.Tensor] | None) -> list[np.ndarray]:
        """Sample every group of equal-size tiles as one batch -> generated uint8 (h, w, 3) per job."""
        groups = composition.group_jobs(jobs)
        results: list[np.ndarray | None] = [None] * len(jobs)
        if not jobs:
            return []
        models, device = self._models(), self.device
        factor, latent_channels = self.vae.config.downsample_factor, self.vae.config.latent_channels
        parent = self._progress_parent
        enabled = self._progress_enabled if self._progress_enabled is not None else (
            parent.enabled if parent is not None else sys.stderr.isatty())
        with ProgressBar(steps_run * len(groups), "inpainting", enabled, self._progress_stream, parent=parent) as bar:
            for g, ((height, width), members) in enumerate(groups.items()):
                rgb = np.stack([composition.start_pixels(jobs[j].tile, settings) for j in members])  # (B, h, w, 3)
                image = torch.from_numpy(composition.to_model_range(rgb)).to(device)  # (B, 3, h, w)
                hole = torch.from_numpy(np.stack([jobs[j].tile.hole for j in members])).to(torch.float32)
                hole = hole[:, None].to(device)  # (B, 1, h, w)
                draws = noise.for_group(members, (latent_channels, height // factor, width // factor))
                record = None
                if intermediates is not None:
                    record = {} if len(groups) > 1 else intermediates
                decoded = sample(models, self.scheduler_config, settings, image, hole, draws, group=g,
                                 callback=callback, on_step=bar.update, record=record)
                if record is not None and record is not intermediates:
                    intermediates.update({f"group{g}/{k}": v for k, v in record.items()})
                pixels = composition.to_uint8(decoded.cpu().numpy(), settings.quantize)  # (B, h, w, 3)
                for k, j in enumerate(members):
                    results[j] = pixels[k]
        return results  # type: ignore[return-value]


# ----------------------------------------------------------------------------------------------------
# Helpers


def _convert(rgb: np.ndarray, alpha: np.ndarray | None, output_type: str, source: ImageData) -> Any:
    if output_type == "pt":
        array = composition.convert_output(rgb, alpha, "np")
        return torch.from_numpy(array).permute(2, 0, 1).float() / 255.0
    return composition.convert_output(rgb, alpha, output_type, source)
