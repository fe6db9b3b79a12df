"""The DDIM scheduler against the official pipeline trace (tests/data/parity/README.md)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from moebius.errors import ConfigError, InputError
from moebius.schedulers.ddim import (
    DDIMConfig,
    DDIMScheduler,
    cfg_combine,
    split_prediction,
    strength_start_index,
    velocity,
)
from parity_formula import PARITY_DIR

GUIDANCE_SCALE = 2.0  # the traced call (tests/data/parity/README.md, "Pipeline trace")
NUM_STEPS = 20
STRENGTH = 0.99
NOISE_OFFSET = 0.0357


@pytest.fixture(scope="module")
def trace() -> dict[str, torch.Tensor]:
    return load_file(str(PARITY_DIR / "pipeline_trace_subset.safetensors"))


@pytest.fixture(scope="module")
def trace_meta() -> dict:
    return json.loads((PARITY_DIR / "pipeline_trace.json").read_text())


@pytest.fixture
def scheduler() -> DDIMScheduler:
    s = DDIMScheduler()
    s.set_timesteps(NUM_STEPS)
    return s


def _latents_atol(reference: torch.Tensor) -> float:
    # Tolerance: per-step latents at atol 5e-4 or rtol 1e-5 of |max| (they grow to ~37).
    return max(5e-4, 1e-5 * reference.abs().max().item())


def _eps_cfg(trace: dict[str, torch.Tensor], step: int) -> torch.Tensor:
    uncond, cond = trace[f"step{step:02d}_eps_raw_uncond_cond"].chunk(2)  # row 0 uncond, row 1 cond
    return cfg_combine(uncond, cond, GUIDANCE_SCALE)


# ----------------------------------------------------------------------------------------------------
# Schedule and timesteps


def test_official_scheduler_config_is_the_default(trace_meta):
    assert DDIMConfig.from_config_dict(trace_meta["scheduler_config"]) == DDIMConfig()


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("prediction_type", "sample"),
        ("timestep_spacing", "trailing"),
        ("beta_schedule", "linear"),
        ("clip_sample", True),
        ("rescale_betas_zero_snr", True),
        ("eta", 0.5),  # not a scheduler config key
    ],
)
def test_unsupported_scheduler_config_is_refused(trace_meta, key, value):
    with pytest.raises(ConfigError, match=key):
        DDIMConfig.from_config_dict(trace_meta["scheduler_config"] | {key: value})


def test_alphas_cumprod_match_official(trace):
    s = DDIMScheduler()
    assert s.alphas_cumprod.dtype == torch.float32 and s.alphas_cumprod.shape == (1000,)
    torch.testing.assert_close(s.alphas_cumprod, trace["alphas_cumprod"], rtol=0, atol=1e-7)
    torch.testing.assert_close(s.final_alpha_cumprod.reshape(1), trace["final_alpha_cumprod"], rtol=0, atol=0)
    assert abs(s.alphas_cumprod[900].item() - 0.014151) < 1e-6  # ᾱ at t = 900, where the official run starts


def test_timesteps_match_official(scheduler, trace):
    assert torch.equal(scheduler.timesteps, trace["timesteps_all"])  # 950, 900, ..., 0
    run = scheduler.timesteps_for_strength(STRENGTH)
    assert torch.equal(run, trace["timesteps_run"])  # 900, 850, ..., 0: 19 steps
    assert run[0] == trace["latent_timestep"].item()


@pytest.mark.parametrize(
    ("steps", "strength", "start"), [(20, 0.99, 1), (20, 1.0, 0), (20, 0.5, 10), (50, 0.3, 35), (10, 0.1, 9)]
)
def test_strength_start_index(steps, strength, start):
    assert strength_start_index(steps, strength) == start


@pytest.mark.parametrize("strength", [0.0, -0.1, 1.5, 0.04])
def test_bad_strength_is_refused(strength):
    with pytest.raises(InputError, match="strength"):
        strength_start_index(20, strength)


def test_step_needs_timesteps():
    s = DDIMScheduler()
    with pytest.raises(RuntimeError, match="set_timesteps"):
        s.step(torch.zeros(1, 4, 2, 2), 900, torch.zeros(1, 4, 2, 2))
    with pytest.raises(InputError):
        s.set_timesteps(0)


def test_steps_offset_shifts_timesteps():
    s = DDIMScheduler(DDIMConfig(steps_offset=1))
    assert s.set_timesteps(4).tolist() == [751, 501, 251, 1]


# ----------------------------------------------------------------------------------------------------
# Noise, guidance and the sampling loop, replayed from the trace


def test_add_noise_reproduces_latents_init(scheduler, trace):
    noise = trace["noise_stream3002_initial_noise"] + NOISE_OFFSET * trace["noise_stream3003_noise_offset"]
    start = scheduler.timesteps_for_strength(STRENGTH)[0]
    x = scheduler.add_noise(trace["image_latents"], noise, start)
    assert (x - trace["latents_init"]).abs().max().item() <= 1e-6


def test_add_noise_per_sample_timesteps(scheduler):
    x0, noise = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3)
    out = scheduler.add_noise(x0, noise, torch.tensor([900, 100]))
    for i, t in enumerate((900, 100)):
        torch.testing.assert_close(out[i : i + 1], scheduler.add_noise(x0[i : i + 1], noise[i : i + 1], t))
    with pytest.raises(InputError):
        scheduler.add_noise(x0, noise, torch.tensor([900, 100, 50]))


def test_cfg_combine_matches_official(trace):
    # Elementwise float32 ops in the same order: exact on any IEEE platform.
    for step in (0, 18):
        assert torch.equal(_eps_cfg(trace, step), trace[f"step{step:02d}_eps_cfg"])


def test_each_step_matches_official(scheduler, trace):
    """Teacher-forced: every recorded step input and ε gives the recorded output."""
    x = trace["latents_init"]
    for step, t in enumerate(scheduler.timesteps_for_strength(STRENGTH)):
        expected = trace[f"step{step:02d}_latents_after"]
        out = scheduler.step(_eps_cfg(trace, step), t, x).prev_sample
        diff = (out - expected).abs().max().item()
        assert diff <= _latents_atol(expected), f"step {step} (t={int(t)}): max |diff| {diff:.3g}"
        x = expected


def test_sampling_loop_matches_official(scheduler, trace):
    """Free-running: chaining our own outputs through all 19 steps stays on the recorded trajectory."""
    x = trace["latents_init"]
    for step, t in enumerate(scheduler.timesteps_for_strength(STRENGTH)):
        out = scheduler.step(_eps_cfg(trace, step), t, x)
        x = out.prev_sample
        expected = trace[f"step{step:02d}_latents_after"]
        assert (x - expected).abs().max().item() <= _latents_atol(expected), f"step {step}"
    # Past t = 0 the schedule ends at ᾱ = 1, so the last output is the x0 prediction itself.
    assert torch.equal(out.prev_sample, out.pred_original_sample)


def test_step_keeps_dtype(scheduler):
    x = torch.randn(1, 4, 2, 2, dtype=torch.float64)
    out = scheduler.step(torch.randn_like(x), 500, x)
    assert out.prev_sample.dtype == out.pred_original_sample.dtype == torch.float64


# ----------------------------------------------------------------------------------------------------
# v-prediction (our own small models)


def test_v_prediction_config_round_trips(trace_meta):
    config = DDIMConfig.from_config_dict(trace_meta["scheduler_config"] | {"prediction_type": "v_prediction"})
    assert config == DDIMConfig(prediction_type="v_prediction")
    with pytest.raises(ConfigError, match="prediction_type"):
        DDIMConfig(prediction_type="sample")  # type: ignore[arg-type]


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_exact_prediction_walks_the_forward_process(prediction_type):
    # A network that knows x0 and the noise: each step must land exactly on q(x_prev | x0) with the same
    # noise, and report x0; so the conversion between ε, v and x0 is consistent in both directions.
    config = DDIMConfig(prediction_type=prediction_type)
    s = DDIMScheduler(config)
    s.set_timesteps(10)
    gen = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(2, 4, 3, 5, generator=gen), torch.randn(2, 4, 3, 5, generator=gen)
    x = s.add_noise(x0, noise, s.timesteps[0])
    for t in s.timesteps.tolist():
        a = s.alphas_cumprod[t]
        output = noise if prediction_type == "epsilon" else velocity(x0, noise, a)
        step = s.step(output, t, x)
        torch.testing.assert_close(step.pred_original_sample, x0)
        expected = s.add_noise(x0, noise, t - 100) if t >= 100 else x0
        torch.testing.assert_close(step.prev_sample, expected)
        x = step.prev_sample


def test_v_prediction_bounds_the_x0_error_at_high_t():
    # The reason the small models predict v: at t = 950 the same output error moves an ε-predictor's x̂0
    # by (1−ᾱ)/ᾱ times more, in mean square, than a v-predictor's, which moves by at most the error itself.
    a = DDIMScheduler().alphas_cumprod[950].double()
    x_t, error = torch.randn(1000, dtype=torch.float64), 0.1 * torch.randn(1000, dtype=torch.float64)
    shift = {kind: (split_prediction(error, x_t, a, kind)[0] - split_prediction(0 * error, x_t, a, kind)[0])
             .square().mean() / error.square().mean() for kind in ("epsilon", "v_prediction")}
    assert shift["epsilon"].item() == pytest.approx(((1 - a) / a).item())
    assert shift["epsilon"] > 100 and shift["v_prediction"] <= 1
