"""The distillation losses and their gradient-norm weighting (docs/training.md, "What one step does").

Four losses, each a mean over every element, in float32:

- ``task``: ‖ε̂_S − ε‖², against the true noise (offset included); with ``noise.prediction_type:
  v_prediction``, ‖v̂_S − v‖² against v = √ᾱ·ε − √(1−ᾱ)·x0 instead.
- ``output_kd``: ‖ε̂_S − ε̂_T‖² (or v̂), fine-grained KD against the teacher's output.
- ``feature_kd``: Σ over pairs ‖f_S − f_T‖², coarse KD between block outputs (student 2 ↔ teacher 5 by
  default: both 1280×16×16 at 512²).
- ``perceptual``: E-LatentLPIPS(x̂0_S, x0), between the student's predicted clean latent and the real one.

:class:`AdaptiveWeighting` turns them into one scalar. With static multipliers λ (config ``loss.*_weight``)
and probe gradients g^O (at θ_F, the output layer) and g^F (at θ_C, the layer producing the student's KD
feature):

``official`` (the released code, plain norm ratios)::

    w_out  = clamp(‖g^O_task‖ / (‖g^O_output_kd‖ + eps_o), 0, max_o)
    w_perc = clamp(‖g^O_task‖ / (‖g^O_perceptual‖ + eps_o), 0, max_o)
    w_feat = clamp(‖g^F_feature_kd‖ / (‖g^F_task‖ + eps_f), 0, max_f)
    L = λ_feat·L_feat + w_feat·(λ_task·L_task + λ_out·w_out·L_out + λ_perc·w_perc·L_perc)

``paper`` (Eq. 4-5, squared ratios, W_C against the whole output group)::

    w_out  = clamp(‖g^O_task‖² / (‖g^O_output_kd‖² + eps_o), 0, max_o)        (W_F_KD)
    w_perc = clamp(‖g^O_task‖² / (‖g^O_perceptual‖² + eps_o), 0, max_o)       (W_perceptual)
    g^F_group = λ_task·g^F_task + λ_out·w_out·g^F_output_kd + λ_perc·w_perc·g^F_perceptual
    w_feat = clamp(‖g^F_feature_kd‖² / (‖g^F_group‖² + eps_f), 0, max_f)      (W_C_task)
    L = λ_feat·L_feat + w_feat·(λ_task·L_task + λ_out·w_out·L_out + λ_perc·w_perc·L_perc)

With every λ = 1 the paper form is exactly Eq. 4-5. g^F_group is the probe gradient of the group by
linearity, so no extra backward pass is needed. All weights are detached. A disabled loss (λ = 0, no
teacher, no E-LatentLPIPS weights) simply drops out, and its weight is not computed.

Unlike the released code, the probe gradients are averaged over processes before the norms are taken
(``sync``), so every rank applies the same weights, and they equal the weights of one process holding the
whole global batch.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from ..schedulers.ddim import PredictionType, split_prediction
from .config import AdaptiveConfig, LossConfig

LOSS_NAMES = ("task", "output_kd", "feature_kd", "perceptual")
OUTPUT_SIDE = ("output_kd", "perceptual")


def mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean squared error in float32."""
    return F.mse_loss(a.float(), b.float())


def feature_kd_loss(student_blocks: list[torch.Tensor], teacher_blocks: list[torch.Tensor],
                    pairs: list[list[int]]) -> torch.Tensor:
    """Σ_(i, j) MSE(student_blocks[i], teacher_blocks[j]); shapes of each pair must agree."""
    total = None
    for i, j in pairs:
        s, t = student_blocks[i], teacher_blocks[j]
        if s.shape != t.shape:
            raise ValueError(f"feature pair ({i}, {j}): student {tuple(s.shape)} vs teacher {tuple(t.shape)}")
        term = mse(s, t)
        total = term if total is None else total + term
    assert total is not None
    return total


def predict_x0(x_t: torch.Tensor, output: torch.Tensor, alpha_bar: torch.Tensor,
               prediction_type: PredictionType) -> torch.Tensor:
    """The clean latent implied by a network ``output`` (ε or v) at x_t; alpha_bar (B,) float32.

    (B, C, h, w) -> (B, C, h, w) float32; ε: x̂0 = (x_t − √(1 − ᾱ_t)·ε) / √ᾱ_t.
    """
    a = alpha_bar.float().reshape(-1, 1, 1, 1)
    return split_prediction(output.float(), x_t.float(), a, prediction_type)[0]


def static_weights(config: LossConfig) -> dict[str, float]:
    return {"task": config.task_weight, "output_kd": config.output_kd_weight,
            "feature_kd": config.feature_kd_weight, "perceptual": config.perceptual_weight}


