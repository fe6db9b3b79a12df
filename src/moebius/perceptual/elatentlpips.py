"""E-LatentLPIPS: a learned perceptual distance computed directly on VAE latents.

Kang et al., "Diffusion2GAN" (arXiv 2405.05967), used by Moebius as the latent perceptual loss
between predicted clean latents. Written from the published description; the module tree gives
the released checkpoint's key names (``net.slice{1..5}.<index>.*``, ``lin{0..4}.model.1.weight``), so the
released ``sdxl_latest_vgg16_tuned.pth`` loads strictly when a user has it. The weights cannot be
downloaded here, and are CC-BY-NC licensed; nothing in this package ships them.

Network: VGG16 with BatchNorm whose first conv takes 4 latent channels and whose first three max-pools are
identities (latents are already 8× smaller than pixels). Five feature taps, each unit-normalised over
channels; squared differences go through a 1×1 "linear head" and are averaged over space. The score sums
the five terms, plus the mean absolute difference of the inputs (``add_l1``).

Ensembling ("E-"): both inputs get the *same* random geometric augmentation (flip, quarter turns, integer
translation, isotropic and anisotropic scale, rotation, fractional translation; the families and
parameter distributions of StyleGAN2-ADA's "bg" pipeline, all with probability 1). Here they are composed
into one affine map per sample and resampled bilinearly with reflection padding; parameters come from
the caller's generator so the loss is reproducible per sample.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import CheckpointError

# VGG16 feature stack: channel counts, "M" = pooling. Each conv is conv -> BN -> ReLU (3 modules).
_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
_SLICES = ((0, 7), (7, 14), (14, 24), (24, 34), (34, 44))  # module index ranges of the five taps
_IDENTITY_POOLS = 3
CHANNELS = (64, 128, 256, 512, 512)
AUGMENT_PARAMS = 9


class LatentVGG(nn.Module):
    """The trunk: x (B, latent, h, w) -> five feature maps (64@h, 128@h, 256@h, 512@h/2, 512@h/4)."""

    def __init__(self, latent_channels: int = 4) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c, pools = latent_channels, 0
        for v in _LAYOUT:
            if v == "M":
                layers.append(nn.Identity() if pools < _IDENTITY_POOLS else nn.MaxPool2d(2, 2))
                pools += 1
            else:
                layers += [nn.Conv2d(c, v, 3, padding=1), nn.BatchNorm2d(v), nn.ReLU()]
                c = v
        for k, (start, stop) in enumerate(_SLICES, 1):
            tap = nn.Sequential()
            for i in range(start, stop):
                tap.add_module(str(i), layers[i])  # named by index in the whole stack: the checkpoint's keys
            self.add_module(f"slice{k}", tap)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for k in range(1, len(_SLICES) + 1):
            x = getattr(self, f"slice{k}")(x)
            feats.append(x)
        return feats


class LinearHead(nn.Module):
    """Per-channel weights of one tap: (B, C, h, w) -> (B, 1, h, w). Dropout is inert in eval mode."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(channels, 1, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def _unit(x: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Normalise each spatial position's feature vector to unit length. (B, C, h, w) -> same."""
    return x / (x.pow(2).sum(dim=1, keepdim=True).sqrt() + eps)


class ELatentLPIPS(nn.Module):
    """d(a, b) for latents a, b: (B, 4, h, w) -> (B,). Frozen and in eval mode once built."""

    def __init__(self, latent_channels: int = 4) -> None:
        super().__init__()
        self.net = LatentVGG(latent_channels)
        for k, c in enumerate(CHANNELS):
            self.add_module(f"lin{k}", LinearHead(c))
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> ELatentLPIPS:
        # A loss network: BatchNorm statistics and dropout stay in inference mode.
        return super().train(False)

    def forward(self, a: torch.Tensor, b: torch.Tensor, augment: torch.Tensor | None = None,
                add_l1: bool = True) -> torch.Tensor:
        """``augment``: (B, 9) parameters from :func:`draw_augment_params`, or None for no ensembling."""
        score = (a - b).abs().mean(dim=(1, 2, 3)) if add_l1 else a.new_zeros(a.shape[0])
        if augment is not None:
            a, b = augment_pair(a, b, augment)
        # One trunk pass over both inputs: (2B, 4, h, w).
        feats = self.net(torch.cat([a, b]))
        for k, f in enumerate(feats):
            fa, fb = f.chunk(2)
            diff = (_unit(fa) - _unit(fb)).pow(2)  # (B, C, h', w')
            score = score + getattr(self, f"lin{k}")(diff).mean(dim=(1, 2, 3))
        return score


