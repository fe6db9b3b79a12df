"""The PixelHacker teacher: checkpoint layout, parameter count, and parity with the official forward."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from moebius import load_official
from moebius.models.denoiser import LatentCategoryDenoiser
from moebius.models.teacher import PixelHackerConfig, PixelHackerUNet, build_pixelhacker, pixelhacker_config, pixelhacker_tiny_config
from parity_formula import PARITY_DIR, formula_state_dict, load_layout


def _meta_teacher() -> LatentCategoryDenoiser:
    """The full-size teacher without storage: cheap to build, still has every name and shape."""
    with torch.device("meta"):
        return build_pixelhacker(pixelhacker_config())


def test_full_size_parameter_count() -> None:
    model = _meta_teacher()
    assert sum(p.numel() for p in model.parameters()) == 862_251_708
    assert model.embedding_layer.weight.shape == (20, 3072)
    assert not list(model.buffers())


def test_state_dict_layout_matches_official() -> None:
    entries = json.loads((PARITY_DIR / "teacher_keys.json").read_text())
    official = [(e["key"], tuple(e["shape"]), e["dtype"]) for e in entries]
    state = _meta_teacher().state_dict()
    ours = [(k, tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in state.items()]
    assert ours == official


def test_strict_load_accepts_official_layout() -> None:
    layout = load_layout("teacher")
    model = _meta_teacher()
    model.load_state_dict({k: torch.empty(s, device="meta") for k, s in layout.items()}, strict=True, assign=True)


def test_presets_registered() -> None:
    from moebius.models import get_config, list_models

    assert {"pixelhacker", "pixelhacker-tiny"} <= set(list_models("pixelhacker*"))
    assert get_config("pixelhacker") == PixelHackerConfig()
    assert PixelHackerConfig.family == "pixelhacker"


def test_config_rejects_indivisible_widths() -> None:
    from moebius.errors import ConfigError

    with pytest.raises(ConfigError):
        PixelHackerConfig(block_out_channels=(40, 80), norm_num_groups=8)  # 40 is not a multiple of 16


def test_tiny_non_square_forward_and_backward() -> None:
    torch.manual_seed(0)
    model = build_pixelhacker(pixelhacker_tiny_config())
    x = torch.randn(1, 9, 48, 80)
    out = model(x, torch.tensor([881]), torch.arange(10)[None], return_block_outputs=True)
    assert out.sample.shape == (1, 4, 48, 80)
    expected = [(32, 24, 40), (64, 12, 20), (64, 6, 10), (64, 6, 10), (64, 6, 10),
                (64, 12, 20), (64, 24, 40), (64, 48, 80), (32, 48, 80)]
    assert [tuple(b.shape[1:]) for b in out.block_outputs] == expected
    assert all(torch.isfinite(t).all() for t in [out.sample, *out.block_outputs])

    out.sample.square().mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_tiny_timestep_forms_and_batch_independence() -> None:
    torch.manual_seed(0)
    model = build_pixelhacker(pixelhacker_tiny_config()).eval()
    x = torch.randn(2, 9, 16, 24)
    ids = torch.tensor([list(range(10, 20)), list(range(10))])
    with torch.no_grad():
        ref = model(x, torch.tensor([881]), ids)
        for t in (881, 881.0, torch.tensor(881), torch.tensor([881, 881])):
            torch.testing.assert_close(model(x, t, ids), ref, rtol=0, atol=0)
        # No batch coupling (no BatchNorm): each row alone gives its row of the batch.
        torch.testing.assert_close(model(x[1:], 881, ids[1:]), ref[1:], rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_parity_with_official_forward() -> None:
    """Formula weights, eval mode, the stored inputs: the official sample and block outputs."""
    # Through the public loader, which tells the teacher from the student by its keys.
    model = load_official(formula_state_dict(load_layout("teacher")))
    assert isinstance(model.diff_model, PixelHackerUNet) and not model.training
    ref = load_file(str(PARITY_DIR / "teacher_forward.safetensors"))
    with torch.no_grad():
        out = model(ref["x"], ref["timesteps"], ref["input_ids"], return_block_outputs=True)

    torch.testing.assert_close(out.sample, ref["sample"], rtol=0, atol=5e-5)
    assert len(out.block_outputs) == 9
    for i, block in enumerate(out.block_outputs):
        torch.testing.assert_close(block.mean(dim=(2, 3)), ref[f"block{i}_chmean"], rtol=0, atol=1e-4)
        first = ref[f"block{i}_row1_first4096"]
        torch.testing.assert_close(block[1].reshape(-1)[:4096], first, rtol=0, atol=1e-5 * first.abs().max().item())
    kd = ref["kd_target_block5_full"]
    torch.testing.assert_close(out.block_outputs[5], kd, rtol=0, atol=1e-5 * kd.abs().max().item())
