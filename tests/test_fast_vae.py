"""The autoencoder's fast inference copy (``optimize_for_inference``) computes what the reference modules do."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from moebius.models.fast import FastMidBlockAttention, FastVAEResnet, PhaseUpsample, optimize_for_inference
from moebius.models.vae import AutoencoderKL, MidBlockAttention, ResnetBlock, VAEConfig
from moebius.pipeline import MoebiusInpaintPipeline
from moebius.weights.bundled import default_model_dir

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
# The bundled model's autoencoder shape (f4, attention in the mid block) at a tenth of its widths.
SMALL_KL = VAEConfig(block_out_channels=(16, 32, 32), layers_per_block=1, norm_num_groups=8)


def _randomised(config: VAEConfig) -> AutoencoderKL:
    torch.manual_seed(0)
    vae = AutoencoderKL(config).eval()
    with torch.no_grad():  # non-trivial norms, so that every affine is exercised
        for module in vae.modules():
            if isinstance(module, torch.nn.GroupNorm):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
    return vae


def test_resnet_block_gives_the_same_numbers():
    torch.manual_seed(0)
    for ref in (ResnetBlock(16, 16, 8), ResnetBlock(16, 32, 8)):
        x = torch.randn(2, 16, 12, 10)
        with torch.no_grad():
            assert torch.equal(FastVAEResnet(ref)(x), ref(x))


@pytest.mark.parametrize("channels_last", [False, True])
def test_mid_block_attention_matches(channels_last):
    torch.manual_seed(0)
    ref = MidBlockAttention(32, 8).eval()
    x = torch.randn(2, 32, 9, 7)
    fast = FastMidBlockAttention(ref)
    if channels_last:
        x, fast = x.contiguous(memory_format=torch.channels_last), fast.to(memory_format=torch.channels_last)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), ref(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("channels_last", [False, True])
def test_fast_autoencoder_matches_the_reference_in_float32(channels_last):
    vae = _randomised(SMALL_KL)
    fast = optimize_for_inference(vae, channels_last=channels_last)
    kinds = {type(m) for m in fast.modules()}
    assert {FastVAEResnet, FastMidBlockAttention, PhaseUpsample} <= kinds
    assert not {ResnetBlock, MidBlockAttention} & kinds
    images = torch.rand(2, 3, 36, 28, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        ref_posterior, fast_posterior = vae.encode(images), fast.encode(images)
        torch.testing.assert_close(fast_posterior.mean, ref_posterior.mean, atol=2e-5, rtol=1e-5)
        torch.testing.assert_close(fast_posterior.std, ref_posterior.std, atol=2e-5, rtol=1e-5)
        latents = ref_posterior.mean
        torch.testing.assert_close(fast.decode(latents), vae.decode(latents), atol=2e-5, rtol=1e-5)


def test_fast_autoencoder_leaves_the_reference_untouched_and_keeps_its_dtype():
    vae = _randomised(SMALL_KL)
    before = copy.deepcopy(vae.state_dict())
    fast = optimize_for_inference(vae.to(torch.bfloat16))
    assert all(torch.equal(before[k].bfloat16(), v) for k, v in vae.state_dict().items())
    assert {p.dtype for p in fast.parameters()} == {torch.bfloat16}
    latents = torch.randn(1, 4, 8, 6)
    with torch.no_grad():
        low = fast.decode(latents.bfloat16()).float()
        ref = vae.float().decode(latents)
    # bf16 keeps 8 mantissa bits: about 1 % relative error after the decoder's dozen convolutions.
    assert ((low - ref).norm() / ref.norm()).item() < 0.03


def test_bundled_pipeline_fast_autoencoder_matches_the_reference_autoencoder():
    """The bundled model's float32 call on a 256² piece of the README sample: the fast autoencoder (the
    default) against the reference modules, same fast student. Within float32 rounding, the uint8 output
    moves by at most one level at a handful of pixels (a value sitting on a rounding boundary)."""
    pipe = MoebiusInpaintPipeline.from_pretrained(default_model_dir())
    pipe.set_progress_bar_config(disable=True)
    photo = np.asarray(Image.open(EXAMPLES / "coffee.jpg").convert("RGB"))[100:356, 250:506]
    hole = np.zeros(photo.shape[:2], np.uint8)
    hole[60:200, 70:170] = 255
    fast_models = pipe._models()
    assert fast_models.vae is not pipe.vae
    fast = pipe(photo, hole, seed=0, output_type="np").images[0]
    pipe._fast_models = dataclasses.replace(fast_models, vae=pipe.vae)  # the reference modules
    ref = pipe(photo, hole, seed=0, output_type="np").images[0]
    diff = np.abs(fast.astype(np.int16) - ref.astype(np.int16))
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3

