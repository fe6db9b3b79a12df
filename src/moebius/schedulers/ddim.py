"""Deterministic DDIM sampling (eta = 0) with the Stable Diffusion noise schedule.

Reproduces the numerics of the scheduler the official pipeline builds (diffusers' ``DDIMScheduler`` with
the configuration recorded in tests/data/parity/pipeline_trace.json): scaled-linear betas from 0.00085 to
0.012 over 1000 training steps, "leading" timestep spacing, ε-prediction, no clipping, and ᾱ = 1 after the last step. Every scalar is computed in
float32 in the same order as the reference, so ``alphas_cumprod`` and each step match the recorded trace
bit for bit on CPU.

The scheduler also runs v-predicting networks (``prediction_type="v_prediction"``, Salimans & Ho 2022), which
our own small models use: an ε-predictor's clean-image estimate x̂0 = (x_t − √(1−ᾱ)·ε̂)/√ᾱ multiplies its
error by (1−ᾱ)/ᾱ, about 120 at t = 950 where sampling starts, so a small network must be near perfect there;
a v-predictor's estimate x̂0 = √ᾱ·x_t − √(1−ᾱ)·v̂ carries its error at most once.

Typical use (the official call: 20 steps, strength 0.99 -> 19 steps from t = 900)::

    scheduler = DDIMScheduler()
    scheduler.set_timesteps(20)
    timesteps = scheduler.timesteps_for_strength(0.99)
    x = scheduler.add_noise(z0, noise, timesteps[0])
    for t in timesteps:
        eps = cfg_combine(*denoiser(...).chunk(2), guidance_scale)
        x = scheduler.step(eps, t, x).prev_sample
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, get_args

import torch

from ..errors import ConfigError, InputError


PredictionType = Literal["epsilon", "v_prediction"]


@dataclass(frozen=True)
class DDIMConfig:
    """Noise schedule and timestep layout. Defaults are the official pipeline's."""

    num_train_timesteps: int = 1000
    beta_start: float = 0.00085
    beta_end: float = 0.012
    # True: the step that leaves t = 0 lands on ᾱ = 1, i.e. returns the predicted x0.
    set_alpha_to_one: bool = True
    # Added to every inference timestep (SD 1.x configs sometimes use 1; the official one uses 0).
    steps_offset: int = 0
    # What the network outputs: the noise ε (the official models) or v = √ᾱ·ε − √(1−ᾱ)·x0.
    prediction_type: PredictionType = "epsilon"

    def __post_init__(self) -> None:
        if self.num_train_timesteps < 1:
            raise ConfigError(f"num_train_timesteps must be positive, got {self.num_train_timesteps}")
        if not 0.0 < self.beta_start <= self.beta_end < 1.0:
            raise ConfigError(f"need 0 < beta_start <= beta_end < 1, got {self.beta_start}, {self.beta_end}")
        if not 0 <= self.steps_offset < self.num_train_timesteps:
            raise ConfigError(f"steps_offset must lie in [0, num_train_timesteps), got {self.steps_offset}")
        if self.prediction_type not in get_args(PredictionType):
            raise ConfigError(f"prediction_type must be one of {', '.join(get_args(PredictionType))}, "
                              f"got {self.prediction_type!r}")

    @classmethod
    def from_config_dict(cls, config: Mapping[str, Any]) -> DDIMConfig:
        """Read a diffusers ``DDIMScheduler`` config dict (e.g. ``scheduler/scheduler_config.json``).

        Options selecting behaviour this scheduler does not implement (other beta schedules or spacings,
        sample prediction, clipping, thresholding, zero-SNR rescaling) raise :class:`ConfigError`.
        """
        fields = {f.name for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in config.items():
            if key.startswith("_") or key in _IGNORED_DIFFUSERS_KEYS:
                continue
            if key in _REQUIRED_DIFFUSERS_VALUES:
                supported = _REQUIRED_DIFFUSERS_VALUES[key]
                if value != supported:
                    raise ConfigError(f"unsupported DDIM option {key}={value!r}; only {supported!r} is implemented")
                continue
            if key not in fields:
                raise ConfigError(f"unknown DDIM config key {key!r}")
            kwargs[key] = value
        return cls(**kwargs)


def scheduler_config_dict(config: DDIMConfig) -> dict[str, Any]:
    """A diffusers ``DDIMScheduler`` config dict describing ``config`` (read back by :meth:`DDIMConfig.from_config_dict`)."""
    return {"_class_name": "DDIMScheduler", "beta_schedule": "scaled_linear", "clip_sample": False,
            "timestep_spacing": "leading", **vars(config)}


# Only read by diffusers when clipping or thresholding is on, which from_config_dict rejects.
_IGNORED_DIFFUSERS_KEYS = frozenset({"clip_sample_range", "dynamic_thresholding_ratio", "sample_max_value"})
_REQUIRED_DIFFUSERS_VALUES: dict[str, Any] = {
    "beta_schedule": "scaled_linear",
    "trained_betas": None,
    "clip_sample": False,
    "thresholding": False,
    "timestep_spacing": "leading",
    "rescale_betas_zero_snr": False,
}


def scaled_linear_alphas_cumprod(config: DDIMConfig) -> torch.Tensor:
    """ᾱ_t = Π_{s<=t} (1 - β_s) with β = linspace(√β_start, √β_end, T)², float32 (T,) on CPU.

    Built on CPU in float32 exactly as the reference does (CPU cumprod accumulates in double), so the
    values are bitwise those of the official run (trace key ``alphas_cumprod``).
    """
    betas = (
        torch.linspace(config.beta_start**0.5, config.beta_end**0.5, config.num_train_timesteps, dtype=torch.float32)
        ** 2
    )
    return torch.cumprod(1.0 - betas, dim=0)


def strength_start_index(num_inference_steps: int, strength: float) -> int:
    """Index of the first timestep run for an img2img ``strength`` (the official pipeline's rule).

    The official rule truncates: int(steps * strength) steps are run, so strength 0.99 with 20 steps
    starts at index 1 and runs 19 steps from t = 900.
    """
    if not 0.0 < strength <= 1.0:
        raise InputError(f"strength must lie in (0, 1], got {strength}")
    steps_run = min(int(num_inference_steps * strength), num_inference_steps)
    if steps_run < 1:
        raise InputError(f"strength {strength} with {num_inference_steps} steps runs no step at all")
    return num_inference_steps - steps_run


def split_prediction(output: torch.Tensor, x_t: torch.Tensor, alpha_bar: torch.Tensor,
                     prediction_type: PredictionType) -> tuple[torch.Tensor, torch.Tensor]:
    """A network's output at x_t -> its estimates (x̂0, ε̂), each shaped like ``x_t``.

    output, x_t: (B, C, H, W); alpha_bar: ᾱ_t as a 0-d tensor or broadcastable to x_t, e.g. (B, 1, 1, 1).
    ε-prediction: x̂0 = (x_t − √(1−ᾱ)·ε̂)/√ᾱ. v-prediction: x̂0 = √ᾱ·x_t − √(1−ᾱ)·v̂, ε̂ = √(1−ᾱ)·x_t + √ᾱ·v̂.
    """
    if prediction_type == "epsilon":
        return (x_t - (1 - alpha_bar).sqrt() * output) / alpha_bar.sqrt(), output
    return (alpha_bar.sqrt() * x_t - (1 - alpha_bar).sqrt() * output,
            (1 - alpha_bar).sqrt() * x_t + alpha_bar.sqrt() * output)


def velocity(x0: torch.Tensor, noise: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    """The v-prediction target √ᾱ·ε − √(1−ᾱ)·x0. x0, noise: (B, C, H, W); alpha_bar broadcastable. -> (B, C, H, W)."""
    return alpha_bar.sqrt() * noise - (1 - alpha_bar).sqrt() * x0


def cfg_combine(uncond: torch.Tensor, cond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance ε = ε_u + scale·(ε_c − ε_u), evaluated in the official order (v alike).

    uncond, cond: (B, C, H, W) -> (B, C, H, W). For the official CFG batch, ``uncond, cond =
    eps.chunk(2)``: row block 0 is the unconditional branch (ids 10-19), block 1 the conditional one.
    """
    return uncond + scale * (cond - uncond)


class DDIMStepOutput(NamedTuple):
    """One DDIM update: x_{t-Δ} (B, C, H, W) and the x0 estimate it was built from (B, C, H, W)."""

    prev_sample: torch.Tensor
    pred_original_sample: torch.Tensor


class DDIMScheduler:
    """DDIM (Song et al. 2021) with eta = 0 for an ε- or v-predicting model.

    Holds the schedule (``alphas_cumprod``, float32 CPU) and, after :meth:`set_timesteps`, the inference
    timesteps; nothing else is stateful, so one instance may serve any number of sampling loops.
    """

    def __init__(self, config: DDIMConfig = DDIMConfig()) -> None:
        self.config = config
        self.alphas_cumprod = scaled_linear_alphas_cumprod(config)
        self.final_alpha_cumprod = torch.tensor(1.0) if config.set_alpha_to_one else self.alphas_cumprod[0].clone()
        self.num_inference_steps: int | None = None
        self.timesteps = torch.empty(0, dtype=torch.int64)

    def set_timesteps(self, num_inference_steps: int) -> torch.Tensor:
        """Lay out ``num_inference_steps`` timesteps "leading": k·(T // n) + offset, descending. -> (n,) int64.

        With T = 1000 and n = 20 that is 950, 900, ..., 0 (trace key ``timesteps_all``).
        """
        train_steps = self.config.num_train_timesteps
        if not 1 <= num_inference_steps <= train_steps:
            raise InputError(f"num_inference_steps must lie in [1, {train_steps}], got {num_inference_steps}")
        stride = train_steps // num_inference_steps
        steps = torch.arange(num_inference_steps, dtype=torch.int64) * stride + self.config.steps_offset
        self.num_inference_steps = num_inference_steps
        self.timesteps = steps.flip(0)
        return self.timesteps

    def timesteps_for_strength(self, strength: float) -> torch.Tensor:
        """The tail of :attr:`timesteps` that an img2img run with ``strength`` visits. -> (k,) int64."""
        return self.timesteps[strength_start_index(self._steps(), strength) :]

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor | int) -> torch.Tensor:
        """Forward diffusion q(x_t | x0): √ᾱ_t·x0 + √(1 − ᾱ_t)·noise.

        x0, noise: (B, ...); timesteps: an int, or a tensor of shape (), (1,) or (B,). -> (B, ...) in x0's dtype.
        """
        t = torch.as_tensor(timesteps, device=x0.device).reshape(-1)
        if t.shape[0] not in (1, x0.shape[0]):
            raise InputError(f"timesteps of shape {tuple(t.shape)} do not broadcast to a batch of {x0.shape[0]}")
        # ᾱ cast to the sample's dtype before the square roots, as in the reference.
        alpha = self.alphas_cumprod.to(device=x0.device, dtype=x0.dtype)[t]  # (B,) or (1,)
        shape = (-1,) + (1,) * (x0.ndim - 1)
        return alpha.sqrt().reshape(shape) * x0 + (1 - alpha).sqrt().reshape(shape) * noise

    def step(self, output: torch.Tensor, timestep: torch.Tensor | int, sample: torch.Tensor) -> DDIMStepOutput:
        """One deterministic DDIM update from ``timestep`` to ``timestep - T // n``.

        (x0, ε) from the network's output (:func:`split_prediction`); x_prev = √ᾱ_prev·x0 + √(1 − ᾱ_prev)·ε,
        where ᾱ_prev is 1 past t = 0. output, sample: (B, C, H, W) -> :class:`DDIMStepOutput` of two
        (B, C, H, W) tensors.
        """
        t = int(timestep)
        if not 0 <= t < self.config.num_train_timesteps:
            raise InputError(f"timestep {t} outside [0, {self.config.num_train_timesteps})")
        prev_t = t - self.config.num_train_timesteps // self._steps()
        # 0-d float32 scalars, combined in the reference's order: this is what keeps the trace bitwise.
        alpha_t = self.alphas_cumprod[t]
        alpha_prev = self.alphas_cumprod[prev_t] if prev_t >= 0 else self.final_alpha_cumprod
        pred_x0, eps = split_prediction(output, sample, alpha_t, self.config.prediction_type)
        prev_sample = alpha_prev.sqrt() * pred_x0 + (1 - alpha_prev).sqrt() * eps
        return DDIMStepOutput(prev_sample, pred_x0)

    def _steps(self) -> int:
        if self.num_inference_steps is None:
            raise RuntimeError("call set_timesteps() before sampling")
        return self.num_inference_steps
