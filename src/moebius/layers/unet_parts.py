"""Standard Stable-Diffusion U-Net pieces, with diffusers' parameter names.

The teacher's checkpoint uses diffusers' key layout, so every attribute name and registration order
here is part of the checkpoint format: ``norm1``, ``conv1``, ``time_emb_proj``, ``to_out.0``,
``ff.net.2`` and so on.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class ResnetBlock2D(nn.Module):
    """GroupNorm-SiLU-conv, plus the projected time embedding, GroupNorm-SiLU-conv, plus a shortcut.

    x: (B, C_in, H, W), temb: (B, D_t) -> (B, C_out, H, W). A 1×1 ``conv_shortcut`` exists only when
    C_in != C_out.
    """

    def __init__(self, in_channels: int, out_channels: int, temb_channels: int, groups: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_channels, eps=eps)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.time_emb_proj = nn.Linear(temb_channels, out_channels)
        self.norm2 = nn.GroupNorm(groups, out_channels, eps=eps)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time_emb_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        if self.conv_shortcut is not None:
            x = self.conv_shortcut(x)
        return x + h


class CrossAttention(nn.Module):
    """Multi-head softmax attention from image tokens to context tokens.

    x: (B, N, C), context: (B, M, D) -> (B, N, C); ``heads`` heads of width C / heads, scaled by
    width^-1/2. Projections have no bias except the output (``to_out.0``).
    """

    def __init__(self, dim: int, context_dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(context_dim, dim, bias=False)
        self.to_v = nn.Linear(context_dim, dim, bias=False)
        # A list (not a bare Linear) so the checkpoint key is ``to_out.0``; diffusers' dropout at
        # index 1 has no parameters and is left out.
        self.to_out = nn.ModuleList([nn.Linear(dim, dim)])

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        def split(y: torch.Tensor) -> torch.Tensor:  # (B, L, H*D) -> (B, H, L, D)
            return y.unflatten(-1, (self.heads, -1)).transpose(1, 2)

        out = F.scaled_dot_product_attention(split(self.to_q(x)), split(self.to_k(context)), split(self.to_v(context)))
        return self.to_out[0](out.transpose(1, 2).flatten(2))


class GEGLU(nn.Module):
    """Linear C -> 2·hidden, then value ⊙ GELU(gate) (value = first half): (..., C) -> (..., hidden)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, 2 * hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = self.proj(x).chunk(2, dim=-1)
        return value * F.gelu(gate)


class FeedForward(nn.Module):
    """GEGLU to 4C then Linear back to C: (..., C) -> (..., C). Keys ``net.0.proj`` and ``net.2``."""

    def __init__(self, dim: int, mult: int = 4) -> None:
        super().__init__()
        # Index 1 stands where diffusers has a (p=0) dropout, to keep the output layer at ``net.2``.
        self.net = nn.ModuleList([GEGLU(dim, mult * dim), nn.Identity(), nn.Linear(mult * dim, dim)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.net:
            x = layer(x)
        return x


class TransformerBlock(nn.Module):
    """Pre-LayerNorm block: self-attention, cross-attention to the context, GEGLU feed-forward.

    tokens (B, N, C), context (B, M, D) -> (B, N, C). ``self_attn`` maps (B, N, C) -> (B, N, C); the
    teacher passes gated linear attention, which reads the tokens in raster order.
    """

    def __init__(self, dim: int, context_dim: int, heads: int, self_attn: nn.Module) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = self_attn
        self.norm2 = nn.LayerNorm(dim)
        self.attn2 = CrossAttention(dim, context_dim, heads)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim)

    def forward(self, tokens: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        tokens = tokens + self.attn1(self.norm1(tokens))
        tokens = tokens + self.attn2(self.norm2(tokens), context)
        return tokens + self.ff(self.norm3(tokens))


class Transformer2D(nn.Module):
    """GroupNorm -> 1×1 conv -> a transformer block on raster-order tokens -> 1×1 conv, plus the input.

    x: (B, C, H, W), context: (B, M, D) -> (B, C, H, W). H and W are read from ``x``, so any size works.
    """

    def __init__(self, channels: int, block: TransformerBlock, groups: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6)
        self.proj_in = nn.Conv2d(channels, channels, 1)
        self.transformer_blocks = nn.ModuleList([block])
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = self.proj_in(self.norm(x)).reshape(b, c, h * w).transpose(1, 2)  # (B, H·W, C), row-major
        for block in self.transformer_blocks:
            tokens = block(tokens, context)
        return self.proj_out(tokens.transpose(1, 2).reshape(b, c, h, w)) + x
