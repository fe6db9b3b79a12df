"""The AutoencoderKL: diffusers checkpoint layout, config parsing, and parity with the official trace.

Parity data: tests/data/parity/pipeline_trace_subset.safetensors (tests/data/parity/README.md),
with the VAE carrying the formula weights described there.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image
from safetensors.torch import load_file

from moebius.errors import ConfigError, InputError
from moebius.models.vae import (
    OFFICIAL_VAE_CONFIG,
    TINY_VAE_CONFIG,
    AutoencoderKL,
    VAEConfig,
    rename_legacy_attention_keys,
)
from parity_formula import PARITY_DIR, formula_state_dict, load_layout

TRACE_ATOL = 1e-4  # posterior mean/std, latents and decoded_01 all at 1e-4


def _diffusers_config() -> dict:
    return json.loads((PARITY_DIR / "vae_config.json").read_text())


def _max_diff(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return (actual - expected).abs().max().item()


# ----------------------------------------------------------------------------------------------------
# Layout and config


def test_state_dict_matches_diffusers_layout():
    layout = json.loads((PARITY_DIR / "vae_keys.json").read_text())
    with torch.device("meta"):
        state = AutoencoderKL.from_config_dict(_diffusers_config()).state_dict()
    assert list(state) == [e["key"] for e in layout]  # same keys, same order
    assert all(list(state[e["key"]].shape) == e["shape"] for e in layout)
    assert all(str(state[e["key"]].dtype).removeprefix("torch.") == e["dtype"] for e in layout)


def test_parameter_count_is_exact():
    with torch.device("meta"):
        vae = AutoencoderKL()
    assert sum(p.numel() for p in vae.parameters()) == 83_653_863


def test_official_config_json_is_the_default():
    config = VAEConfig.from_config_dict(_diffusers_config())
    assert config == OFFICIAL_VAE_CONFIG
    assert config.scaling_factor == 0.13025 and config.shift_factor is None
    assert config.downsample_factor == 8


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("down_block_types", ["DownEncoderBlock2D"] * 3 + ["AttnDownEncoderBlock2D"]),
        ("up_block_types", ["UpDecoderBlock2D"] * 3),
        ("act_fn", "gelu"),
        ("latents_mean", [0.0, 0.0, 0.0, 0.0]),
        ("_class_name", "AutoencoderTiny"),
        ("use_quantization", True),  # not a diffusers key at all
    ],
)
def test_unsupported_config_is_refused(key, value):
    config = _diffusers_config() | {key: value}
    with pytest.raises(ConfigError, match=key):
        VAEConfig.from_config_dict(config)


def test_invalid_config_values_are_refused():
    with pytest.raises(ConfigError, match="norm_num_groups"):
        VAEConfig(block_out_channels=(8, 20), norm_num_groups=8)
    with pytest.raises(ConfigError, match="scaling_factor"):
        VAEConfig(scaling_factor=0.0)


def test_optional_parts_drop_their_keys():
    config = VAEConfig(
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=4,
        mid_block_add_attention=False,
        use_quant_conv=False,
        use_post_quant_conv=False,
    )
    keys = list(AutoencoderKL(config).state_dict())
    assert not any(".attentions." in k or "quant_conv" in k for k in keys)


# ----------------------------------------------------------------------------------------------------
# Tiny autoencoder: shapes, sampling, scaling, dtype, legacy keys


@pytest.fixture
def tiny_vae() -> AutoencoderKL:
    torch.manual_seed(0)
    return AutoencoderKL(TINY_VAE_CONFIG).eval()


def test_tiny_round_trip_non_square(tiny_vae):
    x = torch.rand(2, 3, 24, 40) * 2 - 1
    with torch.no_grad():
        posterior = tiny_vae.encode(x)
        assert posterior.mean.shape == posterior.std.shape == (2, 4, 12, 20)
        assert torch.all(posterior.std > 0)
        assert torch.equal(posterior.mode(), posterior.mean)
        image = tiny_vae.decode(posterior.sample(torch.Generator().manual_seed(1)))
    assert image.shape == x.shape and image.dtype == x.dtype


def test_sampling_is_reproducible_from_a_generator(tiny_vae):
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        a = tiny_vae.encode_latents(x, torch.Generator().manual_seed(7))
        b = tiny_vae.encode_latents(x, torch.Generator().manual_seed(7))
        c = tiny_vae.encode_latents(x, torch.Generator().manual_seed(8))
        posterior = tiny_vae.encode(x)
        noise = torch.randn(posterior.mean.shape, generator=torch.Generator().manual_seed(7))
        d = posterior.sample(noise=noise) * TINY_VAE_CONFIG.scaling_factor
    assert torch.equal(a, b) and not torch.equal(a, c)
    torch.testing.assert_close(a, d, rtol=0, atol=0)


def test_latent_scaling_and_shift(tiny_vae):
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    z = torch.randn(1, 4, 8, 8)
    with torch.no_grad():
        mean = tiny_vae.encode(x).mean
        torch.testing.assert_close(tiny_vae.encode_latents(x, sample=False), mean * 0.13025)
        torch.testing.assert_close(tiny_vae.decode_latents(z), tiny_vae.decode(z / 0.13025))
        shifted = AutoencoderKL(dataclasses.replace(TINY_VAE_CONFIG, shift_factor=0.5)).eval()
        shifted.load_state_dict(tiny_vae.state_dict())
        torch.testing.assert_close(shifted.encode_latents(x, sample=False), (mean - 0.5) * 0.13025)
        torch.testing.assert_close(shifted.decode_latents(z), tiny_vae.decode(z / 0.13025 + 0.5))


def test_dtype_is_kept(tiny_vae):
    vae = tiny_vae.double()
    x = torch.rand(1, 3, 8, 8, dtype=torch.float64) * 2 - 1
    with torch.no_grad():
        z = vae.encode_latents(x, torch.Generator().manual_seed(0))
        assert z.dtype == torch.float64
        assert vae.decode_latents(z).dtype == torch.float64


def test_bad_input_shapes_are_refused(tiny_vae):
    with pytest.raises(InputError, match="multiples of 2"):
        tiny_vae.encode(torch.zeros(1, 3, 15, 16))
    with pytest.raises(InputError):
        tiny_vae.encode(torch.zeros(1, 4, 16, 16))
    with pytest.raises(InputError):
        tiny_vae.decode(torch.zeros(1, 3, 8, 8))
    with pytest.raises(InputError, match="noise shape"):
        tiny_vae.encode(torch.zeros(1, 3, 16, 16)).sample(noise=torch.zeros(1, 4, 4, 4))


def _legacy_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The pre-2023 diffusers spelling of the mid-block attention projections."""
    renames = {".to_q.": ".query.", ".to_k.": ".key.", ".to_v.": ".value.", ".to_out.0.": ".proj_attn."}
    out = {}
    for key, value in state.items():
        for new, old in renames.items():
            key = key.replace(new, old)
        out[key] = value
    return out


