"""Gated linear attention: the chunked evaluation against the token-by-token recurrence."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from moebius.layers.gla import GatedLinearAttention, chunk_gla, gla_recurrent


def _problem(t: int, seed: int = 0, dtype: torch.dtype = torch.float64, decay_shift: float = 0.0):
    """Random q, k, log-decay (1, 3, T, 5) and v (1, 3, T, 7); log-decays spread over (-inf, 0)."""
    g = torch.Generator().manual_seed(seed)
    q, k = (torch.randn(1, 3, t, 5, generator=g, dtype=dtype) for _ in range(2))
    v = torch.randn(1, 3, t, 7, generator=g, dtype=dtype)
    log_decay = F.logsigmoid(3.0 * torch.randn(1, 3, t, 5, generator=g, dtype=dtype) + decay_shift)
    return q, k, v, log_decay


@pytest.mark.parametrize("t", [1, 7, 8, 31, 32, 33, 100, 257])
@pytest.mark.parametrize("chunk_size, sub_chunk_size", [(32, 8), (64, 16), (16, 16)])
def test_chunked_matches_recurrence_float64(t: int, chunk_size: int, sub_chunk_size: int) -> None:
    q, k, v, log_decay = _problem(t)
    expected = gla_recurrent(q, k, v, log_decay, scale=0.4)
    got = chunk_gla(q, k, v, log_decay, scale=0.4, chunk_size=chunk_size, sub_chunk_size=sub_chunk_size)
    assert got.dtype == torch.float64 and got.shape == (1, 3, t, 7)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_strong_decay_does_not_overflow_in_float32() -> None:
    # About -30 nats per token: a 32-token chunk spans e^-960, far below float32's range, so a
    # factorisation through exp(-cumulative decay) would produce inf and NaN here.
    q, k, v, log_decay = _problem(150, seed=1, decay_shift=-30.0)
    expected = gla_recurrent(q, k, v, log_decay, scale=0.4)
    got = chunk_gla(*(x.float() for x in (q, k, v, log_decay)), scale=0.4)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-5)


def test_output_is_causal_in_token_order() -> None:
    q, k, v, log_decay = _problem(80, seed=2)
    base = chunk_gla(q, k, v, log_decay, scale=0.4)
    v2 = v.clone()
    v2[:, :, 50:] += 1.0
    changed = chunk_gla(q, k, v2, log_decay, scale=0.4)
    torch.testing.assert_close(changed[:, :, :50], base[:, :, :50], rtol=0, atol=0)
    assert (changed[:, :, 50:] - base[:, :, 50:]).abs().amax() > 0.1


def test_gradients_match_finite_differences() -> None:
    # 13 tokens in chunks of 8 split into sub-chunks of 4: padding, both intra-chunk paths and the
    # carried state all lie on the differentiated path.
    q, k, v, log_decay = (x.requires_grad_() for x in _problem(13, seed=3))
    assert torch.autograd.gradcheck(
        lambda *xs: chunk_gla(*xs, scale=0.4, chunk_size=8, sub_chunk_size=4), (q, k, v, log_decay), fast_mode=True
    )


def test_module_layout_and_forward() -> None:
    dim, heads = 64, 8
    attn = GatedLinearAttention(dim, heads).double()
    shapes = {k: tuple(v.shape) for k, v in attn.state_dict().items()}
    assert shapes == {
        "q_proj.weight": (32, 64),
        "k_proj.weight": (32, 64),
        "v_proj.weight": (64, 64),
        "g_proj.weight": (64, 64),
        "gk_proj.0.weight": (16, 64),
        "gk_proj.1.weight": (32, 16),
        "gk_proj.1.bias": (32,),
        "o_proj.weight": (64, 64),
        "g_norm_swish_gate.weight": (8,),
    }
    with torch.no_grad():
        attn.g_norm_swish_gate.weight.uniform_(0.5, 1.5)
    x = torch.randn(2, 45, dim, dtype=torch.float64, requires_grad=True)
    out = attn(x)
    assert out.shape == x.shape

    # The same layer written out with the recurrence, heads first.
    def heads_first(y: torch.Tensor) -> torch.Tensor:
        return y.unflatten(-1, (heads, -1)).transpose(1, 2)

    with torch.no_grad():
        q, k, v = heads_first(attn.q_proj(x)), heads_first(attn.k_proj(x)), heads_first(attn.v_proj(x))
        log_decay = heads_first(F.logsigmoid(attn.gk_proj(x)) / 16)
        o = gla_recurrent(q, k, v, log_decay, scale=4**-0.5).transpose(1, 2)  # (B, T, H, 8)
        o = o * torch.rsqrt(o.pow(2).mean(-1, keepdim=True) + 1e-6) * attn.g_norm_swish_gate.weight
        g = heads_first(attn.g_proj(x)).transpose(1, 2)
        expected = attn.o_proj((o * F.silu(g)).flatten(2))
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-12)

    out.square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    for name, p in attn.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_cpu_never_consults_fla(monkeypatch: pytest.MonkeyPatch) -> None:
    import moebius.layers.gla as gla

    def fail() -> None:
        raise AssertionError("the fla kernel was looked up for a CPU tensor")

    monkeypatch.setattr(gla, "_fla_chunk_gla", fail)
    x = torch.randn(1, 20, 32)
    assert GatedLinearAttention(32, heads=8)(x).shape == (1, 20, 32)
