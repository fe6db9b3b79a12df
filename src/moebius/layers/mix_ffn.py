"""Mix-FFN (SANA's GLUMBConv): 1×1 expand, depthwise 3×3, gated SiLU, 1×1 project."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class _Conv(nn.Module):
    """A conv kept one level down so the state-dict keys read ``<name>.conv.weight`` like the official ones."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class MixFFN(nn.Module):
    """Convolutional gated feed-forward on a feature map: (B, C, H, W) -> (B, C, H, W).

    hidden = int(ratio·C); the expansion produces 2·hidden channels split into value and gate halves.
    """

    def __init__(self, channels: int, ratio: float = 2.5) -> None:
        super().__init__()
        hidden = int(ratio * channels)
        self.inverted_conv = _Conv(nn.Conv2d(channels, 2 * hidden, 1))
        self.depth_conv = _Conv(nn.Conv2d(2 * hidden, 2 * hidden, 3, padding=1, groups=2 * hidden))
        self.point_conv = _Conv(nn.Conv2d(hidden, channels, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.silu(self.inverted_conv(x))
        value, gate = self.depth_conv(h).chunk(2, dim=1)  # 2 × (B, hidden, H, W)
        return self.point_conv(value * F.silu(gate))
