"""The latent-category-conditioned denoiser: the category table plus a U-Net (student or teacher).

Module names (``embedding_layer``, ``diff_model``) are the official checkpoint's top-level keys, so an
official ``diffusion_pytorch_model.bin`` loads into this wrapper without any key mapping.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn as nn

from ..layers.embeddings import standard_normal

# PixelHacker's latent categories: ids 0-9 "background" (the removal task, CFG's conditional branch),
# ids 10-19 "foreground" (CFG's negative branch).
NUM_CATEGORY_EMBEDDINGS = 20
CATEGORY_TOKENS = 10
BACKGROUND_IDS = tuple(range(0, 10))
FOREGROUND_IDS = tuple(range(10, 20))


class DenoiserOutput(NamedTuple):
    """ε prediction (B, 4, H, W) and every down/mid/up block's output, in network order."""

    sample: torch.Tensor
    block_outputs: list[torch.Tensor]


class LatentCategoryDenoiser(nn.Module):
    """ε-prediction network conditioned on 10 latent-category tokens (PixelHacker's LCG).

    forward: x (B, 9, H, W) = [noisy latent 4 | mask 1 | masked-image latent 4], timesteps scalar or (B,),
    input_ids (B, 10) long -> ε (B, 4, H, W), or a :class:`DenoiserOutput` with ``return_block_outputs``.
    """

    def __init__(self, diff_model: nn.Module, embedding_dim: int, num_embeddings: int = NUM_CATEGORY_EMBEDDINGS) -> None:
        super().__init__()
        # nn.Embedding's own N(0, 1) init (the same numbers), skipped on the meta device.
        self.embedding_layer = nn.Embedding(num_embeddings, embedding_dim,
                                            _weight=standard_normal(num_embeddings, embedding_dim))
        self.diff_model = diff_model

    @property
    def config(self):
        return self.diff_model.config

    def forward(
        self,
        x: torch.Tensor,
        timesteps: torch.Tensor | int | float,
        input_ids: torch.Tensor,
        return_block_outputs: bool = False,
    ) -> torch.Tensor | DenoiserOutput:
        context = self.embedding_layer(input_ids)  # (B, 10, 3072)
        sample, blocks = self.diff_model(x, timesteps, context)
        if return_block_outputs:
            return DenoiserOutput(sample, blocks)
        return sample
