"""The inpainting pipeline with every scheduler, the guidance interval, and 0/1-step requests (tiny models)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from moebius.errors import ConfigError, InputError
from moebius.models.denoiser import BACKGROUND_IDS
from moebius.pipeline import get_preset
from moebius.schedulers.registry import SCHEDULER_NAMES, make_scheduler
from test_pipeline import _Spy, run, scene, tiny_pipeline


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline(fast=False)


@pytest.fixture(scope="module")
def fast_pipe():
    return tiny_pipeline()  # the fast U-Net shares one input between the CFG halves


@pytest.mark.parametrize("steps, strength", [(3, 1.0), (5, 0.6)])  # 3 steps: UniPC's order-2 corrector runs
@pytest.mark.parametrize("name", SCHEDULER_NAMES)
def test_the_loop_feeds_each_scheduler_one_trajectory_in_order(pipe, name, steps, strength):
    image, mask = scene()
    record: dict[str, torch.Tensor] = {}
    out = run(pipe, image, mask, scheduler=name, num_inference_steps=steps, strength=strength, intermediates=record)
    meta = out.metadata[0]
    assert meta.scheduler == name and meta.settings["scheduler"] == name
    assert json.loads(meta.to_json())["scheduler"] == name

    # Replay the recorded model outputs through a fresh scheduler: every step must agree bit for bit,
    # which holds only if the pipeline kept one scheduler (and so one history) for the whole trajectory.
    scheduler = make_scheduler(name, pipe.scheduler_config)
    scheduler.set_timesteps(steps)
    timesteps = scheduler.timesteps_for_strength(strength)
    assert torch.equal(record["timesteps_run"], timesteps) and meta.steps_run == len(timesteps)
    latents = record["latents_init"]
    if strength < 1.0:  # noised to the first timestep of this scheduler's own layout
        expected = scheduler.add_noise(record["image_latents"], record["noise_total"], timesteps[:1])
        assert torch.equal(latents, expected)
    for i, t in enumerate(timesteps.tolist()):
        latents = scheduler.step(record[f"step{i:02d}_eps_cfg"], t, latents).prev_sample
        assert torch.equal(latents, record[f"step{i:02d}_latents_after"]), i


def test_solvers_change_the_result_and_the_default_stays_ddim(pipe):
    image, mask = scene()
    results = {name: run(pipe, image, mask, scheduler=name, num_inference_steps=3).images[0]
               for name in SCHEDULER_NAMES}
    assert np.array_equal(results["ddim"], run(pipe, image, mask, num_inference_steps=3).images[0])
    for a in SCHEDULER_NAMES:
        for b in SCHEDULER_NAMES:
            if a < b:
                assert not np.array_equal(results[a], results[b]), (a, b)
    for preset in ("official", "default", "portrait"):
        assert get_preset(preset).scheduler == "ddim" and get_preset(preset).guidance_interval == (0.0, 1.0)


def test_fast_preset_runs_unipc_with_guidance_on_the_first_half():
    pipe = tiny_pipeline(fast=False)
    spy = _Spy(pipe.unet)
    pipe.unet = spy
    image, mask = scene()
    out = pipe(image, mask, preset="fast", seed=3, output_type="np")
    meta = out.metadata[0]
    assert (meta.preset, meta.scheduler, meta.num_inference_steps, meta.steps_run) == ("fast", "unipc", 8, 8)
    assert tuple(meta.settings["guidance_interval"]) == (0.0, 0.5)
    assert [batch for batch, _ in spy.calls] == [2] * 4 + [1] * 4
    spelled_out = pipe(image, mask, scheduler="unipc", num_inference_steps=8, guidance_interval=(0, 0.5), seed=3,
                       output_type="np")
    assert np.array_equal(out.images[0], spelled_out.images[0])


def test_unknown_scheduler_is_a_config_error(pipe):
    image, mask = scene()
    with pytest.raises(ConfigError, match="scheduler must be one of ddim, dpmpp-2m, dpmpp-2m-karras, unipc"):
        run(pipe, image, mask, scheduler="euler")


# ----------------------------------------------------------------------------------------------------
# Guidance interval


def test_steps_outside_the_guidance_interval_run_the_conditional_batch_alone():
    pipe = tiny_pipeline(fast=False)
    spy = _Spy(pipe.unet)
    pipe.unet = spy
    image, mask = scene()
    record: dict[str, torch.Tensor] = {}
    run(pipe, image, mask, num_inference_steps=4, guidance_scale=2.5, guidance_interval=(0.0, 0.5),
        intermediates=record)
    assert [batch for batch, _ in spy.calls] == [2, 2, 1, 1]
    assert all(ids.tolist() == [list(BACKGROUND_IDS)] for _, ids in spy.calls[2:])

    # The last two steps are exactly a batch-1 conditional run from the latents CFG left behind.
    scheduler = make_scheduler("ddim", pipe.scheduler_config)
    scheduler.set_timesteps(4)
    conditions = torch.cat([record["mask_latent"], record["masked_image_latents"]], dim=1)
    ids = torch.tensor([BACKGROUND_IDS])
    latents = record["step01_latents_after"]
    for t in scheduler.timesteps[2:].tolist():
        eps = spy.inner(torch.cat([latents, conditions], dim=1), torch.tensor([t]), ids)
        latents = scheduler.step(eps, t, latents).prev_sample
    assert torch.equal(latents, record["step03_latents_after"])


@pytest.mark.parametrize("name", ["ddim", "unipc"])
def test_guidance_interval_bounds_on_the_fast_path(fast_pipe, name):
    image, mask = scene()

    def result(**kwargs):
        return run(fast_pipe, image, mask, scheduler=name, num_inference_steps=3, guidance_scale=2.5, **kwargs)

    full = result().images[0]
    assert np.array_equal(result(guidance_interval=(0.0, 1.0)).images[0], full)
    no_cfg = run(fast_pipe, image, mask, scheduler=name, num_inference_steps=3, guidance_scale=1.0).images[0]
    empty = result(guidance_interval=(0.5, 0.5))
    assert np.array_equal(empty.images[0], no_cfg)
    assert empty.metadata[0].settings["guidance_interval"] == (0.5, 0.5)
    part = result(guidance_interval=[0.0, 0.4]).images[0]  # a list (as JSON gives it) is accepted
    assert not np.array_equal(part, full) and not np.array_equal(part, no_cfg)


@pytest.mark.parametrize("interval, message", [((0.6, 0.2), "0 <= start <= end <= 1"),
                                               ((0.0, 1.5), "0 <= start <= end <= 1"),
                                               ((0.5,), "a pair"), ("ab", "a pair")])
def test_bad_guidance_interval_is_a_config_error(pipe, interval, message):
    image, mask = scene()
    with pytest.raises(ConfigError, match=message):
        run(pipe, image, mask, guidance_interval=interval)


# ----------------------------------------------------------------------------------------------------
# Zero and one step


@pytest.mark.parametrize("name", SCHEDULER_NAMES)
def test_zero_steps_is_a_config_error(pipe, name):
    image, mask = scene()
    with pytest.raises(ConfigError, match="num_inference_steps must be a positive integer, got 0"):
        run(pipe, image, mask, scheduler=name, num_inference_steps=0)


@pytest.mark.parametrize("name", SCHEDULER_NAMES)
def test_one_step_runs_one_unet_call_at_the_layouts_single_timestep(name):
    pipe = tiny_pipeline(fast=False)
    spy = _Spy(pipe.unet)
    pipe.unet = spy
    image, mask = scene()
    record: dict[str, torch.Tensor] = {}
    out = run(pipe, image, mask, scheduler=name, num_inference_steps=1, intermediates=record)
    assert len(spy.calls) == 1 and out.metadata[0].steps_run == 1
    # DDIM's "leading" layout puts the one step at t = 0; the solvers' at t = 999, landing on σ = 0.
    assert record["timesteps_run"].tolist() == ([0] if name == "ddim" else [999])
    assert np.isfinite(record["step00_latents_after"].numpy()).all()
    with pytest.raises(InputError, match="runs no step at all"):
        run(pipe, image, mask, scheduler=name, num_inference_steps=1, strength=0.5)


# ----------------------------------------------------------------------------------------------------
# CLI and server


def test_cli_scheduler_option_reaches_the_output_metadata(tmp_path, pipe, capsys):
    from PIL import Image

    from moebius.cli import main
    weights = pipe.save_pretrained(tmp_path / "pipe")
    image, mask = scene()
    Image.fromarray(image).save(tmp_path / "photo.png")
    Image.fromarray(mask).save(tmp_path / "mask.png")
    out = tmp_path / "out.png"
    assert main(["inpaint", str(tmp_path / "photo.png"), str(tmp_path / "mask.png"), "-o", str(out), "--weights",
                 str(weights), "--scheduler", "dpmpp-2m-karras", "--steps", "2", "--quiet"]) == 0
    assert json.loads(Image.open(out).text["moebius"])["scheduler"] == "dpmpp-2m-karras"
    with pytest.raises(SystemExit):
        main(["inpaint", str(tmp_path / "photo.png"), str(tmp_path / "mask.png"), "-o", str(tmp_path / "x.png"),
              "--weights", str(weights), "--scheduler", "euler"])
    assert "invalid choice: 'euler'" in capsys.readouterr().err and not (tmp_path / "x.png").exists()


def test_server_options_take_a_scheduler():
    from pydantic import ValidationError

    from moebius.serve.schemas import InpaintOptions

    assert InpaintOptions(scheduler="unipc").call_options() == {"preset": "default", "scheduler": "unipc"}
    assert "scheduler" not in InpaintOptions().call_options()
    with pytest.raises(ValidationError, match="scheduler"):
        InpaintOptions(scheduler="euler")
