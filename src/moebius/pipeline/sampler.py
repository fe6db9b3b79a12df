"""The latent-space core of inpainting: encode, denoise with guidance, decode.

One call handles one group of equally sized tiles (the U-Net sees them as one batch, doubled for CFG).
Every random tensor comes in from outside, already drawn (:mod:`moebius.pipeline.noise`), so this module
is deterministic: the same inputs give the same outputs on the same device.

Official order of operations, kept exactly for parity (tests/data/parity/README.md): posterior sample of the image
(draw 1) and of the masked image (draw 2), both scaled by 0.13025; noise = draw 3 + 0.0357·draw 4; start
latent = add_noise(image latent, noise, first timestep) unless strength is 1 (then pure noise); each step
feeds [x | mask | masked latent] for [uncond (ids 10-19) × B, cond (ids 0-9) × B] and combines
ε = ε_u + g·(ε_c − ε_u); the decode is (VAE(z / 0.13025) + 1) / 2.

Any scheduler of :mod:`moebius.schedulers.registry` runs the loop (``settings.scheduler``). The known
region needs no per-step blending: the U-Net sees it in every step's input (the mask and masked-image
latent channels), so a multistep solver's trajectory is never edited behind its back and its history
stays consistent. Steps outside ``settings.guidance_interval`` feed the conditional rows alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn

from ..models.denoiser import BACKGROUND_IDS, FOREGROUND_IDS
from ..models.vae import AutoencoderKL
from ..schedulers.ddim import DDIMConfig, cfg_combine
from ..schedulers.registry import make_scheduler
from .composition import StepCallback, StepInfo
from .masks import latent_mask
from .presets import InpaintPreset


@dataclass
class SamplerModels:
    """The networks one sampling run uses: the U-Net to call (possibly the fast copy) and the VAE.

    ``shared_cfg_input``: the U-Net takes the CFG step's input once, (B, 9, h, w) with 2B id rows, and
    shares it between both halves (:class:`~moebius.models.fast.FastDenoiser`); otherwise it is doubled.
    """

    unet: nn.Module
    vae: AutoencoderKL
    unet_dtype: torch.dtype
    channels_last: bool = False
    shared_cfg_input: bool = False


def _scale(vae: AutoencoderKL, z: torch.Tensor) -> torch.Tensor:
    if vae.config.shift_factor is not None:
        z = z - vae.config.shift_factor
    return z * vae.config.scaling_factor


def encode_conditions(vae: AutoencoderKL, image: torch.Tensor, hole: torch.Tensor, settings: InpaintPreset,
                      draws: dict[str, torch.Tensor], record: dict[str, torch.Tensor] | None = None,
                      ) -> tuple[torch.Tensor | None, torch.Tensor]:
    """Image (B, 3, H, W) in [-1, 1] and hole (B, 1, H, W) {0, 1} -> (image latents or None, masked-image
    latents), each (B, 4, H/f, W/f) float32. The image itself is encoded only when strength < 1."""
    masked = image * (1 - hole)  # holes become 0, i.e. mid-grey
    need_image = settings.strength < 1.0
    pixels = torch.cat([image, masked]) if need_image else masked  # one encoder pass for both
    vae_dtype = next(vae.parameters()).dtype
    posterior = vae.encode(pixels.to(vae_dtype))
    means, stds = posterior.mean.float(), posterior.std.float()
    roles = ["image", "masked_image"] if need_image else ["masked_image"]
    latents: dict[str, torch.Tensor] = {}
    for role, mean, std in zip(roles, means.chunk(len(roles)), stds.chunk(len(roles))):
        if settings.sample_posterior:
            noise = draws[f"{role}_posterior"].to(mean.device)
            z = mean + std * noise
        else:
            z = mean
        latents[role] = _scale(vae, z)
        if record is not None:
            record[f"vae_sample_{role}_posterior_mean"] = mean
            record[f"vae_sample_{role}_posterior_std"] = std
            record[f"{role}_latents"] = latents[role]
    return latents.get("image"), latents["masked_image"]


@torch.inference_mode()
def sample(models: SamplerModels, scheduler_config: DDIMConfig, settings: InpaintPreset, image: torch.Tensor,
           hole: torch.Tensor, draws: dict[str, torch.Tensor], *, group: int = 0,
           callback: StepCallback | None = None, on_step: Callable[[], None] | None = None,
           record: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """Inpaint one group: image (B, 3, H, W) in [-1, 1], hole (B, 1, H, W) {0, 1}, both float32 on the
    models' device -> decoded image (B, 3, H, W) in ~[0, 1], float32, unclamped.

    ``draws`` maps the names of :func:`draws_needed` to standard-normal tensors: ``*_posterior`` and
    ``initial`` (B, 4, H/f, W/f), ``offset`` (B, 4, 1, 1).
    """
    vae, device = models.vae, image.device
    image_latents, masked_latents = encode_conditions(vae, image, hole, settings, draws, record)
    mask_lat = torch.from_numpy(latent_mask(hole.cpu().numpy(), vae.config.downsample_factor,
                                            settings.mask_downsample)).to(device)

    scheduler = make_scheduler(settings.scheduler, scheduler_config)  # per call: one trajectory's state
    scheduler.set_timesteps(settings.num_inference_steps)
    timesteps = scheduler.timesteps_for_strength(settings.strength)
    noise = draws["initial"].to(device)
    if settings.noise_offset > 0:
        noise = noise + settings.noise_offset * draws["offset"].to(device)
    if settings.strength >= 1.0:
        latents = noise  # pure noise: every scheduler here starts at unit variance
    else:
        latents = scheduler.add_noise(image_latents, noise, timesteps[:1].to(device))

    batch = image.shape[0]
    cond_ids = torch.tensor([BACKGROUND_IDS] * batch, dtype=torch.long, device=device)  # (B, 10)
    cfg_ids = torch.tensor([FOREGROUND_IDS] * batch, dtype=torch.long, device=device)
    cfg_ids = torch.cat([cfg_ids, cond_ids])  # (2B, 10): [uncond; cond]
    if record is not None:
        record.update(mask_latent=mask_lat, noise_total=noise, latents_init=latents,
                      cfg_input_ids=cfg_ids if settings.guidance_scale != 1.0 else cond_ids,
                      latent_timestep=timesteps[:1], timesteps_run=timesteps)

    conditions = torch.cat([mask_lat, masked_latents], dim=1)  # (B, 5, h, w)
    for i, t in enumerate(timesteps.tolist()):
        use_cfg = settings.uses_guidance(i, len(timesteps))
        input_ids = cfg_ids if use_cfg else cond_ids
        x = torch.cat([latents, conditions], dim=1)  # (B, 9, h, w): [x 4 | mask 1 | masked latent 4]
        if use_cfg and not models.shared_cfg_input:
            x = torch.cat([x, x])  # (2B, 9, h, w)
        x = x.to(models.unet_dtype)
        if models.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        t_in = torch.tensor([t], dtype=torch.long, device=device)  # (1,), broadcast over the batch
        raw = models.unet(x, t_in, input_ids).float()  # ε (or v, per scheduler_config.prediction_type)
        guided = cfg_combine(*raw.chunk(2), settings.guidance_scale) if use_cfg else raw
        latents = scheduler.step(guided, t, latents).prev_sample
        if record is not None:
            record[f"step{i:02d}_eps_raw_uncond_cond"] = raw
            record[f"step{i:02d}_eps_cfg"] = guided
            record[f"step{i:02d}_latents_after"] = latents
        if callback is not None:
            replaced = callback(StepInfo(i, len(timesteps), t, latents, group))
            if replaced is not None:
                latents = replaced.to(device=latents.device, dtype=latents.dtype)
        if on_step is not None:
            on_step()

    vae_dtype = next(vae.parameters()).dtype
    decoded = vae.decode_latents(latents.to(vae_dtype)).float()
    if record is not None:
        record["vae_decode_in"] = latents / vae.config.scaling_factor
        record["decoded_01_before_paste"] = (decoded + 1) / 2
    return (decoded + 1) / 2
