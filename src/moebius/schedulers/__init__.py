"""Noise schedules and samplers (DDIM, DPM-Solver++ 2M, UniPC), shared by inference (``moebius.pipeline``) and
training (``moebius.train``)."""

from .ddim import (DDIMConfig, DDIMScheduler, DDIMStepOutput, PredictionType, cfg_combine, scheduler_config_dict,
                   scaled_linear_alphas_cumprod, split_prediction, strength_start_index, velocity)
from .registry import SCHEDULER_NAMES, Scheduler, make_scheduler

__all__ = ["DDIMConfig", "DDIMScheduler", "DDIMStepOutput", "PredictionType", "cfg_combine", "scheduler_config_dict",
           "scaled_linear_alphas_cumprod", "split_prediction", "strength_start_index", "velocity",
           "SCHEDULER_NAMES", "Scheduler", "make_scheduler"]
