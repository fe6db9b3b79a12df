"""The ``official`` preset replays the official pipeline trace stage by stage (tests/data/parity/README.md).

One full-size run (0.22B student and the SDXL-shaped VAE with the formula weights, 512², 19 steps) with
the four recorded random draws injected through ``noise=``; every stage the trace recorded is compared
through ``intermediates=``. Slow: a few minutes on a 2-core CPU.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from moebius.models.vae import AutoencoderKL
from moebius.pipeline import MoebiusInpaintPipeline, NoiseDraws
from moebius.pipeline import blend
from moebius.weights.official import load_official
from parity_formula import PARITY_DIR, formula_state_dict, load_layout

pytestmark = pytest.mark.slow

ATOL = 1e-4  # posterior mean/std, latents, per-step ε, decoded (tests/data/parity/README.md, "Tolerances")
STEPS = 19


@pytest.fixture(scope="module")
def trace() -> dict[str, torch.Tensor]:
    return load_file(str(PARITY_DIR / "pipeline_trace_subset.safetensors"))


@pytest.fixture(scope="module")
def run(trace, student_state):
    """One official-preset call on the trace's inputs: (output uint8 (512, 512, 3), intermediates)."""
    vae = AutoencoderKL.from_config_dict(json.loads((PARITY_DIR / "vae_config.json").read_text()))
    vae.load_state_dict(formula_state_dict(load_layout("vae")))
    pipe = MoebiusInpaintPipeline(load_official(student_state), vae)
    pipe.set_progress_bar_config(disable=True)
    noise = NoiseDraws(
        image_posterior=trace["noise_stream3000_vae_sample_image"],
        masked_image_posterior=trace["noise_stream3001_vae_sample_masked_image"],
        initial=trace["noise_stream3002_initial_noise"],
        offset=trace["noise_stream3003_noise_offset"],
    )
    record: dict[str, torch.Tensor] = {}
    out = pipe(Image.open(PARITY_DIR / "test_image.png"), Image.open(PARITY_DIR / "test_mask.png"),
               preset="official", guidance_scale=2.0, noise=noise, output_type="np", intermediates=record)
    return out, record


def _diff(actual: torch.Tensor, expected: torch.Tensor) -> float:
    assert actual.shape == expected.shape
    return (actual.float().cpu() - expected.float()).abs().max().item()


def _uint8_close(actual: np.ndarray, expected: np.ndarray) -> tuple[int, float]:
    d = np.abs(actual.astype(np.int16) - expected.astype(np.int16))
    return int(d.max()), float((d > 0).mean())


def test_metadata_records_the_official_run(run):
    out, _ = run
    meta = out.metadata[0]
    assert (meta.preset, meta.num_inference_steps, meta.steps_run, meta.guidance_scale) == ("official", 20, STEPS, 2.0)
    assert meta.strength == 0.99 and meta.size == (512, 512)


@pytest.mark.parametrize("name", [
    "vae_sample_image_posterior_mean", "vae_sample_image_posterior_std",
    "vae_sample_masked_image_posterior_mean", "vae_sample_masked_image_posterior_std",
    "image_latents", "masked_image_latents", "latents_init",
])
def test_encoding_stage(run, trace, name):
    assert _diff(run[1][name], trace[name]) <= ATOL


def test_exact_stages(run, trace):
    record = run[1]
    assert torch.equal(record["mask_latent"].cpu(), trace["mask_latent"])
    assert torch.equal(record["cfg_input_ids"].cpu(), trace["cfg_input_ids"])
    assert torch.equal(record["timesteps_run"], trace["timesteps_run"])
    assert torch.equal(record["latent_timestep"], trace["latent_timestep"])


@pytest.mark.parametrize("step", range(STEPS))
def test_each_step(run, trace, step):
    record = run[1]
    assert _diff(record[f"step{step:02d}_eps_raw_uncond_cond"], trace[f"step{step:02d}_eps_raw_uncond_cond"]) <= ATOL
    if f"step{step:02d}_eps_cfg" in trace:
        assert _diff(record[f"step{step:02d}_eps_cfg"], trace[f"step{step:02d}_eps_cfg"]) <= ATOL
    ref = trace[f"step{step:02d}_latents_after"]
    assert _diff(record[f"step{step:02d}_latents_after"], ref) <= max(5e-4, 1e-5 * ref.abs().max().item())


def test_decode_and_outputs(run, trace):
    out, record = run
    assert _diff(record["vae_decode_in"], trace["vae_decode_in"]) <= max(5e-4, 1e-5 * trace["vae_decode_in"].abs().max().item())
    assert _diff(record["decoded_01_before_paste"], trace["decoded_01_before_paste"]) <= ATOL
    to_u8 = lambda t: (t[0].clamp(0, 1) * 255).to(torch.uint8).permute(1, 2, 0).cpu().numpy()  # noqa: E731
    worst, share = _uint8_close(to_u8(record["decoded_01_before_paste"]), to_u8(trace["decoded_01_before_paste"]))
    assert worst <= 1 and share <= 1e-3
    worst, share = _uint8_close(out.images[0], np.asarray(Image.open(PARITY_DIR / "output_paste.png")))
    assert worst <= 1 and share <= 1e-3


def test_compensation_run(run, trace):
    """The compensate run differs only in the paste; apply it to this run's decode."""
    _, record = run
    generated = (record["decoded_01_before_paste"][0].clamp(0, 1) * 255).to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    original = np.asarray(Image.open(PARITY_DIR / "test_image.png").convert("RGB"))
    hole = np.asarray(Image.open(PARITY_DIR / "test_mask.png").convert("L")) >= 127.5
    out, delta = blend.paste_official(generated, original, hole, compensate=True)
    assert np.abs(delta - trace["compensate_delta_mean"].numpy()).max() <= 1e-3
    worst, share = _uint8_close(out, np.asarray(Image.open(PARITY_DIR / "output_compensate.png")))
    assert worst <= 1 and share <= 1e-3
