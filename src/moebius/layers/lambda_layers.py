"""Lambda layers of the LλMI block (Bello, "LambdaNetworks", ICLR 2021).

A lambda layer summarises a context into small linear maps ("lambdas") and applies them to every query,
so its cost is linear in the number of pixels. Moebius uses two, both multi-query (one set of keys and
values shared by ``heads`` query heads, intra-depth u = 1):

* :class:`LocalLambda` — self lambda over the feature map, whose position lambda is a learned 15×15
  convolution of the values (local context).
* :class:`InteractiveLambda` — cross lambda over the 10 latent-category tokens, whose position lambda
  is a learned per-(pixel, token) table.

Both take and return feature maps (B, C, H, W) with C = heads·dim_k. Channel c of the output is
``head·dim_v + v``, as in the official layers, so the following 1×1 projection loads unchanged.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .embeddings import standard_normal


class LocalLambda(nn.Module):
    """Self lambda with a local (r×r convolutional) position lambda: (B, C, H, W) -> (B, C, H, W).

    Parameters keep the official names and shapes: ``to_q/to_k/to_v`` are bias-free 1×1 convs,
    ``norm_q/norm_v`` BatchNorm2d, ``pos_conv`` a (dim_k, 1, 1, r, r) kernel with a (dim_k,) bias.
    """

    def __init__(self, channels: int, heads: int = 8, kernel_size: int = 15) -> None:
        super().__init__()
        if channels % heads:
            raise ValueError(f"channels {channels} not divisible by heads {heads}")
        self.heads = heads
        self.dim_k = self.dim_v = channels // heads
        self.to_q = nn.Conv2d(channels, heads * self.dim_k, 1, bias=False)
        self.to_k = nn.Conv2d(channels, self.dim_k, 1, bias=False)
        self.to_v = nn.Conv2d(channels, self.dim_v, 1, bias=False)
        self.norm_q = nn.BatchNorm2d(heads * self.dim_k)
        self.norm_v = nn.BatchNorm2d(self.dim_v)
        # A 1-input-channel Conv3d in the official code (depth = the value axis); kept as a module so the
        # checkpoint loads unchanged, but its kernels run as a 2-D convolution (forward below).
        self.pos_conv = nn.Conv3d(1, self.dim_k, (1, kernel_size, kernel_size), padding=(0, kernel_size // 2, kernel_size // 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        q = self.norm_q(self.to_q(x)).reshape(b, self.heads, self.dim_k, h * w)  # (B, h, k, N)
        k = self.to_k(x).reshape(b, self.dim_k, h * w).softmax(dim=-1)  # (B, k, N), softmax over positions
        v = self.norm_v(self.to_v(x))  # (B, v, H, W)

        content = torch.einsum("bkn,bvn->bkv", k, v.reshape(b, self.dim_v, h * w))  # (B, k, v)
        y = torch.einsum("bhkn,bkv->bhvn", q, content)  # (B, h, v, N)

        # The Conv3d's (1, r, r) kernels as a 2-D convolution of every value map: the same numbers, computed
        # faster (docs/experiments/speed-choices.md).
        kernels = self.pos_conv.weight[:, :, 0]  # (k, 1, r, r)
        position = F.conv2d(v.reshape(b * self.dim_v, 1, h, w), kernels, self.pos_conv.bias,
                            padding=kernels.shape[-1] // 2)  # (B·v, k, H, W)
        y = y + torch.einsum("bhkn,bvkn->bhvn", q, position.reshape(b, self.dim_v, self.dim_k, h * w))
        return y.reshape(b, self.heads * self.dim_v, h, w)


def resample_position_table(table: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinearly resample an Interactive-λ position table to another grid.

    table: (n·n, m, k) trained on an n×n grid, raster order -> (H·W, m, k). Returns the table itself when
    (H, W) == (n, n). An extension of ours (the authors trained and validated only the n×n grid).
    """
    cells, m, k = table.shape
    n = int(round(cells**0.5))
    if n * n != cells:
        raise ValueError(f"position table has {cells} rows, not a square grid")
    if size == (n, n):
        return table
    grid = table.permute(1, 2, 0).reshape(1, m * k, n, n)  # (1, m·k, n, n)
    grid = F.interpolate(grid.float(), size=size, mode="bilinear", align_corners=False).to(table.dtype)
    return grid.reshape(m, k, size[0] * size[1]).permute(2, 0, 1)


class InteractiveLambda(nn.Module):
    """Cross lambda from pixels to category tokens: x (B, C, H, W), context (B, m, D) -> (B, C, H, W).

    ``rel_pos_emb`` (n², m, dim_k, 1) holds one position lambda per (pixel, token) on the n×n training
    grid; other grids use a bilinear resample of it (see :func:`resample_position_table`).
    """

    def __init__(self, channels: int, context_dim: int, grid_size: int, tokens: int = 10, heads: int = 8) -> None:
        super().__init__()
        if channels % heads:
            raise ValueError(f"channels {channels} not divisible by heads {heads}")
        self.heads = heads
        self.tokens = tokens
        self.dim_k = self.dim_v = channels // heads
        self.rel_pos_emb = nn.Parameter(standard_normal(grid_size * grid_size, tokens, self.dim_k, 1))
        self.to_q = nn.Conv2d(channels, heads * self.dim_k, 1, bias=False)
        self.to_k = nn.Linear(context_dim, self.dim_k, bias=False)
        self.to_v = nn.Linear(context_dim, self.dim_v, bias=False)
        self.norm_q = nn.BatchNorm2d(heads * self.dim_k)
        self.norm_v = nn.BatchNorm1d(self.dim_v)

    def position_table(self, size: tuple[int, int]) -> torch.Tensor:
        """The (H·W, m, dim_k) position table for an H×W grid."""
        return resample_position_table(self.rel_pos_emb[..., 0], size)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        if context.shape[1] != self.tokens:
            raise ValueError(f"expected {self.tokens} context tokens, got {context.shape[1]}")
        q = self.norm_q(self.to_q(x)).reshape(b, self.heads, self.dim_k, h * w)  # (B, h, k, N)
        k = self.to_k(context).transpose(1, 2).softmax(dim=-1)  # (B, k, m), softmax over tokens
        v = self.norm_v(self.to_v(context).transpose(1, 2))  # (B, v, m); BN statistics over batch and tokens

        content = torch.einsum("bkm,bvm->bkv", k, v)  # (B, k, v)
        y = torch.einsum("bhkn,bkv->bhvn", q, content)  # (B, h, v, N)

        position = torch.einsum("nmk,bvm->bnkv", self.position_table((h, w)), v)  # (B, N, k, v)
        y = y + torch.einsum("bhkn,bnkv->bhvn", q, position)
        return y.reshape(b, self.heads * self.dim_v, h, w)
