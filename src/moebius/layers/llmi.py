"""The LλMI block: Local-λ, Interactive-λ and Mix-FFN in a pre-norm transformer block."""

from __future__ import annotations

import torch
import torch.nn as nn

from .lambda_layers import InteractiveLambda, LocalLambda
from .mix_ffn import MixFFN


def tokens_to_map(t: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, H·W, C) raster-order tokens -> (B, C, H, W)."""
    b, n, c = t.shape
    return t.transpose(1, 2).reshape(b, c, size[0], size[1])


def map_to_tokens(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, H·W, C) raster-order tokens."""
    b, c, h, w = x.shape
    return x.reshape(b, c, h * w).transpose(1, 2)


class LLMIBlock(nn.Module):
    """t + Local-λ(LN t); t + Interactive-λ(LN t, ctx); t + Mix-FFN(LN t). Tokens (B, H·W, C) in and out."""

    def __init__(self, channels: int, context_dim: int, grid_size: int, heads: int = 8, tokens: int = 10,
                 kernel_size: int = 15, ffn_ratio: float = 2.5) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(channels)
        self.attn1 = LocalLambda(channels, heads=heads, kernel_size=kernel_size)
        self.norm2 = nn.LayerNorm(channels)
        self.attn2 = InteractiveLambda(channels, context_dim, grid_size, tokens=tokens, heads=heads)
        self.norm3 = nn.LayerNorm(channels)
        self.ff = MixFFN(channels, ratio=ffn_ratio)

    def forward(self, t: torch.Tensor, context: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        t = t + map_to_tokens(self.attn1(tokens_to_map(self.norm1(t), size)))
        t = t + map_to_tokens(self.attn2(tokens_to_map(self.norm2(t), size), context))
        t = t + map_to_tokens(self.ff(tokens_to_map(self.norm3(t), size)))
        return t


class LLMITransformer(nn.Module):
    """GroupNorm -> 1×1 conv -> one LλMI block on tokens -> 1×1 conv, plus the input.

    x: (B, C, H, W), context: (B, m, D) -> (B, C, H, W). Key layout of diffusers' Transformer2DModel.
    """

    def __init__(self, channels: int, context_dim: int, grid_size: int, heads: int = 8, tokens: int = 10,
                 groups: int = 32, kernel_size: int = 15, ffn_ratio: float = 2.5) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6)
        self.proj_in = nn.Conv2d(channels, channels, 1)
        self.transformer_blocks = nn.ModuleList(
            [LLMIBlock(channels, context_dim, grid_size, heads=heads, tokens=tokens, kernel_size=kernel_size, ffn_ratio=ffn_ratio)]
        )
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        size = (x.shape[2], x.shape[3])
        t = map_to_tokens(self.proj_in(self.norm(x)))
        for block in self.transformer_blocks:
            t = block(t, context, size)
        return x + self.proj_out(tokens_to_map(t, size))
