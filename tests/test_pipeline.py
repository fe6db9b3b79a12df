"""MoebiusInpaintPipeline with tiny random-weight models: presets, seeds, batching, geometry, weights.

The U-Net is ``moebius-tiny`` and the VAE a four-level (f8) toy, so working sizes are multiples of 32 px
as with the real models, and a call takes a fraction of a second.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

from moebius import create_model
from moebius.errors import CheckpointError, ConfigError, InputError
from moebius.models.vae import AutoencoderKL, VAEConfig
from moebius.pipeline import InpaintPreset, MoebiusInpaintPipeline, NoiseDraws, get_preset, list_presets
from moebius.pipeline import blend, masks
from moebius.weights.vae import vae_config_dict

TINY_F8_VAE = VAEConfig(block_out_channels=(8, 8, 16, 16), layers_per_block=1, norm_num_groups=4)
STEPS = 2


def tiny_pipeline(seed: int = 0, **kwargs) -> MoebiusInpaintPipeline:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        unet = create_model("moebius-tiny")
        vae = AutoencoderKL(TINY_F8_VAE)
    pipe = MoebiusInpaintPipeline(unet, vae, **kwargs)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def pipe() -> MoebiusInpaintPipeline:
    return tiny_pipeline()


def scene(width: int = 96, height: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A smooth random RGB image (H, W, 3) uint8 and a rectangular mask (H, W) uint8 (255 = fill)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([128 + 100 * np.sin(x / 9 + rng.random() * 6 + c) * np.cos(y / 7 + c) for c in range(3)], -1)
    mask = np.zeros((height, width), np.uint8)
    mask[height // 4: height // 2, width // 3: width // 2] = 255
    return rgb.clip(0, 255).astype(np.uint8), mask


def run(pipe, image, mask, **kwargs):
    kwargs.setdefault("num_inference_steps", STEPS)
    kwargs.setdefault("seed", 0)
    return pipe(image, mask, output_type="np", **kwargs)


# ----------------------------------------------------------------------------------------------------
# Presets


def test_presets_hold_the_issue_settings():
    official, default, portrait = get_preset("official"), get_preset("default"), get_preset("portrait")
    assert (official.num_inference_steps, official.strength, official.noise_offset) == (20, 0.99, 0.0357)
    assert official.sample_posterior and official.seed == 0 and official.size_rule == "official"
    assert (official.paste, official.quantize, official.mask_downsample) == ("official", "truncate", "nearest")
    assert (default.strength, default.sample_posterior, default.seed, default.guidance_scale) == (1.0, False, None, 2.5)
    assert (default.size_rule, default.hd_strategy, default.paste) == ("native", "crop", "keep_unmasked")
    assert portrait.guidance_scale == 2.0
    assert list_presets() == ["default", "fast", "official", "portrait"]
    fast = get_preset("fast")
    assert (fast.scheduler, fast.num_inference_steps, fast.guidance_interval) == ("unipc", 8, (0.0, 0.5))
    assert fast.replace(name="default", scheduler="ddim", num_inference_steps=20, guidance_interval=(0, 1)) == default


def test_unknown_and_invalid_options_are_refused(pipe):
    image, mask = scene()
    with pytest.raises(ConfigError, match="hd_stratgy"):
        run(pipe, image, mask, hd_stratgy="crop")
    with pytest.raises(ConfigError, match="hd_strategy"):
        run(pipe, image, mask, hd_strategy="tiles")
    with pytest.raises(ConfigError, match="strength"):
        run(pipe, image, mask, strength=0.0)
    with pytest.raises(ConfigError, match="unknown preset"):
        run(pipe, image, mask, preset="fastest")
    with pytest.raises(InputError, match="output_type"):
        pipe(image, mask, output_type="latent")


def test_metadata_records_preset_seed_steps_and_guidance(pipe):
    image, mask = scene()
    meta = run(pipe, image, mask, seed=7, guidance_scale=2.0).metadata[0]
    assert (meta.preset, meta.seed, meta.num_inference_steps, meta.steps_run, meta.guidance_scale) == \
        ("default", 7, STEPS, STEPS, 2.0)
    assert meta.settings["guidance_scale"] == 2.0 and meta.size == (96, 64) and not meta.skipped
    assert json.loads(meta.to_json())["seed"] == 7


def test_custom_preset_object(pipe):
    image, mask = scene()
    preset = InpaintPreset(name="mine", num_inference_steps=1, guidance_scale=1.0)
    assert run(pipe, image, mask, preset=preset, num_inference_steps=None).metadata[0].preset == "mine"


# ----------------------------------------------------------------------------------------------------
# Seeds and noise


def test_same_seed_same_bytes_different_seeds_differ(pipe):
    image, mask = scene()
    a = run(pipe, image, mask, seed=3).images[0]
    b = run(pipe, image, mask, seed=3).images[0]
    c = run(pipe, image, mask, seed=4).images[0]
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_unseeded_call_records_a_seed_that_reproduces_it(pipe):
    image, mask = scene()
    first = pipe(image, mask, num_inference_steps=STEPS, output_type="np")
    again = run(pipe, image, mask, seed=first.metadata[0].seed)
    assert np.array_equal(first.images[0], again.images[0])


def test_generator_and_seed_agree(pipe):
    image, mask = scene()
    by_seed = run(pipe, image, mask, seed=11).images[0]
    by_gen = run(pipe, image, mask, seed=None, generator=torch.Generator().manual_seed(11))
    assert np.array_equal(by_seed, by_gen.images[0]) and by_gen.metadata[0].seed == 11
    with pytest.raises(InputError, match="either"):
        run(pipe, image, mask, seed=1, generator=torch.Generator())


def test_official_preset_is_seed_zero_by_default(pipe):
    image, mask = scene(64, 64)
    a = pipe(image, mask, preset="official", num_inference_steps=STEPS, native_size=64, output_type="np")
    b = pipe(image, mask, preset="official", num_inference_steps=STEPS, native_size=64, output_type="np")
    assert np.array_equal(a.images[0], b.images[0]) and a.metadata[0].seed == 0


def test_explicit_noise_replaces_the_generator(pipe):
    image, mask = scene(64, 64)
    g = torch.Generator().manual_seed(0)
    noise = NoiseDraws(initial=torch.randn(1, 4, 8, 8, generator=g), offset=torch.randn(1, 4, 1, 1, generator=g))
    a = run(pipe, image, mask, seed=1, noise=noise).images[0]
    b = run(pipe, image, mask, seed=2, noise=noise).images[0]
    assert np.array_equal(a, b)
    with pytest.raises(InputError, match="noise.initial"):
        run(pipe, image, mask, noise=NoiseDraws(initial=torch.randn(1, 4, 4, 4)))


def test_random_state_of_torch_is_untouched(pipe):
    image, mask = scene()
    state = torch.random.get_rng_state()
    run(pipe, image, mask)
    run(pipe, image, mask, preset="official", native_size=64)
    assert torch.equal(state, torch.random.get_rng_state())


# ----------------------------------------------------------------------------------------------------
# Batches and guidance


class _Spy(nn.Module):
    """Wraps a U-Net and records the batch size and ids of every call."""

    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        self.inner = unet
        self.calls: list[tuple[int, torch.Tensor]] = []

    @property
    def config(self):
        return self.inner.config

    def forward(self, x, t, ids):
        self.calls.append((x.shape[0], ids.clone()))
        return self.inner(x, t, ids)


def test_batch_goes_through_the_unet_together_in_cfg_order():
    pipe = tiny_pipeline(fast=False)
    spy = _Spy(pipe.unet)
    pipe.unet = spy
    (img1, mask), (img2, _) = scene(seed=1), scene(seed=2)
    pipe([img1, img2], mask, num_inference_steps=STEPS, seed=0, output_type="np")
    assert len(spy.calls) == STEPS
    batch, ids = spy.calls[0]
    assert batch == 4  # 2 images x (uncond, cond)
    assert ids.tolist() == [list(range(10, 20))] * 2 + [list(range(10))] * 2


def test_guidance_one_skips_the_unconditional_branch():
    pipe = tiny_pipeline(fast=False)
    spy = _Spy(pipe.unet)
    pipe.unet = spy
    image, mask = scene()
    pipe(image, mask, num_inference_steps=1, guidance_scale=1.0, seed=0)
    assert spy.calls[0][0] == 1 and spy.calls[0][1].tolist() == [list(range(10))]


def test_batched_result_equals_single_results(pipe):
    (img1, mask), (img2, _) = scene(seed=1), scene(seed=2)
    both = pipe([img1, img2], mask, num_inference_steps=STEPS, seed=[5, 9], output_type="np").images
    one = run(pipe, img1, mask, seed=5).images[0]
    two = run(pipe, img2, mask, seed=9).images[0]
    for batched, single in ((both[0], one), (both[1], two)):
        assert np.abs(batched.astype(int) - single).max() <= 1  # batched float rounding may flip a level


def test_images_of_different_sizes_in_one_call(pipe):
    img1, mask1 = scene(96, 64)
    img2, mask2 = scene(50, 70)
    out = pipe([img1, img2], [mask1, mask2], num_inference_steps=1, seed=0, output_type="np")
    assert out.images[0].shape == (64, 96, 3) and out.images[1].shape == (70, 50, 3)


def test_mask_count_must_match(pipe):
    image, mask = scene()
    with pytest.raises(InputError, match="2 masks for 3 images"):
        pipe([image] * 3, [mask] * 2)


# ----------------------------------------------------------------------------------------------------
# The default preset's geometry and paste-back


@pytest.mark.parametrize("size", [(96, 64), (61, 93), (33, 17)])
def test_original_size_kept_and_outside_pixels_byte_identical(pipe, size):
    image, mask = scene(*size)
    out = run(pipe, image, mask).images[0]
    assert out.shape == image.shape
    hole = mask >= 128
    band = masks.feather_alpha(hole, 3.0) > 0
    assert np.array_equal(out[~band], image[~band])  # untouched outside the hole and its feather band
    assert (out[hole] != image[hole]).any()
    grown = masks.dilate(hole, 12)
    assert not (band & ~grown).any()  # the band is thin (radius-3 blur: under 12 px)


def test_empty_mask_returns_the_input_unchanged():
    pipe = tiny_pipeline(fast=False)
    spy = _Spy(pipe.unet)
    pipe.unet = spy
    image, _ = scene()
    out = pipe(image, np.zeros(image.shape[:2], np.uint8), output_type="np")
    assert np.array_equal(out.images[0], image) and out.metadata[0].skipped and not spy.calls


def test_strength_below_one_uses_the_image_latents(pipe):
    image, mask = scene()
    out = run(pipe, image, mask, strength=0.5, num_inference_steps=4)
    assert out.metadata[0].steps_run == 2


def test_thin_strokes_survive_the_latent_mask():
    hole = torch.zeros(1, 1, 64, 64)
    hole[..., 20:44, 13] = 1  # a 1-px vertical line not on the 8-px grid
    assert masks.latent_mask(hole, 8, "nearest").sum() == 0  # the official rule loses it
    assert masks.latent_mask(hole, 8, "max").sum() == 4  # rows 20-43: cells 2-5


def test_paste_none_returns_the_raw_decode(pipe):
    image, mask = scene()
    raw = run(pipe, image, mask, paste="none").images[0]
    kept = run(pipe, image, mask).images[0]
    hole = mask >= 128
    assert np.array_equal(raw[hole], kept[hole])
    assert not np.array_equal(raw[~hole], image[~hole])


def test_official_preset_squashes_to_its_square_and_pastes_with_compensation(pipe):
    image, mask = scene(96, 64)
    record: dict[str, torch.Tensor] = {}
    out = pipe(image, mask, preset="official", native_size=64, num_inference_steps=STEPS, compensate=True,
               output_type="np", intermediates=record)
    assert out.images[0].shape == (64, 64, 3) and out.metadata[0].hd_strategy == "official"
    generated = (record["decoded_01_before_paste"][0].clamp(0, 1) * 255).to(torch.uint8).permute(1, 2, 0).numpy()
    square = np.asarray(Image.fromarray(image).resize((64, 64), Image.BICUBIC))
    hole = np.asarray(Image.fromarray(mask).resize((64, 64), Image.NEAREST)) >= 128
    expected, _ = blend.paste_official(generated, square, hole, compensate=True)
    assert np.array_equal(out.images[0], expected)


# ----------------------------------------------------------------------------------------------------
# Outputs, callbacks, intermediates, progress


def test_output_types(pipe):
    image, mask = scene()
    as_np = run(pipe, image, mask).images[0]
    as_pil = pipe(image, mask, num_inference_steps=STEPS, seed=0).images[0]
    as_pt = pipe(image, mask, num_inference_steps=STEPS, seed=0, output_type="pt").images[0]
    assert isinstance(as_pil, Image.Image) and np.array_equal(np.asarray(as_pil), as_np)
    assert as_pt.shape == (3, 64, 96) and torch.equal((as_pt * 255).round().to(torch.uint8).permute(1, 2, 0),
                                                       torch.from_numpy(as_np))


def test_callback_and_intermediates(pipe):
    image, mask = scene()
    seen = []
    record: dict[str, torch.Tensor] = {}

    def callback(p, step, timestep, callback_kwargs):  # diffusers' signature
        info = callback_kwargs["step_info"]
        seen.append((p is pipe, step, timestep, info.num_steps, callback_kwargs["latents"].shape))
        return callback_kwargs

    run(pipe, image, mask, num_inference_steps=3, callback_on_step_end=callback, intermediates=record)
    assert seen == [(True, i, t, 3, (1, 4, 8, 12)) for i, t in enumerate((666, 333, 0))]
    assert {"masked_image_latents", "mask_latent", "latents_init", "step02_eps_cfg", "decoded_01_before_paste"} <= set(record)
    assert record["mask_latent"].shape == (1, 1, 8, 12)  # 64 x 96 px / 8


def test_latents_returned_by_the_step_callback_are_continued_from(pipe):
    image, mask = scene()
    plain = run(pipe, image, mask).images[0]
    unchanged = run(pipe, image, mask, callback_on_step_end=lambda p, i, t, kw: kw).images[0]
    assert np.array_equal(unchanged, plain)

    def zero_latents(p, step, timestep, callback_kwargs):
        return {"latents": torch.zeros_like(callback_kwargs["latents"])}

    zeroed = run(pipe, image, mask, callback_on_step_end=zero_latents).images[0]
    assert not np.array_equal(zeroed, plain)
    assert np.array_equal(zeroed, run(pipe, image, mask, seed=1, callback_on_step_end=zero_latents).images[0])
    with pytest.raises(InputError, match="noise_pred"):
        run(pipe, image, mask, callback_on_step_end=lambda *a: None, callback_on_step_end_tensor_inputs=["noise_pred"])


def test_pil_output_carries_the_inputs_exif_and_colour_profile(pipe, tmp_path):
    from PIL import ImageCms

    image, mask = scene()
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = Image.Exif()
    exif[0x010F] = "moebius test camera"  # Make
    Image.fromarray(image).save(tmp_path / "photo.jpg", exif=exif, icc_profile=icc, quality=95)
    out = pipe(tmp_path / "photo.jpg", mask, num_inference_steps=STEPS, seed=0).images[0]
    assert out.info["icc_profile"] == icc and out.getexif()[0x010F] == "moebius test camera"
    out.save(tmp_path / "out.png")
    assert Image.open(tmp_path / "out.png").info["icc_profile"] == icc
    bare = pipe(image, mask, num_inference_steps=STEPS, seed=0).images[0]
    assert "exif" not in bare.info and "icc_profile" not in bare.info


def test_a_generator_on_the_cpu_or_the_gpu_is_accepted(pipe):
    image, mask = scene()
    on_cpu = run(pipe, image, mask, seed=None, generator=torch.Generator("cpu").manual_seed(0)).images[0]
    assert np.array_equal(on_cpu, run(pipe, image, mask, seed=None, generator=torch.Generator().manual_seed(0)).images[0])
    if torch.cuda.is_available():  # the draws are made on the generator's device, then moved to the CPU
        gpu = [run(pipe, image, mask, seed=None, generator=[torch.Generator("cuda").manual_seed(0)]).images[0]
               for _ in range(2)]
        assert np.array_equal(gpu[0], gpu[1])
        assert not np.array_equal(gpu[0], on_cpu)


def test_progress_bar_can_be_shown_and_hidden():
    pipe = tiny_pipeline()
    image, mask = scene()
    stream = io.StringIO()
    pipe.set_progress_bar_config(disable=False, stream=stream)
    run(pipe, image, mask)
    assert f"{STEPS}/{STEPS}" in stream.getvalue()
    stream = io.StringIO()
    pipe.set_progress_bar_config(disable=True, stream=stream)
    run(pipe, image, mask)
    assert stream.getvalue() == ""


def test_fast_path_gives_the_same_image(pipe):
    image, mask = scene()
    slow = tiny_pipeline(fast=False)
    a, b = run(pipe, image, mask).images[0], run(slow, image, mask).images[0]
    assert np.abs(a.astype(int) - b).max() <= 1


def test_to_dtype_runs_in_bfloat16():
    pipe = tiny_pipeline().to(dtype=torch.bfloat16)
    assert pipe.dtype == torch.bfloat16 and pipe.vae.encoder.conv_in.weight.dtype == torch.bfloat16
    image, mask = scene()
    assert run(pipe, image, mask).images[0].shape == image.shape


def test_fast_vae_is_nchw_in_float32_and_channels_last_in_reduced_precision():
    """The fast autoencoder copy runs in every precision; float32 keeps the NCHW layout, whose convolutions
    stay within the official trace's parity tolerance (tests/test_pipeline_parity.py)."""
    from moebius.models.fast import PhaseUpsample

    def fast_vae(pipe):
        vae = pipe._models().vae
        assert vae is not pipe.vae and any(isinstance(m, PhaseUpsample) for m in vae.modules())
        return vae

    exact = fast_vae(tiny_pipeline())
    assert not exact.encoder.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    low = fast_vae(tiny_pipeline().to(dtype=torch.bfloat16))
    assert low.encoder.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert all(p.dtype == torch.bfloat16 for p in low.parameters())


