"""Resolution changes between U-Net levels (diffusers key layout: ``<sampler>.conv``)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class Downsample(nn.Module):
    """3×3 conv with stride 2: (B, C, H, W) -> (B, C, ceil(H/2), ceil(W/2))."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest ×2 then a 3×3 conv: (B, C, H, W) -> (B, C, 2H, 2W), or to ``size`` when given."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        if size is None:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        else:
            x = F.interpolate(x, size=size, mode="nearest")
        return self.conv(x)
