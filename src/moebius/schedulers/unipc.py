"""UniPC-bh2 (Zhao et al. 2023): a multistep predictor-corrector solver in x0-space, orders 1 and 2.

With h = λ_t − λ_s (:mod:`.multistep` for σ, α, λ), D0 = x̂0 at step i and B(h) = e^(−h) − 1 ("bh2"),
the predictor (UniP) is

    x_t = (σ_t/σ_s)·x_s − α_t·B(h)·D0 − α_t·B(h)·½·D1,   D1 = (x̂0_prev − D0)/r, r = (λ_prev − λ_s)/h,

without the D1 term at order 1. The corrector (UniC) runs at the start of the next step, once the model
has been evaluated at the predicted x_t: it redoes the same move with that new estimate included,
weights ρ from the bh2 linear system (order 1: ρ = ½), and the corrected x_t is what the next predictor
starts from. Order 1 on the first step (no history) and the last one (to σ = 0): diffusers'
``UniPCMultistepScheduler`` defaults (``solver_order=2``, ``solver_type="bh2"``, ``predict_x0=True``,
``lower_order_final=True``, corrector on every step, ``final_sigmas_type="zero"``).
"""

from __future__ import annotations

import torch

from .multistep import MultistepSolver


class UniPCMultistep(MultistepSolver):
    """UniPC-bh2 of order 2 for an ε- or v-predicting model; ``karras=True`` for Karras-spaced noise levels."""

    def _reset(self, start: int) -> None:
        super()._reset(start)
        self._last_sample: torch.Tensor | None = None  # the x the previous predictor started from
        self._last_order = 0

    def _update(self, x0: torch.Tensor, sample: torch.Tensor, index: int) -> torch.Tensor:
        if self._last_sample is not None:
            sample = self._correct(x0, index)
        order = min(2, len(self.timesteps) - index, len(self._estimates) + 1)
        self._last_sample, self._last_order = sample, order
        return self._predict(x0, sample, index, order)

    def _predict(self, x0: torch.Tensor, sample: torch.Tensor, index: int, order: int) -> torch.Tensor:
        """UniP from step ``index`` to ``index + 1``; the estimates before ``x0`` are in the history."""
        alpha_t, sigma_t, lambda_t = self._log_snr(index + 1)
        _, sigma_s, lambda_s = self._log_snr(index)
        h = lambda_t - lambda_s
        b_h = torch.expm1(-h)
        base = sigma_t / sigma_s * sample - alpha_t * b_h * x0
        if order == 1:
            return base
        _, _, lambda_prev = self._log_snr(index - 1)
        ratio = (lambda_prev - lambda_s) / h
        slope = (self._estimates[-1] - x0) / ratio
        return base - alpha_t * b_h * (0.5 * slope)

    def _correct(self, x0_new: torch.Tensor, index: int) -> torch.Tensor:
        """UniC: redo the move from step ``index − 1`` to ``index`` using the new estimate ``x0_new``."""
        assert self._last_sample is not None
        x0 = self._estimates[-1]
        alpha_t, sigma_t, lambda_t = self._log_snr(index)
        _, sigma_s, lambda_s = self._log_snr(index - 1)
        h = lambda_t - lambda_s
        b_h = torch.expm1(-h)
        base = sigma_t / sigma_s * self._last_sample - alpha_t * b_h * x0
        change = x0_new - x0
        if self._last_order == 1:
            return base - alpha_t * b_h * (0.5 * change)
        _, _, lambda_prev = self._log_snr(index - 2)
        ratio = (lambda_prev - lambda_s) / h
        slope = (self._estimates[-2] - x0) / ratio
        rho_slope, rho_change = _bh2_weights(ratio, -h, b_h)
        return base - alpha_t * b_h * (rho_slope * slope + rho_change * change)


def _bh2_weights(ratio: torch.Tensor, hh: torch.Tensor, b_h: torch.Tensor) -> torch.Tensor:
    """The order-2 corrector's weights ρ (0-d float32 each): the solution of [[1, 1], [r, 1]]·ρ = g with
    g_k = k!·ψ_k/B(h), ψ_1 = (e^hh − 1)/hh − 1, ψ_2 = ψ_1/hh − ½, hh = −h (UniPC's bh2 system)."""
    psi_1 = torch.expm1(hh) / hh - 1
    psi_2 = psi_1 / hh - 0.5
    rhs = torch.stack([psi_1 * 1 / b_h, psi_2 * 2 / b_h])
    matrix = torch.stack([torch.ones(2), torch.stack([ratio, torch.ones(())])])
    return torch.linalg.solve(matrix, rhs)
