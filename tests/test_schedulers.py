"""The multistep solvers against diffusers' schedulers, step by step, and the scheduler registry.

Both sides get the same model outputs: a fixed, deterministic fake denoiser evaluated at each side's own
latents, so a discrepancy anywhere in the trajectory shows in every later step.
"""

from __future__ import annotations

import math

import pytest
import torch

from moebius.errors import ConfigError, InputError
from moebius.schedulers.ddim import DDIMConfig, DDIMScheduler
from moebius.schedulers.dpm_solver import DPMSolverMultistep
from moebius.schedulers.registry import SCHEDULER_NAMES, make_scheduler
from moebius.schedulers.unipc import UniPCMultistep

SOLVERS = {  # our name -> (class, karras, diffusers class name)
    "dpmpp-2m": (DPMSolverMultistep, False, "DPMSolverMultistepScheduler"),
    "dpmpp-2m-karras": (DPMSolverMultistep, True, "DPMSolverMultistepScheduler"),
    "unipc": (UniPCMultistep, False, "UniPCMultistepScheduler"),
    "unipc-karras": (UniPCMultistep, True, "UniPCMultistepScheduler"),
}
SHAPE = (2, 4, 8, 8)


def fake_denoiser(x: torch.Tensor, t: int) -> torch.Tensor:
    """A smooth, deterministic stand-in for a network: (B, 4, 8, 8) float32 -> (B, 4, 8, 8) float32."""
    channel = torch.arange(x.shape[1], dtype=torch.float32).reshape(1, -1, 1, 1)
    return 0.8 * torch.tanh(0.5 * x) + 0.3 * torch.sin(t / 97.0 + channel) - 0.05 * x


def diffusers_scheduler(name: str, prediction_type: str):
    import diffusers

    _, karras, class_name = SOLVERS[name]
    return getattr(diffusers, class_name)(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        prediction_type=prediction_type, use_karras_sigmas=karras)


def ours(name: str, prediction_type: str):
    cls, karras, _ = SOLVERS[name]
    return cls(DDIMConfig(prediction_type=prediction_type), karras=karras)


def trajectories(name: str, prediction_type: str, steps: int, strength: float):
    """Run both schedulers from the same start -> (our timesteps, theirs, our latents per step, theirs)."""
    generator = torch.Generator().manual_seed(steps)
    x0 = torch.randn(SHAPE, generator=generator)
    noise = torch.randn(SHAPE, generator=generator)
    mine, theirs = ours(name, prediction_type), diffusers_scheduler(name, prediction_type)
    mine.set_timesteps(steps)
    theirs.set_timesteps(steps)
    my_steps = mine.timesteps_for_strength(strength)
    start = steps - min(int(steps * strength), steps)  # diffusers' img2img get_timesteps
    their_steps = theirs.timesteps[start:]
    theirs.set_begin_index(start)
    if strength < 1.0:
        x_mine = mine.add_noise(x0, noise, my_steps[:1])
        x_theirs = theirs.add_noise(x0, noise, their_steps[:1])
    else:
        x_mine, x_theirs = noise.clone(), noise.clone() * theirs.init_noise_sigma
    mine_out, theirs_out = [x_mine], [x_theirs]
    for t_mine, t_theirs in zip(my_steps.tolist(), their_steps.tolist()):
        x_mine = mine.step(fake_denoiser(x_mine, t_mine), t_mine, x_mine).prev_sample
        x_theirs = theirs.step(fake_denoiser(x_theirs, t_theirs), t_theirs, x_theirs).prev_sample
        mine_out.append(x_mine)
        theirs_out.append(x_theirs)
    return my_steps, their_steps, mine_out, theirs_out


@pytest.mark.parametrize("name", SOLVERS)
def test_timesteps_and_noise_levels_match_diffusers(name):
    for steps in list(range(1, 31)) + [50, 100, 999, 1000]:
        mine, theirs = ours(name, "epsilon"), diffusers_scheduler(name, "epsilon")
        mine.set_timesteps(steps)
        theirs.set_timesteps(steps)
        assert torch.equal(mine.timesteps, theirs.timesteps), steps
        assert torch.equal(mine.sigmas, theirs.sigmas), steps


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("name", SOLVERS)
@pytest.mark.parametrize("steps,strength", [(1, 1.0), (2, 1.0), (3, 1.0), (8, 1.0), (20, 1.0), (25, 1.0),
                                            (20, 0.99), (10, 0.6), (16, 0.3)])
