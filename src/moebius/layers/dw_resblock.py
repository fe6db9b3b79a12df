"""The student's resnet block: diffusers' ResnetBlock2D with depthwise-separable convs."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .depthwise import DepthwiseSeparableConv


class DWResnetBlock(nn.Module):
    """GN -> SiLU -> DWConv -> + time -> GN -> SiLU -> DWConv, plus a (1×1 when channels change) shortcut.

    x: (B, in_channels, H, W), emb: (B, time_dim) -> (B, out_channels, H, W).
    """

    def __init__(self, in_channels: int, out_channels: int, time_dim: int, groups: int = 32, eps: float = 1e-5) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_channels, eps=eps)
        self.conv1 = DepthwiseSeparableConv(in_channels, out_channels)
        self.time_emb_proj = nn.Linear(time_dim, out_channels)
        self.norm2 = nn.GroupNorm(groups, out_channels, eps=eps)
        self.conv2 = DepthwiseSeparableConv(out_channels, out_channels)
        self.conv_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time_emb_proj(F.silu(emb))[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        shortcut = x if self.conv_shortcut is None else self.conv_shortcut(x)
        return shortcut + h