# ----------------------------------------------------------------------------------------------------
# Augmentation


def draw_augment_params(generator: torch.Generator) -> torch.Tensor:
    """One sample's augmentation: [xflip, quarter turns, int tx, int ty, log2 iso scale, angle,
    log2 aniso, frac tx, frac ty] (9,), float32."""
    u = torch.rand(4, generator=generator)
    n = torch.randn(4, generator=generator)
    return torch.stack([
        (u[0] < 0.5).float(),  # xflip
        torch.floor(u[1] * 4).clamp(max=3),  # rotate90
        torch.rand(1, generator=generator)[0] * 0.25 - 0.125,  # xint, fraction of the width
        torch.rand(1, generator=generator)[0] * 0.25 - 0.125,
        n[0] * 0.2,  # isotropic scale, log2
        (u[2] * 2 - 1) * math.pi,  # rotation
        n[1] * 0.2,  # anisotropic scale, log2
        n[2] * 0.125,  # fractional translation, fraction of the size
        n[3] * 0.125,
    ])


def _affine(params: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, 9) parameters -> (B, 2, 3) output-to-input maps in normalised coordinates."""
    b = params.shape[0]
    p = params.double()
    eye = torch.eye(3, dtype=torch.float64).expand(b, 3, 3)

    def mat(a, bb, c, d, tx, ty):
        m = eye.clone()
        m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1], m[:, 0, 2], m[:, 1, 2] = a, bb, c, d, tx, ty
        return m

    zero, one = torch.zeros(b, dtype=torch.float64), torch.ones(b, dtype=torch.float64)
    flip = mat(1 - 2 * p[:, 0], zero, zero, one, zero, zero)
    quarter = p[:, 1] * (math.pi / 2)
    rot90 = mat(torch.cos(quarter).round(), -torch.sin(quarter).round(), torch.sin(quarter).round(),
                torch.cos(quarter).round(), zero, zero)
    shift_int = mat(one, zero, zero, one, 2 * torch.round(p[:, 2] * width) / width, 2 * torch.round(p[:, 3] * height) / height)
    s = torch.exp2(p[:, 4])
    iso = mat(s, zero, zero, s, zero, zero)
    rot = mat(torch.cos(p[:, 5]), -torch.sin(p[:, 5]), torch.sin(p[:, 5]), torch.cos(p[:, 5]), zero, zero)
    an = torch.exp2(p[:, 6])
    aniso = mat(an, zero, zero, 1 / an, zero, zero)
    shift_frac = mat(one, zero, zero, one, 2 * p[:, 7], 2 * p[:, 8])
    total = flip @ rot90 @ shift_int @ iso @ rot @ aniso @ shift_frac
    return total[:, :2, :].float()


def augment_pair(a: torch.Tensor, b: torch.Tensor, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply the same per-sample geometric augmentation to a and b: (B, C, h, w) each -> same shapes."""
    theta = _affine(params.to("cpu"), a.shape[2], a.shape[3]).to(device=a.device, dtype=a.dtype)
    grid = F.affine_grid(theta, list(a.shape), align_corners=False)
    both = torch.cat([a, b], dim=1)  # (B, 2C, h, w): one resampling for both
    out = F.grid_sample(both, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    return out[:, : a.shape[1]], out[:, a.shape[1]:]


# ----------------------------------------------------------------------------------------------------
# Weights


def load_elatentlpips(path: str | Path) -> ELatentLPIPS:
    """Build the network and load released weights (``*_vgg16_tuned.pth``) or our ``.safetensors``.

    Raises :class:`CheckpointError` for a missing, unreadable or mismatched file.
    """
    from ..weights.official import load_into, read_state_dict

    path = Path(path)
    state = read_state_dict(path)
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    # The released file stores each head twice (``lin{k}`` and the list ``lins.{k}``); keep one copy.
    for key in [k for k in state if k.startswith("lins.")]:
        twin = "lin" + key[len("lins."):]
        if twin in state and not torch.equal(state[twin], state[key]):
            raise CheckpointError(f"{path}: {key} and {twin} differ")
        state.setdefault(twin, state[key])
        del state[key]
    latent_channels = state["net.slice1.0.weight"].shape[1] if "net.slice1.0.weight" in state else 4
    model = ELatentLPIPS(latent_channels)
    load_into(model, state, str(path))
    model.requires_grad_(False)
    return model.eval()