# ----------------------------------------------------------------------------------------------------
# Weights


def test_save_and_load_pretrained_round_trip(tmp_path, pipe):
    image, mask = scene()
    folder = pipe.save_pretrained(tmp_path / "pipe")
    assert {p.name for p in folder.iterdir()} == {"moebius_pipeline.json", "unet", "vae", "scheduler.json"}
    loaded = MoebiusInpaintPipeline.from_pretrained(folder)
    loaded.set_progress_bar_config(disable=True)
    assert np.array_equal(run(loaded, image, mask).images[0], run(pipe, image, mask).images[0])
    with pytest.raises(CheckpointError, match="already exists"):
        pipe.save_pretrained(folder)


def test_v_prediction_travels_with_the_folder_and_changes_the_sampling(tmp_path, pipe):
    from moebius.schedulers.ddim import DDIMConfig

    image, mask = scene()
    v_pipe = tiny_pipeline(scheduler_config=DDIMConfig(prediction_type="v_prediction"))
    loaded = MoebiusInpaintPipeline.from_pretrained(v_pipe.save_pretrained(tmp_path / "pipe"))
    loaded.set_progress_bar_config(disable=True)
    assert loaded.scheduler_config.prediction_type == "v_prediction"
    result = run(loaded, image, mask).images[0]
    assert np.array_equal(result, run(v_pipe, image, mask).images[0])
    assert not np.array_equal(result, run(pipe, image, mask).images[0])  # same weights, read as ε


