"""The fast inference path of the student and the autoencoder: the same function, computed with fewer FLOPs
and copies.

:func:`optimize_for_inference` returns a copy of an eval-mode student or AutoencoderKL in which

* every BatchNorm is folded into the bias-free conv or linear before it (exact in eval mode);
* Local-λ's position lambda contracts the queries with the 15×15 position kernels first, then with
  the value patches around each pixel, instead of running the 1-input-channel Conv3d: per pixel the cost
  falls from r²·dk·dv to r²·heads·(dk + dv) multiply-adds (2.5× at 320 channels, 10× at 1280);
* Interactive-λ merges its content and position lambdas into one (pixel, token) weight map, and caches
  the resampled position table per grid size;
* the LλMI blocks work on channels-last tokens, so no layout copies happen between their parts;
* nearest-×2-then-3×3-conv upsampling runs as four 2×2 convs on the low-resolution map, one per output
  phase (16 instead of 36 multiply-adds per input pixel and channel pair);
* the student's two CFG rows take one input row: what runs before the category tokens first enter
  (input conv, first resnet, first Local-λ) runs once (:class:`FastDenoiser`);
* the autoencoder's resnets apply SiLU and the residual add in place, and its mid-block attention reads
  its tokens straight from the channels-last map through one fused q/k/v projection.

The reference modules (``moebius.layers``, ``moebius.models.vae``) stay untouched: they are what training uses and what the
parity tests check; tests assert that both paths agree.
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers.depthwise import DepthwiseSeparableConv
from ..layers.lambda_layers import InteractiveLambda, LocalLambda, resample_position_table
from ..layers.llmi import LLMITransformer
from ..layers.mix_ffn import MixFFN
from ..layers.resample import Upsample
from .denoiser import DenoiserOutput, LatentCategoryDenoiser
from .student import MoebiusConfig, MoebiusUNet
from .vae import MidBlockAttention, ResnetBlock

# Bytes of value patches gathered at once by the Local-λ position term. About one core's L2 cache: the
# bmm then reads the patches while they are still cached (docs/experiments/speed-choices.md).
_PATCH_CHUNK_BYTES = 2 * 2**20


def _bn_scale_shift(bn: nn.BatchNorm1d | nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode BN as y = scale·x + shift."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return scale, bn.bias - bn.running_mean * scale


def _fold(weight: torch.Tensor, bn: nn.BatchNorm1d | nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold a BN that follows a bias-free conv/linear of ``weight`` (out channels first)."""
    scale, shift = _bn_scale_shift(bn)
    return weight * scale.reshape(-1, *([1] * (weight.ndim - 1))), shift


class FoldedDWConv(nn.Module):
    """:class:`DepthwiseSeparableConv` with both BNs folded: (B, Cin, H, W) -> (B, Cout, H, W)."""

    def __init__(self, ref: DepthwiseSeparableConv) -> None:
        super().__init__()
        self.conv_dw = nn.Conv2d(ref.conv_dw.in_channels, ref.conv_dw.out_channels, ref.conv_dw.kernel_size,
                                 padding=ref.conv_dw.padding, groups=ref.conv_dw.groups)
        self.conv_pw = nn.Conv2d(ref.conv_pw.in_channels, ref.conv_pw.out_channels, 1)
        with torch.no_grad():
            for conv, src, bn in ((self.conv_dw, ref.conv_dw, ref.bn1), (self.conv_pw, ref.conv_pw, ref.bn2)):
                weight, bias = _fold(src.weight, bn)
                conv.weight.copy_(weight)
                conv.bias.copy_(bias)
        self.has_skip = ref.has_skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_pw(F.relu(self.conv_dw(x)))
        return x + h if self.has_skip else h


