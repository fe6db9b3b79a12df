"""The Moebius student against the official code's parity vectors (tests/data/parity/README.md)."""

from __future__ import annotations

import json

import pytest
import torch

from moebius import create_model, load_official
from moebius.layers.lambda_layers import resample_position_table
from moebius.models.student import MoebiusConfig, build_moebius
from parity_formula import PARITY_DIR

BLOCK_COUNT = 6


def _close(actual: torch.Tensor, expected: torch.Tensor, atol: float, what: str) -> None:
    diff = (actual - expected).abs().max().item()
    assert diff <= atol, f"{what}: max |diff| {diff:.3g} > {atol:.3g}"


def test_parameter_count_is_exact():
    with torch.device("meta"):
        model = build_moebius(MoebiusConfig())
    assert sum(p.numel() for p in model.parameters()) == 226_041_531


def test_fresh_student_follows_the_official_initialisation():
    """Every Linear of the U-Net xavier-uniform with zero bias; convs and the category table keep defaults."""
    model = create_model("moebius-tiny")
    linears = [m for m in model.diff_model.modules() if isinstance(m, torch.nn.Linear)]
    assert linears
    for layer in linears:
        fan_out, fan_in = layer.weight.shape
        bound = (6 / (fan_in + fan_out)) ** 0.5
        assert layer.weight.abs().max() <= bound and layer.weight.abs().max() > 0.8 * bound
        assert layer.bias is None or not layer.bias.any()
    assert model.embedding_layer.weight.std() > 0.5  # nn.Embedding's N(0, 1), not re-initialised


def test_state_dict_layout_matches_official():
    layout = json.loads((PARITY_DIR / "student_keys.json").read_text())
    with torch.device("meta"):
        state = build_moebius(MoebiusConfig()).state_dict()
    assert [e["key"] for e in layout] == list(state)
    assert all(list(state[e["key"]].shape) == e["shape"] for e in layout)
    assert all(str(state[e["key"]].dtype).removeprefix("torch.") == e["dtype"] for e in layout)


@pytest.fixture(scope="module")
def eval_outputs(student_state, student_reference):
    model = load_official(student_state)
    ref = student_reference
    with torch.no_grad():
        return model(ref["x"], ref["timesteps"], ref["input_ids"], return_block_outputs=True)


def test_eval_forward_matches_official(eval_outputs, student_reference):
    ref = student_reference
    _close(eval_outputs.sample, ref["sample"], 5e-5, "sample")
    assert len(eval_outputs.block_outputs) == BLOCK_COUNT
    for i, block in enumerate(eval_outputs.block_outputs):
        first = ref[f"block{i}_row1_first4096"]
        _close(block[1].reshape(-1)[:4096], first, 1e-5 * first.abs().max().item(), f"block {i} first 4096")
        _close(block.mean(dim=(2, 3)), ref[f"block{i}_chmean"], 1e-4, f"block {i} channel means")
    kd = ref["kd_feature_block2_full"]
    _close(eval_outputs.block_outputs[2], kd, 1e-5 * kd.abs().max().item(), "KD feature")


def test_train_forward_and_batchnorm_updates_match_official(student_state, student_reference):
    ref = student_reference
    model = load_official(student_state).train()
    with torch.no_grad():
        out = model(ref["x"], ref["timesteps"], ref["input_ids"], return_block_outputs=True)
    _close(out.sample, ref["sample_train"], 5e-5, "train sample")
    for i, block in enumerate(out.block_outputs):
        _close(block.mean(dim=(2, 3)), ref[f"train_block{i}_chmean"], 1e-4, f"train block {i} channel means")
    state = model.state_dict()
    key = next(k for k in state if k.endswith("running_mean"))
    assert not torch.equal(state[key], student_state[key])  # the caller's dict is left as it was
    prefix = "train_bn."
    checked = 0
    for key, expected in ref.items():
        if key.startswith(prefix):
            actual = state[key[len(prefix):]]
            if expected.dtype == torch.int64:
                assert torch.equal(actual, expected), key
            else:
                _close(actual, expected, 1e-6, key)
            checked += 1
    assert checked == 9


def test_tiny_student_runs_non_square_and_backpropagates():
    torch.manual_seed(0)
    model = create_model("moebius-tiny").train()
    x = torch.randn(2, 9, 16, 24)
    ids = torch.tensor([list(range(10, 20)), list(range(10))])
    out = model(x, torch.tensor([10, 900]), ids, return_block_outputs=True)
    assert out.sample.shape == (2, 4, 16, 24)
    assert [tuple(b.shape[2:]) for b in out.block_outputs] == [(8, 12), (4, 6), (4, 6), (8, 12), (16, 24), (16, 24)]
    out.sample.square().mean().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_latent_size_must_be_a_multiple_of_four():
    model = create_model("moebius-tiny").eval()
    with pytest.raises(ValueError, match="multiple of 4"):
        model(torch.randn(1, 9, 18, 16), 500, torch.arange(10)[None])


def test_timesteps_broadcast_and_per_row():
    torch.manual_seed(0)
    model = create_model("moebius-tiny").eval()
    x = torch.randn(3, 9, 16, 16)
    ids = torch.arange(10).expand(3, 10)
    with torch.no_grad():
        per_row = model(x, torch.tensor([5, 500, 999]), ids)
        for i, t in enumerate((5, 500, 999)):
            torch.testing.assert_close(model(x[i : i + 1], t, ids[:1]), per_row[i : i + 1], atol=1e-5, rtol=1e-5)
        assert torch.equal(model(x, 7, ids), model(x, torch.tensor([7]), ids))


def test_position_table_resampling_is_identity_on_the_training_grid():
    table = torch.randn(64, 10, 4)
    assert resample_position_table(table, (8, 8)) is table
    grown = resample_position_table(table, (16, 8))
    assert grown.shape == (128, 10, 4)
    # A constant table stays constant under bilinear resampling.
    flat = torch.ones(64, 10, 4) * 3.0
    torch.testing.assert_close(resample_position_table(flat, (4, 12)), torch.full((48, 10, 4), 3.0))