def test_call_defaults_travel_with_the_folder_and_yield_to_explicit_choices(tmp_path):
    image, mask = scene()
    plain = tiny_pipeline()
    carrying = tiny_pipeline(defaults={"guidance_scale": 1.0})
    folder = carrying.save_pretrained(tmp_path / "pipe")
    assert json.loads((folder / "moebius_pipeline.json").read_text())["defaults"] == {"guidance_scale": 1.0}
    loaded = MoebiusInpaintPipeline.from_pretrained(folder)
    loaded.set_progress_bar_config(disable=True)
    assert loaded.defaults == {"guidance_scale": 1.0}

    def used(p, **kwargs):
        out = run(p, image, mask, **kwargs)
        return out.metadata[0].guidance_scale, out.images[0]

    # A named preset takes the folder's value; the same weights without it use the preset's CFG.
    (scale, with_default), (preset_scale, with_cfg) = used(loaded), used(plain)
    assert scale == 1.0 and preset_scale == get_preset("default").guidance_scale
    assert not np.array_equal(with_default, with_cfg)
    assert np.array_equal(with_default, used(plain, guidance_scale=1.0)[1])
    # An explicit argument or an InpaintPreset object wins over the folder.
    assert used(loaded, guidance_scale=2.0)[0] == 2.0
    assert used(loaded, preset=get_preset("portrait"))[0] == get_preset("portrait").guidance_scale


