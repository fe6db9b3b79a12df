"""Depthwise-separable convolution (MobileNet style; the layout of timm's DepthwiseSeparableConv)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class DepthwiseSeparableConv(nn.Module):
    """k×k depthwise conv -> BN -> ReLU -> 1×1 pointwise conv -> BN, plus the input when shapes allow.

    x: (B, in_channels, H, W) -> (B, out_channels, H, W). Both convs are bias-free because a BatchNorm
    follows each; ``fold_batchnorm`` merges the BNs into the convs for inference.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.conv_dw = nn.Conv2d(in_channels, in_channels, kernel_size, padding=kernel_size // 2, groups=in_channels, bias=False)
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv_pw = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.has_skip = in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(self.conv_dw(x)))
        h = self.bn2(self.conv_pw(h))
        return x + h if self.has_skip else h
