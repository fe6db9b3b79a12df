"""The fast inference path computes what the reference path computes."""

from __future__ import annotations

import pytest
import torch

from moebius import create_model
from moebius.layers.resample import Upsample
from moebius.models.fast import PhaseUpsample, optimize_for_inference

IDS = torch.tensor([list(range(10, 20)), list(range(10))])


def _randomise_batchnorm(model: torch.nn.Module, seed: int = 0) -> None:
    """Non-trivial BN statistics and affines, so that folding is really exercised."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                m.running_mean.copy_(torch.rand(m.num_features, generator=g) * 0.4 - 0.2)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) * 0.4 + 0.8)
                m.bias.copy_(torch.rand(m.num_features, generator=g) * 0.2 - 0.1)


def _compare(model, size, atol_sample, rtol_blocks, seed=0):
    fast = optimize_for_inference(model)
    x = torch.randn(2, 9, *size, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        ref = model(x, torch.tensor([700]), IDS, return_block_outputs=True)
        out = fast(x.contiguous(memory_format=torch.channels_last), torch.tensor([700]), IDS, return_block_outputs=True)
    diff = (out.sample - ref.sample).abs().max().item()
    assert diff <= atol_sample, f"sample differs by {diff}"
    for i, (a, b) in enumerate(zip(out.block_outputs, ref.block_outputs)):
        scale = b.abs().max().item()
        assert (a - b).abs().max().item() <= rtol_blocks * scale, f"block {i}"


@pytest.mark.parametrize("size", [(16, 16), (12, 20), (8, 4)])
def test_tiny_fast_path_matches_reference(size):
    torch.manual_seed(0)
    model = create_model("moebius-tiny").eval()
    _randomise_batchnorm(model)
    _compare(model, size, atol_sample=1e-5, rtol_blocks=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("size", [(64, 64), (48, 80)])
def test_full_size_fast_path_matches_reference(size):
    torch.manual_seed(0)
    model = create_model("moebius").eval()
    _randomise_batchnorm(model)
    # The fast path sums in another order (folded BatchNorm, contracted λ), and at 1280 channels how far the
    # roundings drift apart depends on the CPU's float32 kernels: AVX2 builds sit just above 1e-5 of |max|.
    _compare(model, size, atol_sample=5e-5, rtol_blocks=3e-5)


@pytest.mark.parametrize("batch", [1, 2])
def test_shared_cfg_input_equals_doubled_input(batch):
    """One x row per CFG pair gives what the doubled batch gives, on both the fast and reference path."""
    torch.manual_seed(0)
    model = create_model("moebius-tiny").eval()
    _randomise_batchnorm(model)
    fast = optimize_for_inference(model)
    x = torch.randn(batch, 9, 12, 16).contiguous(memory_format=torch.channels_last)
    ids = torch.tensor([list(range(10, 20))] * batch + [list(range(10))] * batch)
    with torch.no_grad():
        shared = fast(x, torch.tensor([700]), ids, return_block_outputs=True)
        doubled = fast(torch.cat([x, x]), torch.tensor([700]), ids, return_block_outputs=True)
        ref = model(torch.cat([x, x]), torch.tensor([700]), ids)
    assert shared.sample.shape == (2 * batch, 4, 12, 16)
    # Equal up to float rounding: the shared rows run GEMMs of another shape.
    torch.testing.assert_close(shared.sample, doubled.sample, atol=1e-5 * doubled.sample.abs().max().item(), rtol=0)
    for a, b in zip(shared.block_outputs, doubled.block_outputs):
        torch.testing.assert_close(a, b, atol=1e-5 * b.abs().max().item(), rtol=0)
    assert (shared.sample - ref).abs().max().item() <= 1e-5
    with pytest.raises(ValueError, match="not a multiple"):
        fast(torch.cat([x, x, x]), 700, ids)


def test_fast_copy_leaves_the_model_untouched():
    torch.manual_seed(0)
    model = create_model("moebius-tiny").eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimize_for_inference(model)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_phase_upsample_equals_nearest_then_conv():
    torch.manual_seed(0)
    ref = Upsample(8)
    fast = PhaseUpsample(ref)
    x = torch.randn(2, 8, 5, 7)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), ref(x), atol=2e-6, rtol=1e-5)
        torch.testing.assert_close(fast(x, (10, 14)), ref(x, (10, 14)), atol=2e-6, rtol=1e-5)
        with pytest.raises(ValueError, match="only doubles"):
            fast(x, (11, 14))


def test_bf16_fast_path_stays_close_to_fp32():
    torch.manual_seed(0)
    model = create_model("moebius-tiny").eval()
    _randomise_batchnorm(model)
    fast = optimize_for_inference(model)
    x = torch.randn(2, 9, 16, 12).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        ref = fast(x, 300, IDS)
        low = fast.to(torch.bfloat16)(x.bfloat16(), 300, IDS)
    assert low.dtype == torch.bfloat16
    # bf16 keeps 8 mantissa bits: a few % relative error after a dozen layers (3-4 % for these weights).
    assert ((low.float() - ref).norm() / ref.norm()).item() < 0.06


def test_fast_copy_keeps_the_model_dtype():
    model = create_model("moebius-tiny").eval().to(torch.bfloat16)
    fast = optimize_for_inference(model)
    assert {p.dtype for p in fast.parameters()} == {torch.bfloat16}