@pytest.mark.parametrize("defaults, message", [({"guidance_scale": 0.5}, "guidance_scale"),
                                               ({"steps": 3}, "unknown inpainting option"),
                                               ({"seed": 1}, "cannot be a pipeline default"), ([1], "mapping"),
                                               ({"guidance_scale": "2"}, "wrong type")])
def test_bad_call_defaults_are_refused(tmp_path, defaults, message):
    with pytest.raises(ConfigError, match=message):
        tiny_pipeline(defaults=defaults)
    folder = tiny_pipeline().save_pretrained(tmp_path / "pipe")
    info = json.loads((folder / "moebius_pipeline.json").read_text())
    (folder / "moebius_pipeline.json").write_text(json.dumps({**info, "defaults": defaults}))
    with pytest.raises(CheckpointError, match="'defaults'"):
        MoebiusInpaintPipeline.from_pretrained(folder)


def _write_official_layout(root, pipe, variants=("ft_places2",), vae_format="bin"):
    """The official folder layout. The tiny U-Net goes in our converted format (config.json +
    model.safetensors), which a variant folder may hold instead of the .bin (whose full-size architecture
    is inferred from the keys)."""
    from moebius.weights.serialization import save_model

    for variant in variants:
        save_model(pipe.unet, root / variant)
    (root / "vae").mkdir()
    (root / "vae" / "config.json").write_text(json.dumps(vae_config_dict(pipe.vae.config)))
    if vae_format == "bin":
        torch.save(pipe.vae.state_dict(), root / "vae" / "diffusion_pytorch_model.bin")
    else:
        from safetensors.torch import save_file

        save_file(pipe.vae.state_dict(), str(root / "vae" / "diffusion_pytorch_model.safetensors"))


