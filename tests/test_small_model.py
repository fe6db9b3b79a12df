"""The small-model system: space-to-depth autoencoder, autoencoder training, time-limited runs, the recipe."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("accelerate")
yaml = pytest.importorskip("yaml")

from moebius.errors import ConfigError, InputError  # noqa: E402
from moebius.models.space_to_depth import SpaceToDepth, SpaceToDepthConfig  # noqa: E402
from moebius.weights.vae import load_vae, save_vae  # noqa: E402

from test_train import tiny_config, write_images  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TINY_STUDENT = ("{block_out_channels: [8, 16, 16], heads: 2, norm_num_groups: 4, cross_attention_dim: 8, "
                "encoder_hid_dim: 8, sample_size: 8, local_kernel_size: 3, in_channels: 25, out_channels: 12}")

pytestmark = pytest.mark.usefixtures("one_thread")


def test_space_to_depth_is_lossless_and_normalises():
    torch.manual_seed(0)
    images = [torch.rand(3, 3, 16, 24) * 1.2 - 0.9 for _ in range(2)]
    s2d = SpaceToDepth(SpaceToDepthConfig(factor=4)).fit(images)
    pixels = torch.cat(images)
    assert s2d.config.latent_channels == 48 and s2d.config.downsample_factor == 4
    z = s2d.encode(pixels).sample(noise=torch.randn(6, 48, 4, 6))  # noise is ignored: std 0
    assert z.shape == (6, 48, 4, 6)
    torch.testing.assert_close(s2d.decode(z), pixels, atol=1e-6, rtol=0)
    per_colour = z.unflatten(1, (3, 16)).transpose(0, 1).reshape(3, -1)
    torch.testing.assert_close(per_colour.mean(1), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(per_colour.std(1, correction=0), torch.ones(3), atol=1e-5, rtol=0)
    with pytest.raises(InputError, match="multiples of 4"):
        s2d.encode(torch.zeros(1, 3, 10, 16))
    with pytest.raises(InputError, match="no images"):
        SpaceToDepth().fit([])


def test_space_to_depth_saves_loads_and_runs_in_the_pipeline(tmp_path):
    from moebius import MoebiusInpaintPipeline
    from moebius.models import config_from_dict, config_to_dict, get_config
    from moebius.models.student import build_moebius
    from moebius.pipeline import masks

    s2d = SpaceToDepth(SpaceToDepthConfig(factor=2))
    with torch.no_grad():
        s2d.colour_mean.copy_(torch.tensor([0.1, -0.2, 0.0]))
        s2d.colour_std.copy_(torch.tensor([0.5, 0.6, 0.7]))
    save_vae(s2d, tmp_path / "ae")
    assert json.loads((tmp_path / "ae" / "config.json").read_text())["_class_name"] == "SpaceToDepth"
    loaded = load_vae(tmp_path / "ae")
    assert isinstance(loaded, SpaceToDepth) and loaded.config == s2d.config
    torch.testing.assert_close(loaded.colour_std.data, s2d.colour_std.data)

    config = config_from_dict({**config_to_dict(get_config("moebius-tiny")), "in_channels": 25, "out_channels": 12})
    torch.manual_seed(0)
    pipe = MoebiusInpaintPipeline(build_moebius(config).eval(), loaded)
    pipe.set_progress_bar_config(disable=True)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)
    mask = np.zeros((40, 56), np.uint8)
    mask[10:25, 20:40] = 255
    out = pipe(image, mask, num_inference_steps=2, seed=0, output_type="np").images[0]
    assert out.shape == image.shape
    band = masks.feather_alpha(mask >= 128, 3.0) > 0
    assert np.array_equal(out[~band], image[~band])  # untouched outside the hole and its feather band
    assert not np.array_equal(out[10:25, 20:40], image[10:25, 20:40])
    saved = pipe.save_pretrained(tmp_path / "pipe")
    assert isinstance(MoebiusInpaintPipeline.from_pretrained(saved).vae, SpaceToDepth)


def _autoencoder_config(tmp_path: Path, kind: str, *extra: str):
    from moebius.train.autoencoder import load_autoencoder_config

    images = write_images(tmp_path / "images")
    yaml_path = tmp_path / "ae.yaml"
    yaml_path.write_text(
        f"run: {{output_dir: {tmp_path / kind}, max_steps: 6, log_every: 1}}\n"
        f"model: {{kind: {kind}, block_out_channels: [8, 16], layers_per_block: 1, norm_num_groups: 4, factor: 2}}\n"
        f"data: {{image_dirs: [{images}], resolution: 16, batch_size: 4, num_workers: 0, stats_images: 8}}\n"
        "optim: {lr: 3.0e-3, warmup_steps: 1}\n")
    return load_autoencoder_config(yaml_path, list(extra))


def test_autoencoder_training_learns_and_sets_the_latent_scale(tmp_path):
    from moebius.models.vae import AutoencoderKL
    from moebius.train.autoencoder import AutoencoderTrainer

    trainer = AutoencoderTrainer(_autoencoder_config(tmp_path, "kl"))
    folder = trainer.run()
    history = trainer.history
    assert [h["step"] for h in history] == [1, 2, 3, 4, 5, 6]
    assert history[-1]["l1"] < history[0]["l1"]
    vae = load_vae(folder)
    assert isinstance(vae, AutoencoderKL) and vae.config.downsample_factor == 2
    # scaling_factor = 1 / std of the latents of the statistics images (the first 8 crops of the stream).
    batches = list(trainer._stats_batches())
    z = torch.cat([vae.encode(b).mode() for b in batches]).detach()
    assert vae.config.scaling_factor == pytest.approx(1 / z.std().item(), rel=0.05)
    summary = json.loads((tmp_path / "kl" / "summary.json").read_text())
    assert summary["steps"] == 6 and summary["scaling_factor"] == vae.config.scaling_factor


def test_autoencoder_fine_tunes_from_weights_with_a_perceptual_term(tmp_path):
    pytest.importorskip("stlpips_pytorch")
    from moebius.train.autoencoder import AutoencoderTrainer

    start = AutoencoderTrainer(_autoencoder_config(tmp_path, "kl")).run()
    config = _autoencoder_config(tmp_path, "kl", f"model.init_weights={start}", "loss.perceptual_weight=0.5",
                                 "run.max_steps=2", f"run.output_dir={tmp_path / 'tuned'}", "data.resolution=32")
    trainer = AutoencoderTrainer(config)
    for name, tensor in load_vae(start).state_dict().items():  # starts where the first run ended
        torch.testing.assert_close(trainer.model.state_dict()[name], tensor)
    trainer.run()
    for h in trainer.history:  # the logged loss is the weighted sum, perceptual term included
        assert h["perceptual"] > 0
        assert h["loss"] == pytest.approx(h["l1"] + 1e-6 * h["kl"] + 0.5 * h["perceptual"], rel=1e-4)

    with pytest.raises(ConfigError, match="does not match"):
        AutoencoderTrainer(_autoencoder_config(tmp_path, "kl", f"model.init_weights={start}",
                                               "model.block_out_channels=[8, 8]"))
    with pytest.raises(ConfigError, match="non-negative"):
        _autoencoder_config(tmp_path, "kl", "loss.perceptual_weight=-1.0")


def test_space_to_depth_fit_and_config_errors(tmp_path):
    from moebius.train.autoencoder import train_autoencoder

    folder = train_autoencoder(_autoencoder_config(tmp_path, "space_to_depth"))
    s2d = load_vae(folder)
    assert isinstance(s2d, SpaceToDepth) and s2d.config.factor == 2
    assert 0.05 < float(s2d.colour_std.min()) and float(s2d.colour_std.max()) < 1.0
    with pytest.raises(ConfigError, match="model.kind"):
        _autoencoder_config(tmp_path, "space_to_depth", "model.kind=vq")
    with pytest.raises(ConfigError, match="time_limit_minutes"):
        _autoencoder_config(tmp_path, "kl", "run.time_limit_minutes=0")


def test_trainer_takes_a_space_to_depth_autoencoder(tmp_path):
    from moebius.train.trainer import Trainer

    s2d = SpaceToDepth(SpaceToDepthConfig(factor=2))
    save_vae(s2d, tmp_path / "s2d")
    config = tiny_config(tmp_path, f"vae.weights={tmp_path / 's2d'}", "vae.sample_posterior=false",
                         "model.teacher=null", "loss.adaptive.mode=off", f"model.student_overrides={TINY_STUDENT}",
                         "run.max_steps=2")
    trainer = Trainer(config)
    trainer.train()
    assert all(np.isfinite(h["loss/task"]) for h in trainer.history)


def test_time_limit_checkpoints_and_stops(tmp_path):
    from moebius.train.trainer import Trainer

    with pytest.raises(ConfigError, match="time_limit_minutes"):
        tiny_config(tmp_path, "run.time_limit_minutes=-1")
    trainer = Trainer(tiny_config(tmp_path, "run.max_steps=50", "run.time_limit_minutes=1.0e-9"))
    summary = trainer.train()
    assert summary["step"] < 50
    assert Path(summary["checkpoint"]).name == f"step-{summary['step']:08d}"


def test_small_model_recipe_runs_every_stage(tmp_path):
    """scripts/train_small_model.py end to end with the committed configs, shrunk to a few 32² steps."""
    photos = tmp_path / "photos"
    write_images(photos / "train", count=6)
    rows = ["file,split,sha256"] + [f"train/img_{i}.png,train," for i in range(6)]
    (photos / "manifest.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "small"
    small = ["run.max_steps=2", "data.batch_size=2", "data.num_workers=0", "data.resolution=32", "run.save_every=1"]
    auto = ["run.max_steps=2", "data.batch_size=2", "data.num_workers=0", "data.resolution=32", "data.stats_images=2"]
    command = [sys.executable, str(REPO / "scripts" / "train_small_model.py"), "--photos", str(photos), "--out", str(out),
               "--variants", "kl", "s2d", "--jobs", "2", "--minutes", "30", "teacher=20",
               *[x for o in small for x in ("--set", o)], *[x for o in auto for x in ("--autoencoder-set", o)]]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    for stage in ("autoencoder64-kl", "autoencoder-kl", "autoencoder-s2d", "teacher-kl", "plain-kl", "distill-kl",
                  "teacher-s2d", "distill-s2d"):
        assert f"done  {stage}" in done.stdout
    assert len(list((out / "photos").glob("*.jpg"))) == 6
    assert len(list((out / "crops64").glob("*.png"))) == 6 * 16 and len(list((out / "crops128").glob("*.png"))) == 6 * 4
    # The second autoencoder stage fine-tunes the first one's weights on the 128² crops; the denoisers train on
    # the 64² crops, in the second stage's latent space.
    second = yaml.safe_load((out / "kl" / "autoencoder" / "config.yaml").read_text())
    assert second["model"]["init_weights"] == str(out / "kl" / "autoencoder64" / "autoencoder")
    assert second["data"]["image_dirs"] == [str(out / "crops128")]
    distill = yaml.safe_load((out / "kl" / "distill" / "config.yaml").read_text())
    assert distill["data"]["image_dirs"] == [str(out / "crops64")] and distill["noise"]["max_timestep"] == 200
    assert distill["vae"]["weights"] == str(out / "kl" / "autoencoder" / "autoencoder")
    limits = {net: yaml.safe_load((out / "kl" / net / "config.yaml").read_text())["run"]["time_limit_minutes"]
              for net in ("teacher", "distill", "plain")}
    assert limits == {"teacher": 20.0, "distill": 30.0, "plain": 30.0}
    from moebius import MoebiusInpaintPipeline

    pipe = MoebiusInpaintPipeline.from_pretrained(out / "kl" / "distill" / "pipeline")
    assert pipe.defaults == {"guidance_scale": 1.0, "prefill": "navier-stokes", "strength": 0.05,
                             "num_inference_steps": 20}
    assert pipe.scheduler_config.prediction_type == "v_prediction"  # what the run's config trained
    assert (out / "kl" / "distill" / "ema" / "STEP").read_text().strip() == "step-00000002"
    assert isinstance(MoebiusInpaintPipeline.from_pretrained(out / "s2d" / "distill" / "pipeline").vae, SpaceToDepth)
    pipe.set_progress_bar_config(disable=True)
    image = np.full((32, 48, 3), 120, np.uint8)
    mask = np.zeros((32, 48), np.uint8)
    mask[8:20, 10:30] = 255
    assert pipe(image, mask, seed=0, output_type="np").images[0].shape == (32, 48, 3)  # the exported defaults


@pytest.mark.parametrize("entry, message", [("teacher=0", "positive"), ("student=3", "unknown network"),
                                            ("soon", "expected minutes")])
def test_small_model_recipe_refuses_bad_minutes(entry, message):
    command = [sys.executable, str(REPO / "scripts" / "train_small_model.py"), "--minutes", entry]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and message in done.stderr


def _ship_script():
    import importlib.util

    spec = importlib.util.spec_from_file_location("ship_small_model", REPO / "scripts" / "ship_small_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ship_installs_a_float16_copy_that_the_cli_falls_back_to(tmp_path, monkeypatch):
    from PIL import Image

    from moebius.cli import main
    from moebius.errors import MoebiusError
    from moebius.pipeline import MoebiusInpaintPipeline
    from moebius.weights import bundled
    from test_pipeline import scene, tiny_pipeline

    ship = _ship_script()
    source = tiny_pipeline().save_pretrained(tmp_path / "trained")
    card = tmp_path / "card.md"
    with pytest.raises(MoebiusError, match="model card"):
        ship.ship(source, card, tmp_path / "small", replace=False)
    card.write_text("# card\n")
    target = tmp_path / "pkg" / "small"
    size = ship.ship(source, card, target, replace=False)
    full = sum(f.stat().st_size for f in source.rglob("*.safetensors"))
    assert size < 0.6 * full and (target / "MODEL_CARD.md").read_text() == "# card\n"
    assert all(p.stat().st_mode & 0o044 for p in target.rglob("*"))  # readable by everyone once packaged
    with pytest.raises(MoebiusError, match="--replace"):
        ship.ship(source, card, target, replace=False)
    assert ship.drift(MoebiusInpaintPipeline.from_pretrained(source), MoebiusInpaintPipeline.from_pretrained(target)) \
        < ship.MAX_DRIFT
    assert ship.drift(tiny_pipeline(seed=0), tiny_pipeline(seed=1)) > ship.MAX_DRIFT  # the check can fail

    monkeypatch.setenv("MOEBIUS_HOME", str(tmp_path / "no-official"))
    monkeypatch.setattr(bundled, "BUNDLED_MODEL_DIR", target)
    image, mask = scene()
    Image.fromarray(image).save(tmp_path / "photo.png")
    Image.fromarray(mask).save(tmp_path / "mask.png")
    out = tmp_path / "out.png"
    assert main(["inpaint", str(tmp_path / "photo.png"), str(tmp_path / "mask.png"), "-o", str(out), "--steps", "1",
                 "--quiet"]) == 0
    assert Image.open(out).size == (96, 64)