class AdaptiveWeighting:
    """Combine a dict of losses into the total, with gradient-norm weights measured at two probes.

    ``output_probe`` (θ_F) and ``feature_probe`` (θ_C) are parameters of the student; ``reduce`` averages a
    tensor over processes in place of a plain identity (pass None on one process).
    """

    def __init__(self, config: LossConfig, output_probe: torch.nn.Parameter,
                 feature_probe: torch.nn.Parameter | None,
                 reduce: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        self.config = config
        self.adaptive: AdaptiveConfig = config.adaptive
        self.static = static_weights(config)
        self.output_probe = output_probe
        self.feature_probe = feature_probe
        self.reduce = reduce if config.adaptive.sync else None

    def probe_gradients(self, losses: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
        """{loss: {"output": g^O, "feature": g^F}} (float32, detached, averaged over processes)."""
        paper = self.adaptive.mode == "paper"
        wanted: dict[str, list[str]] = {}
        if "feature_kd" in losses:
            wanted["feature_kd"] = ["feature"]
            wanted["task"] = ["output", "feature"] if any(k in losses for k in OUTPUT_SIDE) else ["feature"]
            for name in OUTPUT_SIDE:
                if name in losses:
                    wanted[name] = ["output", "feature"] if paper else ["output"]
        elif any(k in losses for k in OUTPUT_SIDE):
            wanted["task"] = ["output"]
            for name in OUTPUT_SIDE:
                if name in losses:
                    wanted[name] = ["output"]
        probes = {"output": self.output_probe, "feature": self.feature_probe}
        grads: dict[str, dict[str, torch.Tensor]] = {}
        for name, where in wanted.items():
            if name not in losses:
                continue
            params = [probes[w] for w in where]
            got = torch.autograd.grad(losses[name], params, retain_graph=True, allow_unused=True)
            grads[name] = {w: (torch.zeros_like(p, dtype=torch.float32) if g is None else g.detach().float())
                           for w, p, g in zip(where, params, got)}
        if self.reduce is not None and grads:
            order = [(n, w) for n in grads for w in grads[n]]
            flat = self.reduce(torch.cat([grads[n][w].reshape(-1) for n, w in order]))
            offset = 0
            for n, w in order:
                size = grads[n][w].numel()
                grads[n][w] = flat[offset:offset + size].view_as(grads[n][w])
                offset += size
        return grads

    def weights(self, grads: dict[str, dict[str, torch.Tensor]], present: list[str]) -> dict[str, torch.Tensor]:
        """The adaptive weights {"output_kd", "perceptual", "feature"} (float32 scalars, 1 when not applicable)."""
        a = self.adaptive
        one = torch.ones((), dtype=torch.float32, device=self.output_probe.device)
        out = {"output_kd": one, "perceptual": one, "feature": one}
        if a.mode == "off":
            return out
        power = 2 if a.mode == "paper" else 1

        def size(g: torch.Tensor) -> torch.Tensor:
            n = torch.linalg.vector_norm(g)
            return n * n if power == 2 else n

        for name in OUTPUT_SIDE:
            if name in present and "task" in grads:
                ratio = size(grads["task"]["output"]) / (size(grads[name]["output"]) + a.eps_output)
                out[name] = ratio.clamp(0, a.max_output)
        if "feature_kd" in present and "task" in grads:
            if a.mode == "paper":
                group = self.static["task"] * grads["task"]["feature"]
                for name in OUTPUT_SIDE:
                    if name in present:
                        group = group + self.static[name] * out[name] * grads[name]["feature"]
            else:
                group = grads["task"]["feature"]
            out["feature"] = (size(grads["feature_kd"]["feature"]) / (size(group) + a.eps_feature)).clamp(0, a.max_feature)
        return {k: v.detach() for k, v in out.items()}

    def __call__(self, losses: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """-> (total loss, log scalars: adaptive weights ``w_*`` and probe gradient norms ``gnorm_*``)."""
        present = [n for n in LOSS_NAMES if n in losses]
        if "task" not in losses and len(present) > 1 and self.adaptive.mode != "off":
            raise ValueError("adaptive weighting needs the task loss (loss.task_weight > 0)")
        grads = self.probe_gradients(losses) if self.adaptive.mode != "off" and len(present) > 1 else {}
        w = self.weights(grads, present)
        s = self.static
        group = None
        for name in ("task", "output_kd", "perceptual"):
            if name in losses:
                term = s[name] * losses[name] * (w[name] if name in OUTPUT_SIDE else 1.0)
                group = term if group is None else group + term
        total = group * w["feature"] if group is not None else None
        if "feature_kd" in losses:
            feat = s["feature_kd"] * losses["feature_kd"]
            total = feat if total is None else total + feat
        if total is None:
            raise ValueError("no loss is enabled")
        logs = {"w_output_kd": w["output_kd"], "w_perceptual": w["perceptual"], "w_feature": w["feature"]}
        for name, by_probe in grads.items():
            for where, g in by_probe.items():
                logs[f"gnorm_{where}_{name}"] = torch.linalg.vector_norm(g)
        return total, logs
