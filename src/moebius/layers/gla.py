"""Gated linear attention (GLA, Yang et al. 2023), the PixelHacker teacher's self-attention.

Per head, over the T tokens in raster order, with a per-key-channel log-decay ``g_t <= 0``::

    S_t = diag(exp(g_t)) S_{t-1} + k_t^T v_t        (S: head_k x head_v state)
    o_t = (scale * q_t) S_t

so the "attention" is causal along the raster scan. :func:`chunk_gla` evaluates this in chunks with
matrix products (pure PyTorch, any device); :func:`gla_recurrent` is the token-by-token definition,
kept as the reference the tests compare against. On CUDA, :func:`gated_linear_attention` uses the
Triton kernel of ``fla`` when that package is installed.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

# Fixed by the PixelHacker checkpoint: rank of the decay projection and the divisor of its logits.
GATE_LOW_RANK_DIM = 16
GATE_LOGIT_NORMALIZER = 16.0


def gla_recurrent(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, log_decay: torch.Tensor, scale: float
) -> torch.Tensor:
    """Token-by-token GLA recurrence; the definition, for tests (a Python loop over T).

    q, k, log_decay: (B, H, T, K); v: (B, H, T, V) -> (B, H, T, V), in the inputs' dtype.
    """
    b, h, t, dk = q.shape
    state = q.new_zeros(b, h, dk, v.shape[-1])
    outputs = []
    for i in range(t):
        state = log_decay[:, :, i, :, None].exp() * state + k[:, :, i, :, None] * v[:, :, i, None, :]
        outputs.append((scale * q[:, :, i, None, :]) @ state)
    return torch.cat(outputs, dim=2)


def chunk_gla(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    log_decay: torch.Tensor,
    scale: float,
    chunk_size: int = 32,
    sub_chunk_size: int = 8,
) -> torch.Tensor:
    """Chunked GLA in pure PyTorch: equal to :func:`gla_recurrent` up to rounding.

    q, k, log_decay: (B, H, T, K); v: (B, H, T, V) -> (B, H, T, V). ``log_decay`` must be <= 0.

    The sequence is cut into chunks of ``chunk_size`` tokens. Inside a chunk, outputs come from
    matrix products (:func:`_intra_chunk`); between chunks, one (K, V) state per head is carried by
    a parallel scan (:func:`_scan_states`), so there is no Python loop over tokens or chunks. Every
    exponential has a non-positive argument (a decay over a span of tokens), so nothing overflows
    however strong the decay is. Computed in at least float32.

    The defaults keep the pairwise (sub, sub, K) decay tensors, which dominate the cost, small; they were
    the fastest on CPU over the teacher's sizes (docs/experiments/speed-choices.md).
    """
    if chunk_size % sub_chunk_size:
        raise ValueError(f"chunk_size {chunk_size} is not a multiple of sub_chunk_size {sub_chunk_size}")
    b, h, t, dk = q.shape
    dv = v.shape[-1]
    dtype = torch.promote_types(q.dtype, torch.float32)
    pad = -t % chunk_size
    # Zero-padding the tail is harmless: outputs are causal, and padded tokens are dropped at the end.
    q, k, v, log_decay = (F.pad(x.to(dtype), (0, 0, 0, pad)) for x in (q, k, v, log_decay))
    n = (t + pad) // chunk_size
    q = (q * scale).reshape(b, h, n, chunk_size, dk)
    k = k.reshape(b, h, n, chunk_size, dk)
    v = v.reshape(b, h, n, chunk_size, dv)
    # cum[..., i, :]: log of the total decay from the chunk's start up to and including token i.
    cum = log_decay.reshape(b, h, n, chunk_size, dk).cumsum(dim=-2)

    out = _intra_chunk(q, k, v, cum, sub_chunk_size)

    # The state entering a chunk reaches token i decayed by exp(cum_i); token s's update reaches
    # the chunk's end decayed by exp(cum_last - cum_s).
    last = cum[..., -1:, :]
    chunk_updates = (k * (last - cum).exp()).transpose(-1, -2) @ v  # (B, H, N, K, V)
    states = _scan_states(last.exp().transpose(-1, -2), chunk_updates)
    entering = F.pad(states[:, :, :-1], (0, 0, 0, 0, 1, 0))  # the state before chunk i: zero for i = 0
    out = out + (q * cum.exp()) @ entering
    return out.reshape(b, h, n * chunk_size, dv)[:, :, :t]


def _intra_chunk(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cum: torch.Tensor, sub: int
) -> torch.Tensor:
    """Contribution of tokens of the same chunk: o_i = sum_{s<=i} (q_i * exp(cum_i - cum_s)) . k_s v_s.

    q, k, cum: (..., L, K); v: (..., L, V) -> (..., L, V).

    Factoring exp(cum_i - cum_s) into exp(cum_i) * exp(-cum_s) would overflow for long strongly
    decaying spans, so the chunk is split into sub-chunks of ``sub`` tokens. Pairs within one
    sub-chunk get their decay explicitly ((sub, sub, K) per sub-chunk). Pairs across sub-chunks are
    factored through the end of the key's sub-chunk j: both exp(cum_i - end_j) (i after sub-chunk j)
    and exp(end_j - cum_s) (s inside it) have non-positive arguments.
    """
    length = q.shape[-2]
    m = length // sub
    qs, ks, vs, cs = (x.unflatten(-2, (m, sub)) for x in (q, k, v, cum))  # (..., M, sub, D)

    # Within a sub-chunk: explicit pairwise decay, masked to s <= i before the exponential.
    causal = torch.ones(sub, sub, dtype=torch.bool, device=q.device).tril()
    pair_log = (cs[..., :, None, :] - cs[..., None, :, :]).masked_fill(~causal[:, :, None], float("-inf"))
    scores = (qs[..., :, None, :] * ks[..., None, :, :] * pair_log.exp()).sum(-1)  # (..., M, i, s)
    out = (scores @ vs).flatten(-3, -2)

    # Across sub-chunks: each sub-chunk j sums its keys and values into a (K, V) state decayed to
    # its own end; every later token reads that state decayed from end_j to itself.
    ends = cs[..., -1, :]  # (..., M, K)
    sub_states = (ks * (ends[..., None, :] - cs).exp()).transpose(-1, -2) @ vs  # (..., M, K, V)
    token_sub = torch.arange(length, device=q.device) // sub
    later = token_sub[None, :] > torch.arange(m, device=q.device)[:, None]  # (M, L): token i after sub-chunk j
    read_log = (cum[..., None, :, :] - ends[..., :, None, :]).masked_fill(~later[:, :, None], float("-inf"))
    q_read = q[..., None, :, :] * read_log.exp()  # (..., M, L, K), zero where token i is not after j
    return out + (q_read @ sub_states).sum(dim=-3)


def _scan_states(decay: torch.Tensor, update: torch.Tensor) -> torch.Tensor:
    """Inclusive scan of S_i = decay_i * S_{i-1} + update_i along dim 2, with S_{-1} = 0.

    decay: (B, H, N, K, 1) in [0, 1]; update: (B, H, N, K, V) -> S: (B, H, N, K, V).

    Hillis-Steele doubling: after the step with offset w, ``update[i]`` holds the sum over the last
    2w chunks up to i, each decayed to the end of chunk i, and ``decay[i]`` the decay across them.
    log2(N) vectorised steps instead of N sequential ones; only products of decays <= 1 appear.
    """
    n = update.shape[2]
    w = 1
    while w < n:
        update = torch.cat([update[:, :, :w], update[:, :, w:] + decay[:, :, w:] * update[:, :, :-w]], dim=2)
        decay = torch.cat([decay[:, :, :w], decay[:, :, w:] * decay[:, :, :-w]], dim=2)
        w *= 2
    return update


def _fla_chunk_gla() -> Callable[..., tuple[torch.Tensor, torch.Tensor | None]] | None:
    """fla's Triton ``chunk_gla`` when fla >= 0.3 is importable (its (B, T, H, D) layout), else None."""
    try:
        import fla
        from fla.ops.gla import chunk_gla as fla_chunk_gla
    except ImportError:
        return None
    version = tuple(int(p) for p in getattr(fla, "__version__", "0.0").split(".")[:2] if p.isdigit())
    return fla_chunk_gla if version >= (0, 3) else None