@pytest.mark.parametrize("vae_format", ["bin", "safetensors"])
def test_official_layout_loads_with_variants(tmp_path, pipe, vae_format):
    image, mask = scene()
    _write_official_layout(tmp_path, pipe, ("pretrained", "ft_celebahq"), vae_format)
    loaded = MoebiusInpaintPipeline.from_pretrained(tmp_path, variant="ft_celebahq")
    loaded.set_progress_bar_config(disable=True)
    assert loaded.variant == "ft_celebahq"
    out = run(loaded, image, mask)
    assert out.metadata[0].variant == "ft_celebahq"
    assert np.array_equal(out.images[0], run(pipe, image, mask).images[0])
    assert MoebiusInpaintPipeline.from_pretrained(tmp_path).variant == "pretrained"  # ft_places2 absent


def test_official_bin_is_read_from_the_variant_folder(tmp_path, pipe):
    _write_official_layout(tmp_path, pipe, ())
    (tmp_path / "ft_places2").mkdir()
    torch.save(pipe.unet.state_dict(), tmp_path / "ft_places2" / "diffusion_pytorch_model.bin")
    # The .bin's keys select the full-size student, which the tiny weights do not fit: a clear error.
    with pytest.raises(CheckpointError, match="ft_places2 does not match the architecture"):
        MoebiusInpaintPipeline.from_pretrained(tmp_path)