def test_legacy_attention_keys_load(tiny_vae):
    legacy = _legacy_names(tiny_vae.state_dict())
    assert "encoder.mid_block.attentions.0.query.weight" in legacy
    fresh = AutoencoderKL(TINY_VAE_CONFIG)
    fresh.load_state_dict(legacy)  # strict
    for key, value in tiny_vae.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key


def test_legacy_attention_keys_load_when_nested(tiny_vae):
    holder = nn.Module()
    holder.vae = AutoencoderKL(TINY_VAE_CONFIG)
    holder.load_state_dict({f"vae.{k}": v for k, v in _legacy_names(tiny_vae.state_dict()).items()})
    assert torch.equal(holder.vae.decoder.mid_block.attentions[0].to_out[0].weight,
                       tiny_vae.decoder.mid_block.attentions[0].to_out[0].weight)


def test_rename_refuses_both_spellings():
    state = {"a.query.weight": torch.zeros(1), "a.to_q.weight": torch.zeros(1)}
    with pytest.raises(ValueError, match="both"):
        rename_legacy_attention_keys(state, "a.")


# ----------------------------------------------------------------------------------------------------
# Parity with the official pipeline trace (full-size VAE, formula weights, 512x512)


@pytest.fixture(scope="module")
def trace() -> dict[str, torch.Tensor]:
    return load_file(str(PARITY_DIR / "pipeline_trace_subset.safetensors"))


@pytest.fixture(scope="module")
def formula_vae() -> AutoencoderKL:
    vae = AutoencoderKL.from_config_dict(_diffusers_config()).eval()
    vae.load_state_dict(formula_state_dict(load_layout("vae")))
    return vae


@pytest.fixture(scope="module")
def pipeline_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    """The official pipeline's ``image`` and ``masked_image``, rebuilt from the PNGs."""
    rgb = np.asarray(Image.open(PARITY_DIR / "test_image.png").convert("RGB"))
    mask = np.asarray(Image.open(PARITY_DIR / "test_mask.png").convert("L"))
    # The official preprocessing computes uint8/255*2-1 in float64 before casting; float32 differs by 6e-8.
    image = torch.from_numpy((rgb.astype(np.float64) / 255 * 2 - 1).astype(np.float32))
    image = image.permute(2, 0, 1).unsqueeze(0).contiguous()  # (1, 3, 512, 512)
    hole = torch.from_numpy(mask >= 127.5).to(torch.float32)[None, None]  # (1, 1, 512, 512), 1 = hole
    return image, image * (1 - hole)


@pytest.mark.slow
@pytest.mark.parametrize(("which", "stream"), [("image", 3000), ("masked_image", 3001)])
def test_encode_matches_official(formula_vae, trace, pipeline_inputs, which, stream):
    x = pipeline_inputs[0] if which == "image" else pipeline_inputs[1]
    with torch.inference_mode():
        posterior = formula_vae.encode(x)
    prefix = f"vae_sample_{which}"
    assert _max_diff(posterior.mean, trace[f"{prefix}_posterior_mean"]) <= TRACE_ATOL
    assert _max_diff(posterior.std, trace[f"{prefix}_posterior_std"]) <= TRACE_ATOL
    # The official pipeline samples the posterior; the recorded draw makes that deterministic.
    latents = posterior.sample(noise=trace[f"noise_stream{stream}_{prefix}"]) * formula_vae.config.scaling_factor
    assert _max_diff(latents, trace[f"{which}_latents"]) <= TRACE_ATOL


@pytest.mark.slow
def test_decode_matches_official(formula_vae, trace):
    final_latents = trace["step18_latents_after"]  # the trace's final_latents is a copy of this
    # The decoder's recorded input is final_latents / 0.13025; decode_latents must divide the same way.
    torch.testing.assert_close(final_latents / formula_vae.config.scaling_factor, trace["vae_decode_in"])
    with torch.inference_mode():
        decoded = formula_vae.decode_latents(final_latents)
    assert _max_diff((decoded + 1) / 2, trace["decoded_01_before_paste"]) <= TRACE_ATOL
