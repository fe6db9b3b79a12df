"""LPIPS (Zhang et al. 2018) and shift-tolerant LPIPS (Ghildyal & Liu 2022) as networks of our own.

Both compare two images through a frozen backbone: at each of five layers the features are unit-normalised
along channels, their squared difference is weighted per channel by a learned 1x1 "head", averaged over
space, and the five numbers are summed. Inputs are RGB in [-1, 1], ``(N, 3, H, W)``; the output is ``(N,)``.

Weights are read from local files only, never downloaded, and no torchvision/lpips/stlpips code runs:

* ``variant="shift-tolerant"`` (default): one file per backbone holds everything, the
  ``weights/vST0.0/{alex,vgg}_shift_tolerant.pth`` that the PyPI package ``stlpips-pytorch`` (0.0.2) ships;
  found in the installed package's data directory or in its ``.whl``. Its backbones blur before every
  stride-2 step (a normalised [1, 2, 1]² filter after reflect padding 2) and its first AlexNet conv has
  stride 1, so the scores are **not comparable** with classic LPIPS.
* ``variant="standard"``: the paper's metric (v0.1). The backbone is torchvision's ImageNet AlexNet or
  VGG16 state dict (``alexnet-owt-7be5be79.pth`` / ``vgg16-397923af.pth``, keys ``features.N.weight``),
  which the user supplies; the heads are ``lpips/weights/v0.1/{alex,vgg}.pth`` from the ``lpips`` package
  (installed or its wheel) or a given file.

Every :class:`LPIPS` carries a ``backend`` string naming variant, backbone and file digests for reports.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import CheckpointError, InputError
from ..weights.package_files import file_digest, find_weight_file

NETS = ("alex", "vgg")
VARIANTS = ("shift-tolerant", "standard")
_CHANNELS = {"alex": (64, 192, 384, 256, 256), "vgg": (64, 128, 256, 512, 512)}
_VGG_STAGES = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
# The input normalisation constants of LPIPS v0.1 (its "scaling layer"), for [-1, 1] inputs.
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)


class BlurDownsample(nn.Module):
    """Anti-aliased stride-2 subsampling: reflect-pad 2, depthwise 3x3 binomial blur, keep every 2nd pixel.

    ``x: (N, C, H, W) -> (N, C, floor((H + 1) / 2) + 1, floor((W + 1) / 2) + 1)``.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        taps = torch.tensor([1.0, 2.0, 1.0])
        kernel = taps[:, None] * taps[None, :]
        self.register_buffer("filt", (kernel / kernel.sum()).expand(channels, 1, 3, 3).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), self.filt, stride=2, groups=x.shape[1])


class AlexNetTrunk(nn.Module):
    """AlexNet's five conv layers; returns the five ReLU outputs. ``shift_tolerant`` selects the ST variant.

    Standard: conv1 11x11/4 -> maxpool 3/2 -> conv2 5x5 -> maxpool 3/2 -> conv3..5 3x3 (torchvision layout).
    Shift-tolerant: conv1 11x11/1 -> blur/2, and each max-pool becomes maxpool 3/1 -> blur/2.
    """

    def __init__(self, shift_tolerant: bool) -> None:
        super().__init__()
        self.shift_tolerant = shift_tolerant
        self.conv1 = nn.Conv2d(3, 64, 11, stride=1 if shift_tolerant else 4, padding=2)
        self.conv2 = nn.Conv2d(64, 192, 5, padding=2)
        self.conv3 = nn.Conv2d(192, 384, 3, padding=1)
        self.conv4 = nn.Conv2d(384, 256, 3, padding=1)
        self.conv5 = nn.Conv2d(256, 256, 3, padding=1)
        if shift_tolerant:
            self.blur1, self.blur2, self.blur3 = BlurDownsample(64), BlurDownsample(64), BlurDownsample(192)

    def _pool(self, x: torch.Tensor, blur: str) -> torch.Tensor:
        if self.shift_tolerant:
            return getattr(self, blur)(F.max_pool2d(x, 3, stride=1))
        return F.max_pool2d(x, 3, stride=2)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = self.conv1(x)
        f1 = F.relu(self.blur1(h) if self.shift_tolerant else h)
        f2 = F.relu(self.conv2(self._pool(f1, "blur2")))
        f3 = F.relu(self.conv3(self._pool(f2, "blur3")))
        f4 = F.relu(self.conv4(f3))
        f5 = F.relu(self.conv5(f4))
        return [f1, f2, f3, f4, f5]


