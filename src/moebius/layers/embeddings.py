"""Timestep embeddings shared by the student and the teacher (diffusers-compatible key names), and the
standard-normal initial values of embedding-like parameters."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def standard_normal(*shape: int) -> torch.Tensor:
    """N(0, 1) initial values, as ``torch.randn(*shape)`` draws them; on the meta device (where checkpoints
    are built before their weights are assigned) an uninitialised tensor instead: drawing there imports
    sympy and torch._dynamo first, one to three seconds of every command that loads a model."""
    if torch.empty(0).is_meta:
        return torch.empty(*shape)
    return torch.randn(*shape)


def timestep_sinusoid(timesteps: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding with cosines first (diffusers' flip_sin_to_cos=True, freq_shift=0).

    timesteps: (B,) -> (B, dim) float32.
    """
    half = dim // 2
    exponent = -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half
    args = timesteps[:, None].float() * torch.exp(exponent)[None, :]  # (B, half)
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimestepEmbedding(nn.Module):
    """Linear -> SiLU -> Linear on the sinusoid: (B, in_dim) -> (B, dim)."""

    def __init__(self, in_dim: int, dim: int) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.silu(self.linear_1(x)))


def broadcast_timesteps(timesteps: torch.Tensor | int | float, batch: int, device: torch.device) -> torch.Tensor:
    """A scalar, 0-d, (1,) or (B,) timestep -> (B,) tensor on ``device``."""
    t = torch.as_tensor(timesteps, device=device)
    if t.ndim == 0:
        t = t[None]
    if t.ndim != 1 or t.shape[0] not in (1, batch):
        raise ValueError(f"timesteps must be a scalar or a vector of length 1 or {batch}, got shape {tuple(t.shape)}")
    return t.expand(batch)
