"""DDIM (eta = 0) in numpy, driven by the schedule an export's manifest carries.

The same arithmetic as :class:`moebius.schedulers.ddim.DDIMScheduler`, in the same float32 order, on the
tables recorded at export time: ᾱ_t, √ᾱ_t and √(1 − ᾱ_t) as torch computed them (its float32 square
root is not always the correctly rounded one numpy computes, and one ulp would compound over the steps).
The manifest is the only input, so a runtime in another language can follow the same few lines.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import CheckpointError, InputError


@dataclass(frozen=True)
class NumpyDDIM:
    """√ᾱ and √(1 − ᾱ) per training timestep, (T + 1,) float32 with the value past t = 0 last, the timestep
    offset and what the network predicts."""

    sqrt_alpha: np.ndarray
    sqrt_one_minus_alpha: np.ndarray
    steps_offset: int
    prediction_type: str

    @classmethod
    def from_manifest(cls, scheduler: dict[str, Any]) -> NumpyDDIM:
        try:
            sqrt_alpha = np.asarray(scheduler["sqrt_alphas_cumprod"] + [scheduler["sqrt_final_alpha_cumprod"]],
                                    dtype=np.float32)
            sqrt_one_minus = np.asarray(scheduler["sqrt_one_minus_alphas_cumprod"]
                                        + [scheduler["sqrt_one_minus_final_alpha_cumprod"]], dtype=np.float32)
            out = cls(sqrt_alpha, sqrt_one_minus, int(scheduler.get("steps_offset", 0)),
                      str(scheduler.get("prediction_type", "epsilon")))
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"the export's scheduler entry is incomplete ({exc})") from None
        if sqrt_alpha.shape != sqrt_one_minus.shape or out.prediction_type not in ("epsilon", "v_prediction"):
            raise CheckpointError("the export's scheduler entry is malformed")
        return out

    @property
    def num_train_timesteps(self) -> int:
        return int(self.sqrt_alpha.shape[0]) - 1

    def timesteps(self, num_inference_steps: int, strength: float = 1.0) -> np.ndarray:
        """The descending "leading" timesteps an img2img run of ``strength`` visits: the last
        int(steps·strength) of k·(T // steps) + offset. -> (k,) int64."""
        train = self.num_train_timesteps
        if not 1 <= num_inference_steps <= train:
            raise InputError(f"num_inference_steps must lie in [1, {train}], got {num_inference_steps}")
        if not 0.0 < strength <= 1.0:
            raise InputError(f"strength must lie in (0, 1], got {strength}")
        run = min(int(num_inference_steps * strength), num_inference_steps)
        if run < 1:
            raise InputError(f"strength {strength} with {num_inference_steps} steps runs no step at all")
        steps = np.arange(num_inference_steps, dtype=np.int64) * (train // num_inference_steps) + self.steps_offset
        return steps[::-1][num_inference_steps - run:].copy()

    def add_noise(self, x0: np.ndarray, noise: np.ndarray, timestep: int) -> np.ndarray:
        """√ᾱ_t·x0 + √(1 − ᾱ_t)·noise, float32, shaped like ``x0``."""
        return self.sqrt_alpha[timestep] * x0 + self.sqrt_one_minus_alpha[timestep] * noise

    def step(self, output: np.ndarray, timestep: int, sample: np.ndarray, num_inference_steps: int) -> np.ndarray:
        """x_t -> x_{t − T // steps} from the network's output (ε or v), float32 (B, C, h, w)."""
        prev = timestep - self.num_train_timesteps // num_inference_steps
        if prev < 0:
            prev = self.num_train_timesteps  # the entry past t = 0
        a, b = self.sqrt_alpha[timestep], self.sqrt_one_minus_alpha[timestep]
        if self.prediction_type == "epsilon":
            pred_x0, eps = (sample - b * output) / a, output
        else:
            pred_x0, eps = a * sample - b * output, b * sample + a * output
        return self.sqrt_alpha[prev] * pred_x0 + self.sqrt_one_minus_alpha[prev] * eps


def cfg_combine(uncond: np.ndarray, cond: np.ndarray, scale: float) -> np.ndarray:
    """Classifier-free guidance ε_u + scale·(ε_c − ε_u), float32."""
    return uncond + np.float32(scale) * (cond - uncond)
