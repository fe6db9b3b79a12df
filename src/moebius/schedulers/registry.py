"""Schedulers by name, and the interface a sampling loop needs from any of them.

``ddim`` is the official sampler (deterministic DDIM, "leading" timesteps); ``dpmpp-2m`` and
``dpmpp-2m-karras`` are DPM-Solver++ 2M on "linspace" or Karras timesteps; ``unipc`` is UniPC-bh2 on
"linspace" timesteps. All share the noise schedule and prediction type of one :class:`DDIMConfig`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, Protocol, get_args

from ..errors import ConfigError

if TYPE_CHECKING:  # the names are read by presets and the server's schemas, which need no torch
    import torch

    from .ddim import DDIMConfig, DDIMStepOutput

SchedulerName = Literal["ddim", "dpmpp-2m", "dpmpp-2m-karras", "unipc"]
SCHEDULER_NAMES: tuple[str, ...] = get_args(SchedulerName)


class Scheduler(Protocol):
    """What the sampling loop calls. One trajectory: ``set_timesteps(n)``, then ``timesteps_for_strength``
    (which starts the trajectory), ``add_noise`` for a partial-strength start, and ``step`` once per timestep
    in order (multistep solvers keep the trajectory's history between calls)."""

    timesteps: torch.Tensor

    def set_timesteps(self, num_inference_steps: int) -> torch.Tensor: ...

    def timesteps_for_strength(self, strength: float) -> torch.Tensor: ...

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor | int) -> torch.Tensor: ...

    def step(self, output: torch.Tensor, timestep: torch.Tensor | int, sample: torch.Tensor) -> DDIMStepOutput: ...


def make_scheduler(name: str, config: DDIMConfig | None = None) -> Scheduler:
    """A fresh scheduler called ``name`` (one of :data:`SCHEDULER_NAMES`) on ``config``'s schedule
    (the official one by default)."""
    from .ddim import DDIMConfig, DDIMScheduler
    from .dpm_solver import DPMSolverMultistep
    from .unipc import UniPCMultistep

    config = DDIMConfig() if config is None else config
    if name == "ddim":
        return DDIMScheduler(config)
    if name in ("dpmpp-2m", "dpmpp-2m-karras"):
        return DPMSolverMultistep(config, karras=name == "dpmpp-2m-karras")
    if name == "unipc":
        return UniPCMultistep(config)
    raise ConfigError(f"unknown scheduler {name!r}; known: {', '.join(SCHEDULER_NAMES)}")