class FastLocalLambda(nn.Module):
    """:class:`LocalLambda` on tokens: t (B, N, C) with N = H·W raster order -> (B, N, C)."""

    def __init__(self, ref: LocalLambda) -> None:
        super().__init__()
        self.heads, self.dim_k, self.dim_v = ref.heads, ref.dim_k, ref.dim_v
        channels = ref.to_q.in_channels
        wq, bq = _fold(ref.to_q.weight.flatten(1), ref.norm_q)
        wv, bv = _fold(ref.to_v.weight.flatten(1), ref.norm_v)
        wk = ref.to_k.weight.flatten(1)
        self.qkv = nn.Linear(channels, wq.shape[0] + self.dim_k + self.dim_v)
        kernel = ref.pos_conv.weight  # (k, 1, 1, r, r)
        self.kernel_size = kernel.shape[-1]
        with torch.no_grad():
            self.qkv.weight.copy_(torch.cat([wq, wk, wv]))
            self.qkv.bias.copy_(torch.cat([bq, torch.zeros_like(wk[:, 0]), bv]))
        self.position_kernels = nn.Parameter(kernel.detach().reshape(self.dim_k, -1).clone())  # (k, r²)
        self.position_bias = nn.Parameter(ref.pos_conv.bias.detach().clone())  # (k,)

    def forward(self, t: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        b, n, _ = t.shape
        h, k, v = self.heads, self.dim_k, self.dim_v
        qkv = self.qkv(t)  # (B, N, h·k + k + v)
        q = qkv[..., : h * k].reshape(b, n, h, k)
        keys = qkv[..., h * k : h * k + k].softmax(dim=1)  # (B, N, k), softmax over positions
        values = qkv[..., h * k + k :]  # (B, N, v)

        # The conv bias adds bias[k] to every position lambda entry: fold it into the content lambda.
        content = keys.transpose(1, 2) @ values + self.position_bias[:, None]  # (B, k, v)
        y = q.reshape(b, n * h, k) @ content  # (B, N·h, v)

        # One 2-D matmul: ``q @ kernels`` on the 4-D view would broadcast the kernels to every pixel and
        # copy them N times (q is a strided slice of qkv, so matmul will not fold it).
        queries_by_offset = (q.reshape(b * n * h, k) @ self.position_kernels).reshape(b, n, h, -1)  # (B, N, h, r²)
        y = y.reshape(b, n, h, v) + self._position_term(queries_by_offset, values, size)
        return y.reshape(b, n, h * v)

    def _position_term(self, a: torch.Tensor, values: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Σ_δ a[b, p, h, δ] · values[b, p + δ, v] over the r×r offsets δ: (B, N, h, r²) -> (B, N, h, v)."""
        b, n, h, r2 = a.shape
        height, width = size
        r = self.kernel_size
        pad = r // 2
        v = values.shape[-1]
        grid = F.pad(values.reshape(b, height, width, v), (0, 0, pad, pad, pad, pad))  # (B, H+2p, W+2p, v)
        rows = max(1, _PATCH_CHUNK_BYTES // (b * width * r2 * v * values.element_size()))
        out = torch.empty(b, height, width, h, v, dtype=a.dtype, device=a.device)
        a = a.reshape(b, height, width, h, r2)
        for top in range(0, height, rows):
            bottom = min(top + rows, height)
            # (B, rows, W, v, r, r) view of every pixel's neighbourhood; the reshape gathers it.
            patches = grid[:, top : bottom + 2 * pad].unfold(1, r, 1).unfold(2, r, 1)
            patches = patches.permute(0, 1, 2, 4, 5, 3).reshape(-1, r2, v)  # (B·rows·W, r², v)
            chunk = a[:, top:bottom].reshape(-1, h, r2)  # (B·rows·W, h, r²)
            out[:, top:bottom] = torch.bmm(chunk, patches).reshape(b, bottom - top, width, h, v)
        return out.reshape(b, n, h, v)


class FastInteractiveLambda(nn.Module):
    """:class:`InteractiveLambda` on tokens: t (B, N, C), context (B, m, D) -> (B, N, C).

    Content and position lambdas share the queries, so both fold into one weight per (pixel, token):
    y[n, h, :] = Σ_m (Σ_k q[n, h, k]·(K̄[k, m] + E[n, m, k]))·V[:, m].
    """

    def __init__(self, ref: InteractiveLambda) -> None:
        super().__init__()
        self.heads, self.dim_k, self.dim_v, self.tokens = ref.heads, ref.dim_k, ref.dim_v, ref.tokens
        wq, bq = _fold(ref.to_q.weight.flatten(1), ref.norm_q)
        wv, bv = _fold(ref.to_v.weight, ref.norm_v)
        self.to_q = nn.Linear(wq.shape[1], wq.shape[0])
        self.to_k = nn.Linear(ref.to_k.in_features, self.dim_k, bias=False)
        self.to_v = nn.Linear(ref.to_v.in_features, self.dim_v)
        with torch.no_grad():
            self.to_q.weight.copy_(wq)
            self.to_q.bias.copy_(bq)
            self.to_k.weight.copy_(ref.to_k.weight)
            self.to_v.weight.copy_(wv)
            self.to_v.bias.copy_(bv)
        self.rel_pos_emb = nn.Parameter(ref.rel_pos_emb.detach().clone())  # (n², m, k, 1)
        self._tables: dict[tuple, torch.Tensor] = {}

    def _table(self, size: tuple[int, int], like: torch.Tensor) -> torch.Tensor:
        """(N, k, m) position table for this grid, cached per size, dtype and device."""
        key = (size, like.dtype, like.device)
        if key not in self._tables:
            table = resample_position_table(self.rel_pos_emb[..., 0], size)  # (N, m, k)
            self._tables[key] = table.detach().transpose(1, 2).to(like).contiguous()
        return self._tables[key]

    def forward(self, t: torch.Tensor, context: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        b, n, _ = t.shape
        h, k = self.heads, self.dim_k
        q = self.to_q(t).reshape(b, n, h, k)
        keys = self.to_k(context).softmax(dim=1)  # (B, m, k), softmax over tokens
        values = self.to_v(context)  # (B, m, v)
        weights = q.reshape(b, n * h, k) @ keys.transpose(1, 2)  # (B, N·h, m)
        position = torch.bmm(q.transpose(0, 1).reshape(n, b * h, k), self._table(size, q))  # (N, B·h, m)
        weights = weights + position.reshape(n, b, h, -1).transpose(0, 1).reshape(b, n * h, -1)
        return (weights @ values).reshape(b, n, -1)  # (B, N, h·v)


class FastMixFFN(nn.Module):
    """:class:`MixFFN` on tokens: (B, N, C) -> (B, N, C), the depthwise conv run channels-last."""

    def __init__(self, ref: MixFFN) -> None:
        super().__init__()
        expand, depth, project = ref.inverted_conv.conv, ref.depth_conv.conv, ref.point_conv.conv
        self.expand = nn.Linear(expand.in_channels, expand.out_channels)
        self.depth = copy.deepcopy(depth)
        self.project = nn.Linear(project.in_channels, project.out_channels, bias=False)
        with torch.no_grad():
            self.expand.weight.copy_(expand.weight.flatten(1))
            self.expand.bias.copy_(expand.bias)
            self.project.weight.copy_(project.weight.flatten(1))

    def forward(self, t: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        b, n, _ = t.shape
        h = F.silu(self.expand(t))  # (B, N, 2·hidden)
        grid = h.reshape(b, size[0], size[1], -1).permute(0, 3, 1, 2)  # channels-last view
        h = self.depth(grid).permute(0, 2, 3, 1).reshape(b, n, -1)
        value, gate = h.chunk(2, dim=-1)
        return self.project(value * F.silu(gate))


class FastLLMITransformer(nn.Module):
    """:class:`LLMITransformer` on channels-last maps: x (B, C, H, W), context (B, m, D) -> (B, C, H, W).

    x may also have fewer rows than context, b with context rows k·b: x is then shared by the k row
    blocks, and everything before the Interactive-λ (the first use of the context) runs once per x row.
    """

    def __init__(self, ref: LLMITransformer) -> None:
        super().__init__()
        (block,) = ref.transformer_blocks
        self.norm = ref.norm
        channels = ref.proj_in.in_channels
        self.proj_in = nn.Linear(channels, channels)
        self.proj_out = nn.Linear(channels, channels)
        with torch.no_grad():
            for linear, conv in ((self.proj_in, ref.proj_in), (self.proj_out, ref.proj_out)):
                linear.weight.copy_(conv.weight.flatten(1))
                linear.bias.copy_(conv.bias)
        self.norm1, self.norm2, self.norm3 = block.norm1, block.norm2, block.norm3
        self.local = FastLocalLambda(block.attn1)
        self.interactive = FastInteractiveLambda(block.attn2)
        self.ff = FastMixFFN(block.ff)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        b, c, height, width = x.shape
        size = (height, width)
        t = self.norm(x).permute(0, 2, 3, 1).reshape(b, height * width, c)  # tokens; free when channels-last
        t = self.proj_in(t)
        t = t + self.local(self.norm1(t), size)
        if context.shape[0] != b:
            # Rows shared by several category contexts (CFG): everything so far is context-free.
            repeats = context.shape[0] // b
            t, x, b = torch.cat([t] * repeats), torch.cat([x] * repeats), context.shape[0]
        t = t + self.interactive(self.norm2(t), context, size)
        t = t + self.ff(self.norm3(t), size)
        out = self.proj_out(t).reshape(b, height, width, c).permute(0, 3, 1, 2)
        return x + out


class PhaseUpsample(nn.Module):
    """:class:`Upsample` without materialising the ×2 map: (B, C, H, W) -> (B, C, 2H, 2W).

    Output pixel (2i + a, 2j + b) of nearest ×2 followed by a 3×3 conv only ever reads input rows
    {i - 1, i} (a = 0) or {i, i + 1} (a = 1), and likewise for columns, so each of the four output phases
    is a 2×2 conv of the input whose taps are sums of the 3×3 taps.
    """

    # For output phase a, the 3×3 kernel rows that land on low-res rows (first, second) of the 2×2 window.
    _ROWS = {0: ((0,), (1, 2)), 1: ((0, 1), (2,))}

    def __init__(self, ref: Upsample) -> None:
        super().__init__()
        weight = ref.conv.weight.detach()  # (C, C, 3, 3)
        phases = []
        for a in (0, 1):
            for b in (0, 1):
                rows = [weight[:, :, list(r), :].sum(2) for r in self._ROWS[a]]  # 2 × (C, C, 3)
                taps = [[row[:, :, list(c)].sum(2) for c in self._ROWS[b]] for row in rows]
                phases.append(torch.stack([torch.stack(t, -1) for t in taps], -2))  # (C, C, 2, 2)
        self.phase_weight = nn.Parameter(torch.cat(phases))  # (4·C, C, 2, 2), phase-major
        self.bias = nn.Parameter(ref.conv.bias.detach().clone())

    def forward(self, x: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        b, c, h, w = x.shape
        if size is not None and tuple(size) != (2 * h, 2 * w):
            raise ValueError(f"the fast upsampler only doubles: {h}×{w} -> {tuple(size)}")
        out = x.new_empty(b, h, 2, w, 2, c)
        for index, (a, col) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
            # Pad so that the 2×2 window's first row/column is i - 1 for phase 0 and i for phase 1.
            padded = F.pad(x, (1 - col, col, 1 - a, a))
            phase = F.conv2d(padded, self.phase_weight[index * c : (index + 1) * c], self.bias)  # (B, C, H, W)
            out[:, :, a, :, col, :] = phase.permute(0, 2, 3, 1)
        return out.reshape(b, 2 * h, 2 * w, c).permute(0, 3, 1, 2)


class FastDenoiser(nn.Module):
    """The student's :class:`LatentCategoryDenoiser` whose classifier-free-guidance rows share work.

    forward(x (b, 9, H, W), timesteps scalar or (b,), input_ids (k·b, 10)) -> ε (k·b, 4, H, W): x row i
    is the input of id rows i, b + i, ..., like ``torch.cat([x] * k)`` would be. The category tokens
    first enter at the first LλMI block's Interactive-λ, so the input conv, the first resnet and that
    block's Local-λ run on the b rows only (exact: those rows are identical). The rest is
    :class:`MoebiusUNet`'s own steps (its size check, time embedding, down blocks and ``up_path``).
    """

    def __init__(self, ref: LatentCategoryDenoiser) -> None:
        super().__init__()
        self.embedding_layer = ref.embedding_layer
        self.diff_model = ref.diff_model

    @property
    def config(self) -> MoebiusConfig:
        return self.diff_model.config

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor | int | float, input_ids: torch.Tensor,
                return_block_outputs: bool = False) -> torch.Tensor | DenoiserOutput:
        unet = self.diff_model
        unet.check_latent_size(x)
        b = x.shape[0]
        repeats = input_ids.shape[0] // b
        if repeats * b != input_ids.shape[0]:
            raise ValueError(f"{input_ids.shape[0]} id rows are not a multiple of the {b} input rows")
        emb = unet.time_embed(timesteps, x)
        context = unet.encoder_hid_proj(self.embedding_layer(input_ids))  # (k·b, 10, D)

        x = unet.conv_in(x)
        skips = [torch.cat([x] * repeats)]
        first = unet.down_blocks[0]
        x = first.attentions[0](first.resnets[0](x, emb), context)  # leaves with k·b rows
        emb = torch.cat([emb] * repeats)
        skips.append(x)
        for resnet, attention in zip(first.resnets[1:], first.attentions[1:]):
            x = attention(resnet(x, emb), context)
            skips.append(x)
        if first.downsamplers is not None:
            x = first.downsamplers[0](x)
            skips.append(x)
        block_outputs = [x]
        for block in unet.down_blocks[1:]:
            x, block_skips = block(x, emb, context)
            skips += block_skips
            block_outputs.append(x)
        x = unet.up_path(x, skips, emb, context, block_outputs)
        return DenoiserOutput(x, block_outputs) if return_block_outputs else x


class FastVAEResnet(nn.Module):
    """The autoencoder's :class:`~moebius.models.vae.ResnetBlock` with its activations and residual add done
    in place: the same operations in the same order (equal numbers), minus three full-size temporaries,
    which at full resolution cost as much memory traffic as the SiLUs themselves."""

    def __init__(self, ref: ResnetBlock) -> None:
        super().__init__()
        self.norm1, self.conv1, self.norm2, self.conv2 = ref.norm1, ref.conv1, ref.norm2, ref.conv2
        self.conv_shortcut = ref.conv_shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x), inplace=True))
        h = self.conv2(F.silu(self.norm2(h), inplace=True))
        shortcut = x if self.conv_shortcut is None else self.conv_shortcut(x)
        return h.add_(shortcut)


class FastMidBlockAttention(nn.Module):
    """:class:`~moebius.models.vae.MidBlockAttention` on channels-last tokens: (B, C, H, W) -> (B, C, H, W).

    q, k and v come from one (C, 3C) projection, and the tokens are a view of the channels-last map, so
    no transposed copies of the (H·W, C) maps are made around the attention.
    """

    def __init__(self, ref: MidBlockAttention) -> None:
        super().__init__()
        channels = ref.to_q.in_features
        self.group_norm = ref.group_norm
        self.qkv = nn.Linear(channels, 3 * channels)
        with torch.no_grad():
            self.qkv.weight.copy_(torch.cat([ref.to_q.weight, ref.to_k.weight, ref.to_v.weight]))
            self.qkv.bias.copy_(torch.cat([ref.to_q.bias, ref.to_k.bias, ref.to_v.bias]))
        self.to_out = ref.to_out[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = self.group_norm(x).permute(0, 2, 3, 1).reshape(b, h * w, c)  # free when channels-last
        q, k, v = self.qkv(tokens).unsqueeze(1).chunk(3, dim=-1)  # (B, 1, HW, C) each: one head
        out = self.to_out(F.scaled_dot_product_attention(q, k, v).squeeze(1))  # scale C**-0.5
        return x + out.reshape(b, h, w, c).permute(0, 3, 1, 2)


_REPLACEMENTS = {
    Upsample: PhaseUpsample,
    ResnetBlock: FastVAEResnet,
    MidBlockAttention: FastMidBlockAttention,
    DepthwiseSeparableConv: FoldedDWConv,
    LLMITransformer: FastLLMITransformer,
}


def optimize_for_inference(model: nn.Module, channels_last: bool = True) -> nn.Module:
    """A fast, eval-only copy of a student model or an autoencoder (see the module docstring); the input is
    not modified.

    The copy computes the same function as ``model.eval()`` up to float rounding. It has no BatchNorm
    left, so it cannot be trained or saved as an official checkpoint; keep ``model`` for that.
    """
    source = next(model.parameters())
    # Fold in float32 whatever the model's dtype, then return the copy in the model's dtype and device.
    fast = copy.deepcopy(model).eval().float()

    def swap(parent: nn.Module) -> None:
        for name, child in parent.named_children():
            replacement = _REPLACEMENTS.get(type(child))
            if replacement is not None:
                setattr(parent, name, replacement(child))
            else:
                swap(child)

    # The replacement layers draw a default initialisation that their copied weights overwrite at once; the
    # caller's global random state must not move because a pipeline built its fast copy.
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        swap(fast)
    if isinstance(fast, LatentCategoryDenoiser) and isinstance(fast.diff_model, MoebiusUNet):
        fast = FastDenoiser(fast)
    fast.requires_grad_(False)
    fast = fast.to(device=source.device, dtype=source.dtype)
    if channels_last:
        fast = fast.to(memory_format=torch.channels_last)
    return fast
