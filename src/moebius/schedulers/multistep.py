"""What the multistep solvers (DPM-Solver++ 2M, UniPC) share: noise levels, timestep layout, bookkeeping.

Both work on the scaled-linear schedule DDIM uses, in the parametrisation σ = √((1 − ᾱ)/ᾱ), so
x_t = α·x0 + σ_t·ε with α = 1/√(σ² + 1) and σ_t = σ·α, and both step in the log-SNR λ = log α − log σ_t.
A trajectory of n steps has n timesteps and n + 1 noise levels, the last one 0: the final step returns
the model's clean-image estimate.

Timesteps are laid out "linspace" (round(linspace(0, T − 1, n + 1)), descending, the last dropped:
999, 949, ..., 50 for n = 20), the layout these solvers use in diffusers by default; or, with
``karras=True``, at the noise levels of Karras et al. (2022, ρ = 7) between the schedule's smallest and
largest σ, each mapped back to the nearest timestep by log-σ interpolation. Every value is computed the
way diffusers' ``DPMSolverMultistepScheduler``/``UniPCMultistepScheduler`` compute it (float32 noise
levels, float64 layout), so both produce the same trajectories to float32 rounding
(tests/test_schedulers.py).

The solvers are stateful within one trajectory (they keep the previous clean-image estimates): call
:meth:`MultistepSolver.set_timesteps` (or :meth:`~MultistepSolver.timesteps_for_strength`) before each
trajectory, then :meth:`~MultistepSolver.step` once per timestep, in order.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import InputError
from .ddim import DDIMConfig, DDIMStepOutput, scaled_linear_alphas_cumprod, strength_start_index

_KARRAS_RHO = 7.0


def train_sigmas(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """σ_t = √((1 − ᾱ_t)/ᾱ_t) for every training timestep: (T,) float32 -> (T,) float32, increasing in t."""
    return ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5


def linspace_timesteps(num_train_timesteps: int, num_inference_steps: int) -> np.ndarray:
    """round(linspace(0, T − 1, n + 1)) descending, without its final 0. -> (n,) int64."""
    grid = np.linspace(0, num_train_timesteps - 1, num_inference_steps + 1).round()
    return grid[::-1][:-1].astype(np.int64)


def karras_sigmas(sigmas: torch.Tensor, num_inference_steps: int) -> np.ndarray:
    """n noise levels from σ_max down to σ_min, evenly spaced in σ^(1/ρ) (Karras et al. 2022, ρ = 7).

    sigmas: (T,) float32 training noise levels, increasing. -> (n,) float64.
    """
    inv_rho_min = sigmas[0].item() ** (1 / _KARRAS_RHO)
    inv_rho_max = sigmas[-1].item() ** (1 / _KARRAS_RHO)
    ramp = np.linspace(0, 1, num_inference_steps)
    return (inv_rho_max + ramp * (inv_rho_min - inv_rho_max)) ** _KARRAS_RHO


def timesteps_of_sigmas(levels: np.ndarray, sigmas: torch.Tensor) -> np.ndarray:
    """The (fractional) training timestep of each noise level, by linear interpolation in log σ.

    levels: (n,) float64; sigmas: (T,) float32 training noise levels, increasing. -> (n,) float64 in [0, T − 1].
    """
    log_train = np.log(sigmas.numpy())  # float32, as the reference interpolates
    log_levels = np.log(np.maximum(levels, 1e-10))
    # Index of the last training level at or below each requested one, kept one short of the end.
    below = (log_levels[None, :] - log_train[:, None]) >= 0  # (T, n)
    low = np.cumsum(below, axis=0).argmax(axis=0).clip(max=len(log_train) - 2)
    high = low + 1
    weight = np.clip((log_train[low] - log_levels) / (log_train[low] - log_train[high]), 0, 1)
    return (1 - weight) * low + weight * high


class MultistepSolver:
    """Base of the multistep solvers: the schedule, the timestep layout and the trajectory's history.

    Subclasses implement :meth:`_update`, the move from step ``index``'s noise level to the next one.
    ``config`` supplies the schedule and the prediction type (ε or v); its DDIM-only fields
    (``set_alpha_to_one``, ``steps_offset``) do not apply to these solvers' layouts.
    """

    def __init__(self, config: DDIMConfig = DDIMConfig(), *, karras: bool = False) -> None:
        self.config = config
        self.karras = karras
        self.alphas_cumprod = scaled_linear_alphas_cumprod(config)
        self.num_inference_steps: int | None = None
        self.timesteps = torch.empty(0, dtype=torch.int64)
        self.sigmas = torch.empty(0)  # (n + 1,) float32 once set, ending in 0
        self._reset(0)

    def set_timesteps(self, num_inference_steps: int) -> torch.Tensor:
        """Lay out ``num_inference_steps`` timesteps (see the module docstring) and start a new trajectory.

        -> (n,) int64, descending; :attr:`sigmas` becomes the (n + 1,) float32 noise levels, the last 0.
        """
        train_steps = self.config.num_train_timesteps
        if not 1 <= num_inference_steps <= train_steps:
            raise InputError(f"num_inference_steps must lie in [1, {train_steps}], got {num_inference_steps}")
        all_sigmas = train_sigmas(self.alphas_cumprod)
        if self.karras:
            levels = karras_sigmas(all_sigmas, num_inference_steps)
            timesteps = timesteps_of_sigmas(levels, all_sigmas).round().astype(np.int64)
            sigmas = torch.from_numpy(np.append(levels, 0.0).astype(np.float32))
        else:
            timesteps = linspace_timesteps(train_steps, num_inference_steps)
            sigmas = torch.cat([all_sigmas[torch.from_numpy(timesteps)], torch.zeros(1)])
        self.num_inference_steps = num_inference_steps
        self.timesteps = torch.from_numpy(timesteps)
        self.sigmas = sigmas
        self._reset(0)
        return self.timesteps

    def timesteps_for_strength(self, strength: float) -> torch.Tensor:
        """The tail of :attr:`timesteps` an img2img run with ``strength`` visits (the DDIM rule), and start
        a new trajectory at its first step. -> (k,) int64."""
        if self.num_inference_steps is None:
            raise RuntimeError("call set_timesteps() before sampling")
        start = strength_start_index(self.num_inference_steps, strength)
        self._reset(start)
        return self.timesteps[start:]

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor | int) -> torch.Tensor:
        """Noise ``x0`` to a timestep's level: α·x0 + σ_t·noise.

        A timestep of the layout gets that step's noise level (with Karras spacing, the exact Karras σ,
        not the rounded timestep's); any other timestep gets the training schedule's.
        x0, noise: (B, ...); timesteps: an int, or a tensor of shape (), (1,) or (B,). -> (B, ...) in x0's dtype.
        """
        t = torch.as_tensor(timesteps).reshape(-1).cpu()
        if t.shape[0] not in (1, x0.shape[0]):
            raise InputError(f"timesteps of shape {tuple(t.shape)} do not broadcast to a batch of {x0.shape[0]}")
        all_sigmas = train_sigmas(self.alphas_cumprod)
        levels = torch.stack([self._sigma_of_timestep(int(v), all_sigmas) for v in t.tolist()])
        levels = levels.to(device=x0.device, dtype=x0.dtype).reshape((-1,) + (1,) * (x0.ndim - 1))
        alpha, sigma = alpha_sigma(levels)
        return alpha * x0 + sigma * noise

    def step(self, output: torch.Tensor, timestep: torch.Tensor | int, sample: torch.Tensor) -> DDIMStepOutput:
        """One update from ``timestep`` (the trajectory's next one) to the following noise level.

        output: the network's ε or v at ``sample``; output, sample: (B, C, H, W) float32.
        -> :class:`DDIMStepOutput` (the next latents, this step's clean-image estimate), each (B, C, H, W).
        """
        index = self._index
        if self.num_inference_steps is None:
            raise RuntimeError("call set_timesteps() before sampling")
        if index >= len(self.timesteps):
            raise InputError(f"the trajectory's {len(self.timesteps)} steps are done; call set_timesteps() again")
        expected = int(self.timesteps[index])
        if int(timestep) != expected:
            raise InputError(f"timestep {int(timestep)} is not the trajectory's next one ({expected})")
        x0 = self._clean_estimate(output, sample, index)
        prev_sample = self._update(x0, sample, index)
        self._estimates.append(x0)
        self._index = index + 1
        return DDIMStepOutput(prev_sample, x0)

    def _update(self, x0: torch.Tensor, sample: torch.Tensor, index: int) -> torch.Tensor:
        raise NotImplementedError

    def _reset(self, start: int) -> None:
        """Start a trajectory at step ``start``: no history yet."""
        self._index = start
        self._estimates: list[torch.Tensor] = []  # this trajectory's clean-image estimates, oldest first

    def _sigma_of_timestep(self, t: int, all_sigmas: torch.Tensor) -> torch.Tensor:
        if not 0 <= t < self.config.num_train_timesteps:
            raise InputError(f"timestep {t} outside [0, {self.config.num_train_timesteps})")
        positions = (self.timesteps == t).nonzero().flatten().tolist()
        if positions:
            # The trajectory's own position first: Karras layouts may repeat a timestep at the low end.
            index = self._index if self._index in positions else positions[0]
            return self.sigmas[index]
        return all_sigmas[t]

    def _clean_estimate(self, output: torch.Tensor, sample: torch.Tensor, index: int) -> torch.Tensor:
        """x̂0 from an ε- or v-prediction at step ``index``'s noise level. -> like ``sample``."""
        alpha, sigma = alpha_sigma(self.sigmas[index])
        if self.config.prediction_type == "epsilon":
            return (sample - sigma * output) / alpha
        return alpha * sample - sigma * output

    def _log_snr(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(α, σ_t, λ = log α − log σ_t) at noise level ``index``, 0-d float32 (λ = +inf at σ = 0)."""
        alpha, sigma = alpha_sigma(self.sigmas[index])
        return alpha, sigma, torch.log(alpha) - torch.log(sigma)


def alpha_sigma(sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """σ (any shape) -> (α = 1/√(σ² + 1), σ_t = σ·α), the signal and noise scales of x_t = α·x0 + σ_t·ε."""
    alpha = 1 / ((sigma**2 + 1) ** 0.5)
    return alpha, sigma * alpha