class VGG16Trunk(nn.Module):
    """VGG16's 13 conv layers in five stages; returns each stage's last ReLU output (relu1_2 ... relu5_3).

    Between stages: maxpool 2/2 (standard) or maxpool 2/1 -> blur/2 (shift-tolerant).
    """

    def __init__(self, shift_tolerant: bool) -> None:
        super().__init__()
        self.shift_tolerant = shift_tolerant
        self.stages = nn.ModuleList()
        c_in = 3
        for widths in _VGG_STAGES:
            convs = nn.ModuleList()
            for w in widths:
                convs.append(nn.Conv2d(c_in, w, 3, padding=1))
                c_in = w
            self.stages.append(convs)
        if shift_tolerant:
            self.blurs = nn.ModuleList(BlurDownsample(s[-1]) for s in _VGG_STAGES[:-1])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for i, convs in enumerate(self.stages):
            if i > 0:
                x = self.blurs[i - 1](F.max_pool2d(x, 2, stride=1)) if self.shift_tolerant else F.max_pool2d(x, 2)
            for conv in convs:
                x = F.relu(conv(x))
            feats.append(x)
        return feats


class LPIPS(nn.Module):
    """Learned perceptual distance: ``forward(x, y) -> (N,)`` for ``x, y: (N, 3, H, W)`` in [-1, 1]."""

    def __init__(self, net: str = "alex", variant: str = "shift-tolerant") -> None:
        super().__init__()
        if net not in NETS:
            raise InputError(f"unknown LPIPS network {net!r}; choose from {', '.join(NETS)}")
        if variant not in VARIANTS:
            raise InputError(f"unknown LPIPS variant {variant!r}; choose from {', '.join(VARIANTS)}")
        self.net_name, self.variant = net, variant
        tolerant = variant == "shift-tolerant"
        self.trunk = AlexNetTrunk(tolerant) if net == "alex" else VGG16Trunk(tolerant)
        self.heads = nn.ParameterList(nn.Parameter(torch.zeros(c)) for c in _CHANNELS[net])
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1))
        self.backend = f"LPIPS {variant} {net} (no weights loaded)"
        self.requires_grad_(False)
        self.eval()

    def forward(self, x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """The distance of each pair; ``weight`` (N, 1, H, W) >= 0, e.g. a hole mask, replaces each layer's
        plain spatial mean by the mean weighted by ``weight`` area-resized to that layer (a region's LPIPS)."""
        fx = self.trunk((x - self.shift) / self.scale)
        fy = self.trunk((y - self.shift) / self.scale)
        total = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        for a, b, w in zip(fx, fy, self.heads):
            a = a / (a.norm(dim=1, keepdim=True) + 1e-10)  # (N, C, h, w), unit length along C
            b = b / (b.norm(dim=1, keepdim=True) + 1e-10)
            if weight is None:
                total = total + torch.einsum("nchw,c->n", (a - b) ** 2, w) / (a.shape[2] * a.shape[3])
            else:
                k = F.interpolate(weight.to(a.dtype), size=a.shape[2:], mode="area")[:, 0]  # (N, h, w)
                total = total + torch.einsum("nchw,c,nhw->n", (a - b) ** 2, w, k) / k.sum((1, 2)).clamp_min(1e-10)
        return total


# ---------------------------------------------------------------------------------------------------------
# Loading. Each table maps a file's key prefix to ours (the files' own layouts, stated once here).

def _st_alex_keys() -> dict[str, str]:
    return {"net.slice1.0": "trunk.conv1", "net.slice1.1": "trunk.blur1", "net.slice2.4": "trunk.blur2",
            "net.slice2.5": "trunk.conv2", "net.slice3.8": "trunk.blur3", "net.slice3.9": "trunk.conv3",
            "net.slice4.11": "trunk.conv4", "net.slice5.13": "trunk.conv5"}


def _vgg_keys(shift_tolerant: bool, prefix: str) -> dict[str, str]:
    """VGG16 conv (and blur) positions in a flat ``features`` list: ST adds a blur after every max-pool."""
    table, index = {}, 0
    for s, widths in enumerate(_VGG_STAGES):
        if s > 0:
            index += 1  # max-pool
            if shift_tolerant:
                table[_slice_key(prefix, index, s)] = f"trunk.blurs.{s - 1}"
                index += 1
        for k in range(len(widths)):
            table[_slice_key(prefix, index, s)] = f"trunk.stages.{s}.{k}"
            index += 2  # conv, relu
    return table


def _slice_key(prefix: str, index: int, stage: int) -> str:
    # stlpips groups its flat list into net.slice{stage+1}.{index}; torchvision's is features.{index}.
    return f"net.slice{stage + 1}.{index}" if prefix == "net.slice" else f"{prefix}.{index}"


def _load_file(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # unreadable, pickled code, truncated
        raise CheckpointError(f"cannot read {path}: {exc}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} does not hold a state dict")
    return state


def _assign(model: LPIPS, state: dict[str, torch.Tensor], table: dict[str, str], path: Path,
            extra_ok: tuple[str, ...] = ()) -> None:
    """Copy ``state`` into ``model`` through the prefix table, strictly: list every problem, then raise."""
    ours = model.state_dict()
    mapped, unexpected = {}, []
    for key, value in state.items():
        head, _, leaf = key.rpartition(".")
        if head in table:
            mapped[f"{table[head]}.{leaf}"] = value
        elif key.startswith("lin") and key.endswith(".model.1.weight"):
            mapped[f"heads.{int(key[3:key.index('.')])}"] = value.flatten()
        elif key.startswith("scaling_layer."):
            mapped[key.replace("scaling_layer.", "")] = value
        elif not key.startswith(extra_ok):
            unexpected.append(key)
    missing = [k for k in _wanted(table, ours) if k not in mapped]
    bad = [f"{k} {tuple(v.shape)} != {tuple(ours[k].shape)}" for k, v in mapped.items()
           if k in ours and v.shape != ours[k].shape]
    if missing or unexpected or bad:
        raise CheckpointError(f"{path}: missing {missing[:8]}, unexpected {unexpected[:8]}, shape mismatch {bad[:8]}")
    with torch.no_grad():
        for k, v in mapped.items():
            ours[k].copy_(v)


def _wanted(table: dict[str, str], ours: dict[str, torch.Tensor]) -> list[str]:
    prefixes = tuple(f"{v}." for v in table.values())
    return [k for k in ours if k.startswith(prefixes)]


def load_lpips(net: str = "alex", variant: str = "shift-tolerant", *, weights: str | os.PathLike | None = None,
               backbone: str | os.PathLike | None = None, head: str | os.PathLike | None = None) -> LPIPS:
    """Build an :class:`LPIPS` and fill it from local files (module docstring says which).

    Args:
        net: ``"alex"`` or ``"vgg"``. variant: ``"shift-tolerant"`` or ``"standard"``.
        weights: shift-tolerant only: the ``*_shift_tolerant.pth`` file or the ``stlpips-pytorch`` wheel.
        backbone: standard only, required: torchvision's AlexNet/VGG16 ImageNet state dict.
        head: standard only: the ``lpips`` v0.1 head file or the ``lpips`` wheel (default: installed package).
    """
    model = LPIPS(net, variant)
    if variant == "shift-tolerant":
        member = f"stlpips_pytorch/weights/vST0.0/{net}_shift_tolerant.pth"
        path = find_weight_file(weights, package="stlpips-pytorch", member=member, env="MOEBIUS_STLPIPS_WEIGHTS")
        table = _st_alex_keys() if net == "alex" else _vgg_keys(True, "net.slice")
        _assign(model, _load_file(path), table, path)
        _check_heads_loaded(model, path)
        model.backend = f"ST-LPIPS {net} (stlpips-pytorch {path.name} sha256:{file_digest(path)[:12]})"
        return model
    if backbone is None:
        raise InputError(f"standard LPIPS needs the torchvision ImageNet {net} weights: pass --lpips-backbone FILE "
                         "(alexnet-owt-7be5be79.pth or vgg16-397923af.pth)")
    bpath = Path(backbone).expanduser()
    if not bpath.is_file():
        raise InputError(f"LPIPS backbone file not found: {bpath}")
    table = ({f"features.{i}": f"trunk.conv{n}" for n, i in enumerate((0, 3, 6, 8, 10), start=1)}
             if net == "alex" else _vgg_keys(False, "features"))
    _assign(model, _load_file(bpath), table, bpath, extra_ok=("classifier.",))
    hpath = find_weight_file(head, package="lpips", member=f"lpips/weights/v0.1/{net}.pth", env="MOEBIUS_LPIPS_HEAD")
    _assign(model, _load_file(hpath), {}, hpath)
    _check_heads_loaded(model, hpath)
    model.backend = (f"LPIPS v0.1 {net} (backbone {bpath.name} sha256:{file_digest(bpath)[:12]}, "
                     f"head {hpath.name} sha256:{file_digest(hpath)[:12]})")
    return model


def _check_heads_loaded(model: LPIPS, path: Path) -> None:
    if any(float(h.abs().sum()) == 0 for h in model.heads):
        raise CheckpointError(f"{path} holds no LPIPS heads (lin0..lin4)")