def test_missing_weights_say_which_files_go_where(tmp_path):
    with pytest.raises(CheckpointError) as info:
        MoebiusInpaintPipeline.from_pretrained(tmp_path)
    message = str(info.value)
    assert str(tmp_path / "ft_places2" / "diffusion_pytorch_model.bin") in message
    assert str(tmp_path / "vae" / "config.json") in message and "hustvl/PixelHacker" in message
    (tmp_path / "pretrained").mkdir()
    (tmp_path / "pretrained" / "diffusion_pytorch_model.bin").write_bytes(b"")
    with pytest.raises(CheckpointError, match="variant 'ft_ffhq' is missing.*found: pretrained"):
        MoebiusInpaintPipeline.from_pretrained(tmp_path, variant="ft_ffhq")
    with pytest.raises(CheckpointError, match="VAE missing"):
        MoebiusInpaintPipeline.from_pretrained(tmp_path, variant="pretrained")


def test_torch_dtype_is_accepted_beside_dtype(tmp_path, pipe):
    folder = pipe.save_pretrained(tmp_path / "pipe")
    assert MoebiusInpaintPipeline.from_pretrained(folder, torch_dtype=torch.bfloat16).dtype == torch.bfloat16
    both = MoebiusInpaintPipeline.from_pretrained(folder, dtype=torch.bfloat16, torch_dtype=torch.bfloat16)
    assert both.dtype == torch.bfloat16
    with pytest.raises(InputError, match="disagree"):
        MoebiusInpaintPipeline.from_pretrained(folder, dtype=torch.float32, torch_dtype=torch.bfloat16)


