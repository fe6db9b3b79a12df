"""OnnxInpaintPipeline: MoebiusInpaintPipeline's call over an exported folder, on ONNX Runtime.

Needs only onnxruntime, numpy and Pillow (OpenCV for the classical pre-fills): no module on its path
imports torch. Presets, masks, HD crop, paste-back and metadata are the PyTorch pipeline's own
(:mod:`moebius.pipeline.composition`); only sampling a group of tiles is written here, with the numpy
DDIM of :mod:`.scheduler` and torch-compatible noise (:mod:`.random`), so a seed gives the same image up
to float rounding.

Example::

    pipe = OnnxInpaintPipeline("exported/")
    out = pipe(Image.open("photo.jpg"), Image.open("mask.png"), seed=0)
    out.images[0].save("result.png")
"""

from __future__ import annotations

import secrets
import sys
from pathlib import Path
from typing import Any, Sequence, TextIO

import numpy as np

from ..errors import CheckpointError, ConfigError, InputError
from ..pipeline import composition
from ..pipeline._progress import ProgressBar
from ..pipeline.composition import StepEndCallback, StepInfo
from ..pipeline.masks import latent_mask
from ..pipeline.output import InpaintOutput
from ..pipeline.presets import InpaintPreset, check_call_defaults, get_preset
from .layout import read_manifest
from .random import TorchCompatibleGenerator
from .scheduler import NumpyDDIM, cfg_combine

_OUTPUT_TYPES = ("pil", "np")


