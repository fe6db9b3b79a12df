"""Muon for the student's matrices, AdamW for everything else, and the learning-rate schedule.

The split follows the released code: Muon takes every
parameter with two or more dimensions whose name contains none of ``adamw_names`` (the embedding table,
conv_in, conv_out); AdamW takes the rest (biases, norm affines, those three).

Muon (Jordan et al.; Moonlight's variant): Nesterov momentum, the update orthogonalised by five quintic
Newton-Schulz steps, decoupled weight decay, and the step scaled by 0.2·√max(A, B) so its RMS matches
AdamW's. A conv weight (C_out, C_in, k, k) is treated as the matrix (C_out, C_in·k·k), and by default
(``optim.muon_scale_shape: matrix``) A, B are that matrix's sides, which is what makes the RMS match. The
released code takes A, B from the parameter's first two dimensions instead (``leading``): the same for
linear and 1×1 conv weights, 3× smaller steps for 3×3 convs, and different again for the 15×15 position
convs (dk, 1, 1, 15, 15) and the position tables (n², 10, dk, 1). When the installed torch has
``torch.optim.Muon`` it does the work for ``matrix`` (on 2-D views that share storage with the
parameters); otherwise, and always for ``leading``, :class:`Muon` here, which computes the same update.

The schedule is a pure function of the step (linear warm-up, then ×gamma at each milestone), so resuming
needs nothing but the step.
"""

from __future__ import annotations

from typing import Any, Iterable

import torch
import torch.nn as nn

from .config import OptimConfig

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def newton_schulz(g: torch.Tensor, steps: int = 5, eps: float = 1e-7) -> torch.Tensor:
    """Approximately orthogonalise a matrix (its singular values pushed towards 1). (A, B) -> (A, B).

    Quintic iteration X <- a·X + (b·XXᵀ + c·(XXᵀ)²)·X in bfloat16, on the wide orientation, after
    scaling X to unit Frobenius norm.
    """
    a, b, c = NS_COEFFICIENTS
    x = g.bfloat16()
    tall = x.shape[0] > x.shape[1]
    if tall:
        x = x.T
    x = x / x.norm().clamp(min=eps)
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if tall else x


class Muon(torch.optim.Optimizer):
    """Muon for 2-D parameters, with Moonlight's RMS-matching step size (0.2·√max(A, B)).

    A param group may carry ``scale_dims`` (A, B) to take the step size from those sides instead of the
    parameter's own.
    """

    def __init__(self, params: Iterable[torch.Tensor], lr: float = 1e-3, weight_decay: float = 0.1,
                 momentum: float = 0.95, nesterov: bool = True, ns_steps: int = 5, eps: float = 1e-7) -> None:
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov,
                                      ns_steps=ns_steps, eps=eps))
        for group in self.param_groups:
            for p in group["params"]:
                if p.ndim != 2:
                    raise ValueError(f"Muon takes 2-D parameters, got shape {tuple(p.shape)}")

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, wd, mu = group["lr"], group["weight_decay"], group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p.grad)
                buf = state["momentum_buffer"]
                buf.mul_(mu).add_(p.grad)
                update = p.grad.add(buf, alpha=mu) if group["nesterov"] else buf
                ortho = newton_schulz(update, group["ns_steps"], group["eps"])
                p.mul_(1 - lr * wd)
                p.add_(ortho.to(p.dtype), alpha=-lr * 0.2 * max(group.get("scale_dims") or p.shape) ** 0.5)
        return loss


class MoonlightAdamW(torch.optim.Optimizer):
    """AdamW as the released code's Muon runs it on the non-matrix parameters (``optim.adamw_form: moonlight``).

    It differs from ``torch.optim.AdamW`` only in where eps goes: added to the raw √v, with the bias correction
    applied to the quotient, p ← p·(1 − lr·wd) − lr·√(1 − β₂ᵏ)/(1 − β₁ᵏ) · m / (eps + √v); torch adds eps to
    the corrected √v̂. That matters only where √v is near eps, i.e. for (near-)zero gradients.
    """

    def __init__(self, params: Iterable[torch.Tensor], lr: float, betas: tuple[float, float], eps: float,
                 weight_decay: float) -> None:
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                k = state["step"]
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.lerp_(p.grad, 1 - beta1)
                v.lerp_(p.grad.square(), 1 - beta2)
                scale = (1 - beta1**k) / (1 - beta2**k) ** 0.5
                p.mul_(1 - group["lr"] * group["weight_decay"])
                p.add_(m / (group["eps"] + v.sqrt()), alpha=-group["lr"] / scale)
        return loss


def resolve_muon(backend: str, scale_shape: str = "matrix") -> type[torch.optim.Optimizer]:
    """``auto``: torch.optim.Muon when this torch has it, else ours; ``torch`` / ``moebius`` force one.

    The released code's step size (``scale_shape`` "leading") needs ours: torch's has no per-parameter sides.
    """
    from ..errors import ConfigError

    has_torch = hasattr(torch.optim, "Muon")
    if backend == "torch" and not has_torch:
        raise ConfigError(f"optim.muon_backend is 'torch' but torch {torch.__version__} has no torch.optim.Muon")
    if backend == "torch" and scale_shape == "leading":
        raise ConfigError("optim.muon_scale_shape 'leading' needs optim.muon_backend 'moebius' or 'auto'")
    if backend == "moebius" or not has_torch or scale_shape == "leading":
        return Muon
    return torch.optim.Muon