def test_any_owner_name_is_a_hub_id_unless_such_a_folder_exists(tmp_path, monkeypatch, pipe):
    import importlib.machinery
    import sys
    import types

    calls = []
    snapshot = pipe.save_pretrained(tmp_path / "hub-cache" / "snapshot")

    def snapshot_download(repo_id, local_files_only=False):
        calls.append((repo_id, local_files_only))
        return str(snapshot)

    fake = types.ModuleType("huggingface_hub")
    fake.__spec__ = importlib.machinery.ModuleSpec("huggingface_hub", None)
    fake.snapshot_download = snapshot_download
    monkeypatch.setitem(sys.modules, "huggingface_hub", fake)
    monkeypatch.chdir(tmp_path)
    loaded = MoebiusInpaintPipeline.from_pretrained("someone/moebius-finetune", local_files_only=True)
    assert calls == [("someone/moebius-finetune", True)]
    image, mask = scene()
    loaded.set_progress_bar_config(disable=True)
    assert np.array_equal(run(loaded, image, mask).images[0], run(pipe, image, mask).images[0])

    pipe.save_pretrained(tmp_path / "someone" / "local")
    MoebiusInpaintPipeline.from_pretrained("someone/local")  # a folder of that name wins
    assert len(calls) == 1
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # not installed
    with pytest.raises(CheckpointError, match=r"someone/other: no such local folder.*huggingface_hub"):
        MoebiusInpaintPipeline.from_pretrained("someone/other")


def test_hub_id_downloads_into_the_cache_once(tmp_path, monkeypatch, pipe):
    """``from_pretrained("hustvl/Moebius")`` with a stand-in for huggingface_hub (tests never use the network)."""
    import importlib.machinery
    import sys
    import types

    calls = []

    def snapshot_download(repo_id, allow_patterns, local_dir, local_files_only):
        calls.append((repo_id, tuple(allow_patterns), local_files_only))
        if repo_id == "hustvl/Moebius":
            from moebius.weights.serialization import save_model

            save_model(pipe.unet, local_dir / "ft_ffhq")
        else:
            (local_dir / "vae").mkdir(parents=True)
            (local_dir / "vae" / "config.json").write_text(json.dumps(vae_config_dict(pipe.vae.config)))
            torch.save(pipe.vae.state_dict(), local_dir / "vae" / "diffusion_pytorch_model.bin")

    fake = types.ModuleType("huggingface_hub")
    fake.__spec__ = importlib.machinery.ModuleSpec("huggingface_hub", None)
    fake.snapshot_download = snapshot_download
    monkeypatch.setitem(sys.modules, "huggingface_hub", fake)
    monkeypatch.setenv("MOEBIUS_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    loaded = MoebiusInpaintPipeline.from_pretrained("hustvl/Moebius", variant="ft_ffhq")
    assert loaded.variant == "ft_ffhq"
    assert calls == [("hustvl/Moebius", ("ft_ffhq/*",), False), ("hustvl/PixelHacker", ("vae/*",), False)]
    MoebiusInpaintPipeline.from_pretrained("hustvl/Moebius", variant="ft_ffhq", local_files_only=True)
    assert len(calls) == 2  # served from the cache folder
