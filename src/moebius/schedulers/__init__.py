"""Noise schedules and samplers, shared by inference (``moebius.pipeline``) and training (``moebius.train``)."""

from .ddim import (DDIMConfig, DDIMScheduler, DDIMStepOutput, PredictionType, cfg_combine, scheduler_config_dict,
                   scaled_linear_alphas_cumprod, split_prediction, strength_start_index, velocity)

__all__ = ["DDIMConfig", "DDIMScheduler", "DDIMStepOutput", "PredictionType", "cfg_combine", "scheduler_config_dict",
           "scaled_linear_alphas_cumprod", "split_prediction", "strength_start_index", "velocity"]