def test_every_step_matches_diffusers(name, prediction_type, steps, strength):
    my_steps, their_steps, mine, theirs = trajectories(name, prediction_type, steps, strength)
    assert my_steps.tolist() == their_steps.tolist()
    assert len(mine) == len(my_steps) + 1
    for i, (a, b) in enumerate(zip(mine, theirs)):
        assert torch.isfinite(a).all(), i
        # Same float32 operations in the same order: bit for bit, not merely close.
        assert torch.equal(a, b), (i, (a - b).abs().max().item())


def test_registry_builds_each_named_scheduler():
    assert SCHEDULER_NAMES == ("ddim", "dpmpp-2m", "dpmpp-2m-karras", "unipc")
    assert type(make_scheduler("ddim")) is DDIMScheduler
    karras = make_scheduler("dpmpp-2m-karras")
    assert isinstance(karras, DPMSolverMultistep) and karras.karras
    assert not make_scheduler("dpmpp-2m").karras
    v = make_scheduler("unipc", DDIMConfig(prediction_type="v_prediction"))
    assert isinstance(v, UniPCMultistep) and v.config.prediction_type == "v_prediction"
    with pytest.raises(ConfigError, match="unknown scheduler 'euler'"):
        make_scheduler("euler")


@pytest.mark.parametrize("name", SCHEDULER_NAMES)
def test_zero_steps_is_an_input_error(name):
    with pytest.raises(InputError, match=r"num_inference_steps must lie in \[1, 1000\], got 0"):
        make_scheduler(name).set_timesteps(0)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("name", ["dpmpp-2m", "dpmpp-2m-karras", "unipc"])
def test_one_step_from_pure_noise_returns_the_clean_estimate_at_t999(name, prediction_type):
    config = DDIMConfig(prediction_type=prediction_type)
    scheduler = make_scheduler(name, config)
    assert scheduler.set_timesteps(1).tolist() == [999]
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
    out = fake_denoiser(x, 999)
    result = scheduler.step(out, 999, x)
    alpha_bar = scheduler.alphas_cumprod[999]
    if prediction_type == "epsilon":
        expected = (x - (1 - alpha_bar).sqrt() * out) / alpha_bar.sqrt()
    else:
        expected = alpha_bar.sqrt() * x - (1 - alpha_bar).sqrt() * out
    torch.testing.assert_close(result.prev_sample, expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(result.prev_sample, result.pred_original_sample)


def test_one_ddim_step_is_the_official_layouts_single_step_at_t0():
    scheduler = make_scheduler("ddim")
    assert scheduler.set_timesteps(1).tolist() == [0]


@pytest.mark.parametrize("name", ["dpmpp-2m", "unipc"])
def test_steps_must_follow_the_trajectory(name):
    scheduler = make_scheduler(name)
    scheduler.set_timesteps(2)
    x = torch.zeros(SHAPE)
    with pytest.raises(InputError, match="timestep 500 is not the trajectory's next one \\(999\\)"):
        scheduler.step(x, 500, x)
    for t in scheduler.timesteps.tolist():
        x = scheduler.step(fake_denoiser(x, t), t, x).prev_sample
    with pytest.raises(InputError, match="steps are done"):
        scheduler.step(x, 0, x)
    # A new layout starts a new trajectory without history: the same steps give the same result.
    first = x
    scheduler.set_timesteps(2)
    x = torch.zeros(SHAPE)
    for t in scheduler.timesteps.tolist():
        x = scheduler.step(fake_denoiser(x, t), t, x).prev_sample
    assert torch.equal(x, first)


def test_add_noise_off_the_layout_uses_the_training_schedule():
    solver = make_scheduler("dpmpp-2m-karras")
    solver.set_timesteps(10)
    assert 300 not in solver.timesteps.tolist()
    x0, noise = torch.randn(SHAPE), torch.randn(SHAPE)
    expected = DDIMScheduler().add_noise(x0, noise, 300)
    torch.testing.assert_close(solver.add_noise(x0, noise, 300), expected, rtol=1e-6, atol=1e-6)
    # On the layout the exact Karras level applies, not the rounded timestep's schedule level.
    t = int(solver.timesteps[3])
    sigma = solver.sigmas[3].double()
    alpha = 1 / math.sqrt(sigma.item() ** 2 + 1)
    torch.testing.assert_close(solver.add_noise(x0, noise, t).double(),
                               alpha * x0.double() + sigma * alpha * noise.double(), rtol=1e-6, atol=1e-6)
