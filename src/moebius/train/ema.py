"""Exponential moving average of a model's state: parameters and, by default, BatchNorm statistics.

By default the shadow is a copy of the full ``state_dict``: floating tensors (weights, running means and
variances) are averaged, integer ones (``num_batches_tracked``) copied. The released code averages
parameters only, and loading its EMA file resets every BatchNorm's running statistics to 0/1;
``batchnorm_statistics=False`` averages parameters only too, and :meth:`EMA.full_state` pairs them with
the live model's statistics, so either way the EMA is a complete model that ``save_folder`` can write and
``load_official`` can read.
"""

from __future__ import annotations

import torch
import torch.nn as nn


class EMA:
    """shadow ← decay·shadow + (1 − decay)·current, with the released code's warm-up of the decay.

    The n-th update (n = 1, 2, ...) uses decay_n = min(decay, (1 + n) / (10 + n)) when ``warmup`` is on:
    2/11 for the first, as the released code counts the update before computing its decay.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, warmup: bool = True,
                 batchnorm_statistics: bool = True) -> None:
        self.decay = decay
        self.warmup = warmup
        self.num_updates = 0
        tracked = model.state_dict() if batchnorm_statistics else dict(model.named_parameters())
        self.shadow = {k: v.detach().clone() for k, v in tracked.items()}

    def current_decay(self) -> float:
        """The decay the next update uses."""
        n = self.num_updates + 1
        return min(self.decay, (1 + n) / (10 + n)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        decay = self.current_decay()
        shadows, currents = [], []
        state = model.state_dict()
        for key, shadow in self.shadow.items():
            value = state[key]
            if shadow.is_floating_point():
                shadows.append(shadow)
                currents.append(value.detach().to(shadow.dtype))
            else:
                shadow.copy_(value)
        # One multi-tensor call instead of one small kernel per tensor: on a GPU, a small model's step
        # is bound by kernel launches.
        torch._foreach_lerp_(shadows, currents, 1.0 - decay)
        self.num_updates += 1

    def full_state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The averaged tensors, completed by ``model``'s own for whatever is not averaged (its BatchNorm
        statistics when only parameters are): a state dict of the whole architecture."""
        return {k: self.shadow.get(k, v.detach()) for k, v in model.state_dict().items()}

    def copy_to(self, model: nn.Module) -> None:
        """Load the averaged tensors into ``model`` (same architecture); anything not averaged is kept."""
        model.load_state_dict(self.full_state(model), strict=True)

    def state_dict(self) -> dict[str, object]:
        return {"shadow": self.shadow, "num_updates": self.num_updates}

    def load_state_dict(self, state: dict[str, object]) -> None:
        """Restore from a shadow of this model: the averaged keys must all be there; keys this EMA does
        not average (statistics written beside parameter-only averages) are ignored."""
        shadow = state["shadow"]
        assert isinstance(shadow, dict)
        missing = set(self.shadow) - set(shadow)
        if missing:
            raise ValueError(f"EMA state does not match the model: {sorted(missing)[:5]}")
        for key in self.shadow:
            self.shadow[key].copy_(shadow[key])
        self.num_updates = int(state["num_updates"])  # type: ignore[arg-type]