def _muon_kwargs(cls: type, config: OptimConfig) -> dict[str, Any]:
    kwargs = dict(lr=config.lr, weight_decay=config.weight_decay, momentum=config.momentum,
                  nesterov=config.nesterov, ns_steps=config.ns_steps)
    if cls is not Muon:
        kwargs["adjust_lr_fn"] = "match_rms_adamw"
    return kwargs


class MuonAdamW:
    """Muon on the matrices, AdamW on the rest, stepped together.

    ``param_groups`` lists the inner optimizers' groups (Muon's first); each carries ``base_lr`` for the
    schedule. ``state_dict``/``load_state_dict`` round-trip both inner optimizers exactly.
    """

    def __init__(self, muon_params: list[nn.Parameter], adamw_params: list[nn.Parameter], config: OptimConfig) -> None:
        self.muon_params = list(muon_params)
        # 2-D views sharing storage with the parameters; re-pointed before each step in case a parameter's
        # storage was replaced (e.g. moved to another device).
        self._views = [p.detach().view(p.shape[0], -1) for p in self.muon_params]
        cls = resolve_muon(config.muon_backend, config.muon_scale_shape)
        self.muon_backend = "torch" if cls is not Muon else "moebius"
        groups: list[Any] = self._views
        if config.muon_scale_shape == "leading":
            groups = [{"params": [v], "scale_dims": tuple(p.shape[:2])} for p, v in zip(self.muon_params, self._views)]
        self.muon = cls(groups, **_muon_kwargs(cls, config)) if self._views else None
        self.adamw: torch.optim.Optimizer | None = None
        if adamw_params and config.adamw_form == "moonlight":
            self.adamw = MoonlightAdamW(adamw_params, config.lr, tuple(config.betas), config.eps, config.adamw_weight_decay)
        elif adamw_params:
            self.adamw = torch.optim.AdamW(adamw_params, lr=config.lr, betas=tuple(config.betas), eps=config.eps,
                                           weight_decay=config.adamw_weight_decay, fused=_fused(adamw_params))
        for group in self.param_groups:
            group["base_lr"] = config.lr

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return [g for opt in (self.muon, self.adamw) if opt is not None for g in opt.param_groups]

    @torch.no_grad()
    def step(self) -> None:
        for p, v in zip(self.muon_params, self._views):
            if v.data_ptr() != p.data_ptr():
                v.data = p.detach().view(p.shape[0], -1)
            v.grad = None if p.grad is None else p.grad.view(v.shape)
        if self.muon is not None:
            self.muon.step()
        if self.adamw is not None:
            self.adamw.step()
        for v in self._views:
            v.grad = None

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in (self.muon, self.adamw):
            if opt is not None:
                opt.zero_grad(set_to_none=set_to_none)
        for p in self.muon_params:
            p.grad = None

    def state_dict(self) -> dict[str, Any]:
        return {"muon": self.muon.state_dict() if self.muon else None,
                "adamw": self.adamw.state_dict() if self.adamw else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name in ("muon", "adamw"):
            opt = getattr(self, name)
            if (opt is None) != (state.get(name) is None):
                raise ValueError(f"optimizer state does not match: {name} group present in only one of them")
            if opt is not None:
                opt.load_state_dict(state[name])


def split_parameters(model: nn.Module, adamw_names: list[str]) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(Muon parameters, AdamW parameters) of ``model``'s trainable parameters, in registration order."""
    muon, adamw = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim >= 2 and not any(key in name for key in adamw_names):
            muon.append(p)
        else:
            adamw.append(p)
    return muon, adamw


def _fused(params: list[torch.Tensor]) -> bool | None:
    """Use AdamW's fused kernel on CPU and CUDA. On CPU, torch's default is a loop of ~5 ops per parameter,
    which costs a small model a large share of its step (docs/experiments/speed-choices.md)."""
    return True if params and all(p.device.type in ("cpu", "cuda") for p in params) else None


def build_optimizer(model: nn.Module, config: OptimConfig) -> MuonAdamW | torch.optim.AdamW:
    """The configured optimizer over ``model``'s trainable parameters (call after moving the model)."""
    muon, adamw = split_parameters(model, config.adamw_names)
    if config.optimizer == "muon_adamw":
        return MuonAdamW(muon, adamw, config)
    groups = [{"params": muon, "weight_decay": config.weight_decay},
              {"params": adamw, "weight_decay": config.adamw_weight_decay}]
    opt = torch.optim.AdamW([g for g in groups if g["params"]], lr=config.lr, betas=tuple(config.betas), eps=config.eps,
                            fused=_fused(muon + adamw))
    for group in opt.param_groups:
        group["base_lr"] = config.lr
    return opt


def lr_factor(step: int, config: OptimConfig) -> float:
    """Multiplier of the base lr at optimizer step ``step`` (0-based): warm-up, then step decay."""
    factor = min(1.0, (step + 1) / config.warmup_steps) if config.warmup_steps > 0 else 1.0
    for milestone in config.milestones:
        if step >= milestone:
            factor *= config.gamma
    return factor


def set_lr(optimizer: Any, step: int, config: OptimConfig) -> float:
    """Apply the schedule for ``step`` to every group; returns the factor."""
    factor = lr_factor(step, config)
    for group in optimizer.param_groups:
        group["lr"] = group["base_lr"] * factor
    return factor
