"""Training-time module surgery: BatchNorm synchronised over processes, and gradient checkpointing.

Both act in place on an existing model and keep its state_dict keys, so checkpoints stay loadable by
``moebius.load_official``.
"""

from __future__ import annotations

import contextlib
import functools
import torch
import torch.distributed as dist
import torch.nn as nn
from torch.utils.checkpoint import checkpoint


def _world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class SyncedBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics cover the whole global batch, on any device and backend.

    torch's SyncBatchNorm needs a GPU; this one works with gloo on CPU too. Two all-reduces (sum and count,
    then the squared deviations), both differentiable, so gradients flow across processes exactly as for
    one process holding the global batch. One process, or eval mode: plain BatchNorm.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or _world() == 1:
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        xf = x.float()
        c = x.shape[1]
        count = torch.full((1,), float(x.numel() // c), device=x.device)
        first = all_reduce(torch.cat([xf.sum(dim=(0, 2, 3)), count]))  # (C + 1,)
        total = first[c]
        mean = first[:c] / total
        centred = xf - mean[None, :, None, None]
        var = all_reduce(centred.pow(2).sum(dim=(0, 2, 3))) / total  # biased, as BatchNorm normalises
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), m)
                unbiased = var.detach() * (total / (total - 1).clamp(min=1))
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), m)
        y = centred * torch.rsqrt(var + self.eps)[None, :, None, None]
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y.to(x.dtype)


def sync_batchnorm(model: nn.Module) -> int:
    """Turn every BatchNorm2d of ``model`` into :class:`SyncedBatchNorm2d` in place; returns how many."""
    n = 0
    for module in model.modules():
        if type(module) is nn.BatchNorm2d:
            module.__class__ = SyncedBatchNorm2d  # same state, only forward differs
            n += 1
    return n


class _FrozenStatistics:
    """While recomputing a checkpointed block, leave BatchNorm running statistics as they are.

    Momentum 0 keeps the running mean and variance exactly (the recomputation must save the same tensors
    as the forward, so the statistics path itself stays on); the step counter is put back afterwards.
    Re-enterable: a block is recomputed once per backward pass through it.
    """

    def __init__(self, module: nn.Module) -> None:
        self.norms = [m for m in module.modules()
                      if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
        self.saved: list[tuple[float | None, torch.Tensor]] = []

    def __enter__(self) -> None:
        self.saved = [(m.momentum, m.num_batches_tracked.clone()) for m in self.norms]
        for m in self.norms:
            m.momentum = 0.0

    def __exit__(self, *exc: object) -> None:
        for m, (momentum, count) in zip(self.norms, self.saved):
            m.momentum = momentum
            m.num_batches_tracked.copy_(count)


def _checkpointed_forward(module: nn.Module, inner, *args, **kwargs):
    if not (module.training and torch.is_grad_enabled()):
        return inner(*args, **kwargs)
    return checkpoint(inner, *args, use_reentrant=False,
                      context_fn=lambda: (contextlib.nullcontext(), _FrozenStatistics(module)), **kwargs)


def enable_gradient_checkpointing(model: nn.Module, block_types: tuple[type, ...]) -> int:
    """Recompute each block of the given types in the backward pass instead of storing its activations.

    The recomputation does not touch BatchNorm running statistics, so they are updated once per forward
    (the released code updates them again on every recomputation). Returns the block count.
    """
    n = 0
    for module in model.modules():
        if isinstance(module, block_types) and "forward" not in module.__dict__:
            module.forward = functools.partial(_checkpointed_forward, module, module.forward)
            n += 1
    return n


def student_checkpoint_blocks() -> tuple[type, ...]:
    """The student's resnet and LλMI blocks (and the teacher's resnets and transformers, if ever trained)."""
    from ..layers.dw_resblock import DWResnetBlock
    from ..layers.llmi import LLMITransformer
    from ..layers.unet_parts import ResnetBlock2D, Transformer2D

    return (DWResnetBlock, LLMITransformer, ResnetBlock2D, Transformer2D)