def gated_linear_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, log_decay: torch.Tensor, scale: float
) -> torch.Tensor:
    """GLA on the best available backend.

    q, k, log_decay: (B, T, H, K); v: (B, T, H, V) -> (B, T, H, V) in v's dtype. fla's kernel on CUDA
    when installed, otherwise :func:`chunk_gla`.
    """
    if q.is_cuda:
        fla_kernel = _fla_chunk_gla()
        if fla_kernel is not None:
            out, _ = fla_kernel(q, k, v, g=log_decay, scale=scale)
            return out.to(v.dtype)
    heads_first = [x.transpose(1, 2) for x in (q, k, v, log_decay)]
    return chunk_gla(*heads_first, scale=scale).transpose(1, 2).to(v.dtype)


class GatedRMSNorm(nn.Module):
    """RMSNorm over the last dim with a learned scale, times a swish gate: (..., D), (..., D) -> (..., D).

    Computed in at least float32, like the fused fla kernel it replaces.
    """

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        work = torch.promote_types(dtype, torch.float32)
        x, gate = x.to(work), gate.to(work)
        x = x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + self.eps) * self.weight.to(work)
        return (x * (gate * torch.sigmoid(gate))).to(dtype)


class GatedLinearAttention(nn.Module):
    """PixelHacker's attn1: multi-head GLA over raster-order tokens, (B, T, C) -> (B, T, C).

    ``heads`` heads with key width C / (2 * heads) and value width C / heads. The per-key decay is
    logsigmoid(gk_proj(x)) / 16 through a rank-16 bottleneck; each head's output is RMS-normalised
    (one weight shared by all heads), gated by swish(g_proj(x)) and mixed by o_proj. Parameter names
    are those of fla's ``GatedLinearAttention`` so official checkpoints load unchanged.
    """

    def __init__(self, dim: int, heads: int = 8, norm_eps: float = 1e-6) -> None:
        super().__init__()
        if dim % (2 * heads):
            raise ValueError(f"GLA width {dim} is not divisible by 2 * heads = {2 * heads}")
        key_dim = dim // 2
        self.heads = heads
        self.q_proj = nn.Linear(dim, key_dim, bias=False)
        self.k_proj = nn.Linear(dim, key_dim, bias=False)
        self.v_proj = nn.Linear(dim, dim, bias=False)
        self.g_proj = nn.Linear(dim, dim, bias=False)
        self.gk_proj = nn.Sequential(
            nn.Linear(dim, GATE_LOW_RANK_DIM, bias=False), nn.Linear(GATE_LOW_RANK_DIM, key_dim)
        )
        self.o_proj = nn.Linear(dim, dim, bias=False)
        self.g_norm_swish_gate = GatedRMSNorm(dim // heads, eps=norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape

        def split(y: torch.Tensor) -> torch.Tensor:  # (B, T, H*D) -> (B, T, H, D)
            return y.unflatten(-1, (self.heads, -1))

        q, k, v = split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x))
        gk = self.gk_proj(x)
        # The decay compounds over thousands of tokens: keep its logits in at least float32.
        gk = gk.to(torch.promote_types(gk.dtype, torch.float32))
        log_decay = split(F.logsigmoid(gk) / GATE_LOGIT_NORMALIZER)
        out = gated_linear_attention(q, k, v, log_decay, scale=q.shape[-1] ** -0.5)
        out = self.g_norm_swish_gate(out, split(self.g_proj(x)))
        return self.o_proj(out.reshape(b, t, -1))