class OnnxInpaintPipeline:
    """Inpainting with the three graphs of an export folder (see :mod:`moebius.onnx.layout`).

    Args:
        folder: a folder written by ``moebius export``.
        threads: intra-op threads of each ONNX Runtime session (default: ONNX Runtime's choice).
        providers: ONNX Runtime execution providers in order of preference (default: the CPU provider alone,
            which every onnxruntime build has), e.g. ``["OpenVINOExecutionProvider"]`` with the
            onnxruntime-openvino package or ``["CUDAExecutionProvider"]`` with onnxruntime-gpu; nodes a
            provider cannot run fall back to the CPU.
    """

    def __init__(self, folder: str | Path, *, threads: int | None = None,
                 providers: Sequence[str] | None = None) -> None:
        import onnxruntime as ort

        providers = list(providers) if providers is not None else ["CPUExecutionProvider"]
        missing = [p for p in providers if p not in ort.get_available_providers()]
        if missing:
            raise ConfigError(f"this onnxruntime build has no {', '.join(missing)} (it has "
                              f"{', '.join(ort.get_available_providers())})")
        self.folder = Path(folder).expanduser()
        self.manifest = read_manifest(self.folder)
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        files = self.manifest["files"]
        try:
            self.sessions = {role: ort.InferenceSession(str(self.folder / files[role]), options,
                                                        providers=providers)
                             for role in ("unet", "vae_encoder", "vae_decoder")}
        except Exception as exc:  # onnxruntime raises its own exception types for a damaged graph
            detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise CheckpointError(f"{self.folder}: cannot load the exported graphs ({detail})") from None
        try:
            self.defaults = check_call_defaults(self.manifest.get("defaults", {}))
        except ConfigError as exc:
            raise CheckpointError(f"{self.folder}: 'defaults': {exc}") from None
        self.scheduler = NumpyDDIM.from_manifest(self.manifest["scheduler"])
        self.autoencoder = self.manifest["autoencoder"]
        self.unet_info = self.manifest["unet"]
        self.variant = self.manifest.get("variant")
        self._progress_enabled: bool | None = None
        self._progress_stream: TextIO | None = None

    @classmethod
    def from_pretrained(cls, folder: str | Path, **kwargs: Any) -> OnnxInpaintPipeline:
        return cls(folder, **kwargs)

    @property
    def size_multiple(self) -> int:
        """Working sizes are padded to this many pixels: the autoencoder's factor × the U-Net's latent multiple."""
        return int(self.autoencoder["downsample_factor"]) * int(self.unet_info["latent_multiple"])

    @property
    def device(self) -> str:
        return "cpu"

    @property
    def family(self) -> str:
        """The exported U-Net's family (``moebius`` or ``pixelhacker``)."""
        return str(self.unet_info.get("family", "unknown"))

    @property
    def dtype(self) -> str:
        precision = self.manifest.get("precision", {})
        return precision.get("quantize") or precision.get("dtype", "float32")

    def set_progress_bar_config(self, disable: bool | None = None, stream: TextIO | None = None) -> None:
        """``disable=True`` hides the per-step progress bar; by default it shows when stderr is a terminal."""
        self._progress_enabled = None if disable is None else not disable
        self._progress_stream = stream

    def __call__(self, image: Any, mask_image: Any = None, *, preset: str | InpaintPreset = "default",
                 num_inference_steps: int | None = None, guidance_scale: float | None = None,
                 strength: float | None = None, seed: int | Sequence[int] | None = None,
                 output_type: str = "pil", callback_on_step_end: StepEndCallback | None = None,
                 **options: Any) -> InpaintOutput:
        """Inpaint one image or a list of them; the arguments mean what they mean for
        :class:`~moebius.pipeline.pipeline.MoebiusInpaintPipeline` (no torch generators or tensors)."""
        base = get_preset(preset).replace(**self.defaults) if isinstance(preset, str) else preset
        settings = base.replace(num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                                strength=strength, **options)
        if settings.scheduler != "ddim" or tuple(settings.guidance_interval) != (0.0, 1.0):
            raise InputError("an ONNX export samples with DDIM and guidance at every step; scheduler and "
                             "guidance_interval are options of the PyTorch pipeline")
        if output_type not in _OUTPUT_TYPES:
            raise InputError(f"output_type must be one of {', '.join(_OUTPUT_TYPES)}, got {output_type!r}")
        steps_run = len(self.scheduler.timesteps(settings.num_inference_steps, settings.strength))
        items = composition.decode_inputs(image, mask_image, settings)
        noise = NumpyNoise(len(items), seed, settings)
        factor = int(self.autoencoder["downsample_factor"])
        jobs, strategies = composition.plan_jobs(items, settings, factor, int(self.autoencoder["latent_channels"]),
                                                 self.size_multiple, noise.add_tile)
        generated: list[np.ndarray] = [np.empty(0)] * len(jobs)
        groups = composition.group_jobs(jobs)
        enabled = self._progress_enabled if self._progress_enabled is not None else sys.stderr.isatty()
        with ProgressBar(steps_run * len(groups), "inpainting", enabled, self._progress_stream) as bar:
            for group, members in enumerate(groups.values()):
                rgb = np.stack([composition.start_pixels(jobs[j].tile, settings) for j in members])
                image_in = composition.to_model_range(rgb)  # (B, 3, h, w)
                hole = np.stack([jobs[j].tile.hole for j in members]).astype(np.float32)[:, None]  # (B, 1, h, w)
                draws = noise.for_group(members, (int(self.autoencoder["latent_channels"]),
                                                  rgb.shape[1] // factor, rgb.shape[2] // factor))
                decoded = self._sample(settings, image_in, hole, draws, group, callback_on_step_end, bar.update)
                pixels = composition.to_uint8(decoded, settings.quantize)
                for k, j in enumerate(members):
                    generated[j] = pixels[k]
        finished = composition.finish(items, jobs, generated, settings, noise.seeds, strategies, steps_run,
                                      self.variant)
        return InpaintOutput([composition.convert_output(rgb, alpha, output_type, item.data)
                              for (rgb, alpha, _), item in zip(finished, items)],
                             [meta for _, _, meta in finished])

    # ------------------------------------------------------------------------------------------------
    # Sampling one group of equal-size tiles

    def _encode(self, image: np.ndarray, hole: np.ndarray, settings: InpaintPreset,
                draws: dict[str, np.ndarray]) -> tuple[np.ndarray | None, np.ndarray]:
        """(image latents or None, masked-image latents), each (B, C_lat, h, w) float32."""
        masked = image * (np.float32(1) - hole)  # holes become 0, i.e. mid-grey
        need_image = settings.strength < 1.0
        pixels = np.concatenate([image, masked]) if need_image else masked
        mean, std = self.sessions["vae_encoder"].run(None, {"image": pixels})
        roles = ["image", "masked_image"] if need_image else ["masked_image"]
        latents = {}
        shift, scale = self.autoencoder["shift_factor"], np.float32(self.autoencoder["scaling_factor"])
        for role, m, s in zip(roles, np.split(mean, len(roles)), np.split(std, len(roles))):
            z = m + s * draws[f"{role}_posterior"] if settings.sample_posterior else m
            if shift is not None:
                z = z - np.float32(shift)
            latents[role] = z * scale
        return latents.get("image"), latents["masked_image"]

    def _sample(self, settings: InpaintPreset, image: np.ndarray, hole: np.ndarray, draws: dict[str, np.ndarray],
                group: int, callback: StepEndCallback | None, on_step: Any) -> np.ndarray:
        """image (B, 3, H, W) in [-1, 1], hole (B, 1, H, W) {0, 1} -> decoded (B, 3, H, W) in ~[0, 1]."""
        image_latents, masked_latents = self._encode(image, hole, settings, draws)
        mask_lat = latent_mask(hole, int(self.autoencoder["downsample_factor"]), settings.mask_downsample)
        steps = settings.num_inference_steps
        timesteps = self.scheduler.timesteps(steps, settings.strength)
        noise = draws["initial"]
        if settings.noise_offset > 0:
            noise = noise + np.float32(settings.noise_offset) * draws["offset"]
        latents = noise if settings.strength >= 1.0 else self.scheduler.add_noise(image_latents, noise, int(timesteps[0]))

        batch = image.shape[0]
        use_cfg = settings.guidance_scale != 1.0
        cond, uncond = self.unet_info["cond_ids"], self.unet_info["uncond_ids"]
        input_ids = np.array([uncond] * batch + [cond] * batch if use_cfg else [cond] * batch, dtype=np.int64)
        conditions = np.concatenate([mask_lat, masked_latents], axis=1)  # (B, 1 + C_lat, h, w)
        unet = self.sessions["unet"]
        for i, t in enumerate(timesteps.tolist()):
            x = np.concatenate([latents, conditions], axis=1)
            if use_cfg:
                x = np.concatenate([x, x])
            raw = unet.run(None, {"sample": x, "timestep": np.full(x.shape[0], t, dtype=np.int64),
                                  "input_ids": input_ids})[0]
            guided = cfg_combine(*np.split(raw, 2), settings.guidance_scale) if use_cfg else raw
            latents = self.scheduler.step(guided, t, latents, steps)
            if callback is not None:
                kwargs = callback(self, i, t, {"latents": latents, "step_info": StepInfo(i, len(timesteps), t, latents,
                                                                                         group)})
                if kwargs is not None and kwargs.get("latents") is not None:
                    latents = np.asarray(kwargs["latents"], dtype=np.float32)
            on_step()
        z = latents / np.float32(self.autoencoder["scaling_factor"])
        if self.autoencoder["shift_factor"] is not None:
            z = z + np.float32(self.autoencoder["shift_factor"])
        decoded = self.sessions["vae_decoder"].run(None, {"latent": np.ascontiguousarray(z, dtype=np.float32)})[0]
        return (decoded + np.float32(1)) / np.float32(2)


class NumpyNoise:
    """The random draws of a call, made as :class:`moebius.pipeline.noise.NoiseSource` makes them from
    seeds: per image (``seed=``, or fresh seeds) each tile draws its tensors in order when it is cut; the
    preset's fixed seed (the official preset's 0) shares one generator drawing per group in batch."""

    def __init__(self, count: int, seed: int | Sequence[int] | None, settings: InpaintPreset) -> None:
        self.names = composition.draws_needed(settings)
        self.shared: TorchCompatibleGenerator | None = None
        if seed is None and settings.seed is not None:
            self.shared, self.seeds = TorchCompatibleGenerator(settings.seed), [settings.seed] * count
        elif seed is None:
            self.seeds = [secrets.randbits(63) for _ in range(count)]
        elif isinstance(seed, int):
            self.seeds = [seed + i for i in range(count)]
        else:
            self.seeds = [int(s) for s in seed]
            if len(self.seeds) != count:
                raise InputError(f"got {len(self.seeds)} seeds for {count} images")
        for s in self.seeds:
            if not 0 <= s < 2**63:
                raise InputError(f"seeds must lie in [0, 2**63), got {s}")
        self._generators = [TorchCompatibleGenerator(s) for s in self.seeds] if self.shared is None else []
        self._per_tile: dict[int, dict[str, np.ndarray]] = {}

    @staticmethod
    def _shape(name: str, latent_shape: tuple[int, int, int]) -> tuple[int, ...]:
        return (latent_shape[0], 1, 1) if name == "offset" else latent_shape

    def add_tile(self, tile: int, image: int, latent_shape: tuple[int, int, int]) -> None:
        if self.shared is None:
            gen = self._generators[image]
            self._per_tile[tile] = {name: gen.randn((1, *self._shape(name, latent_shape))) for name in self.names}

    def for_group(self, tiles: list[int], latent_shape: tuple[int, int, int]) -> dict[str, np.ndarray]:
        if self.shared is not None:
            return {name: self.shared.randn((len(tiles), *self._shape(name, latent_shape))) for name in self.names}
        return {name: np.concatenate([self._per_tile[t][name] for t in tiles]) for name in self.names}

