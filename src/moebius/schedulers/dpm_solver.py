"""DPM-Solver++ 2M (Lu et al. 2022): a second-order multistep solver of the diffusion ODE in x0-space.

Step i moves from λ_s = λ(σ_i) to λ_t = λ(σ_{i+1}) with h = λ_t − λ_s (:mod:`.multistep` for σ, α, λ).
With D0 = x̂0 at step i, first order (DDIM in this parametrisation) is

    x_t = (σ_t/σ_s)·x_s − α_t·(e^(−h) − 1)·D0,

and second order adds the midpoint correction −½·α_t·(e^(−h) − 1)·D1 with D1 = (D0 − x̂0_prev)/r,
r = h_prev/h, from the previous step's estimate. The first step of a trajectory has no previous estimate
and the last one (to σ = 0, where the update is exactly D0) takes the first-order update: diffusers'
``DPMSolverMultistepScheduler`` defaults (``solver_order=2``, ``algorithm_type="dpmsolver++"``,
``solver_type="midpoint"``, ``final_sigmas_type="zero"``), optionally with ``use_karras_sigmas``.

Typical use: as :class:`~moebius.schedulers.ddim.DDIMScheduler`, one fresh trajectory per
``set_timesteps``/``timesteps_for_strength``::

    solver = DPMSolverMultistep(karras=True)
    solver.set_timesteps(10)
    for t in solver.timesteps:
        x = solver.step(model(x, t), t, x).prev_sample
"""

from __future__ import annotations

import torch

from .multistep import MultistepSolver


class DPMSolverMultistep(MultistepSolver):
    """DPM-Solver++ 2M for an ε- or v-predicting model; ``karras=True`` for Karras-spaced noise levels."""

    def _update(self, x0: torch.Tensor, sample: torch.Tensor, index: int) -> torch.Tensor:
        alpha_t, sigma_t, lambda_t = self._log_snr(index + 1)
        _, sigma_s, lambda_s = self._log_snr(index)
        h = lambda_t - lambda_s
        first_order = not self._estimates or index == len(self.timesteps) - 1
        if first_order:
            return (sigma_t / sigma_s) * sample - (alpha_t * (torch.exp(-h) - 1.0)) * x0
        _, _, lambda_prev = self._log_snr(index - 1)
        ratio = (lambda_s - lambda_prev) / h
        slope = (1.0 / ratio) * (x0 - self._estimates[-1])
        return ((sigma_t / sigma_s) * sample - (alpha_t * (torch.exp(-h) - 1.0)) * x0
                - 0.5 * (alpha_t * (torch.exp(-h) - 1.0)) * slope)
