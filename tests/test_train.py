"""The trainer end to end on CPU: a tiny student distilled from a tiny teacher on generated images."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("accelerate")
pytest.importorskip("yaml")

from moebius.errors import ConfigError  # noqa: E402
from moebius.train.config import load_config  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TINY_CONFIG = REPO / "configs" / "tiny_cpu.yaml"
OUTPUT_PROBE = "diff_model.conv_out.conv_pw.weight"
FEATURE_PROBE = "diff_model.down_blocks.2.attentions.1.proj_out.weight"  # θ_C: makes the KD feature


def write_images(folder: Path, count: int = 8) -> Path:
    """Small RGB images of assorted sizes with smooth patterns (no network, no data set)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        h, w = 18 + i, 16 + 2 * i
        y, x = np.mgrid[:h, :w]
        img = np.stack([(x * 9 + i * 20) % 256, (y * 13) % 256, ((x + y) * 7 + i * 30) % 256], -1)
        Image.fromarray(img.astype(np.uint8)).save(folder / f"img_{i}.png")
    return folder


def tiny_config(tmp: Path, *overrides: str, run: str = "run"):
    images = tmp / "images"
    if not images.exists():
        write_images(images)
    return load_config(TINY_CONFIG, [f"run.output_dir={tmp / run}", f"data.image_dirs=[{images}]", *overrides])


# Many tiny ops: a second thread only adds synchronisation (and stalls badly on a shared machine).
pytestmark = pytest.mark.usefixtures("one_thread")


def test_distillation_trains_and_logs(tmp_path):
    from moebius.train.trainer import Trainer

    config = tiny_config(tmp_path, "run.max_steps=30", "run.save_every=30")  # official weighting, every λ = 1
    trainer = Trainer(config)
    held_out = _held_out_batch(config)
    before = _losses_on(trainer, held_out)
    summary = trainer.train()
    assert summary["step"] == 30

    # The checkpoint's student loads directly, and its weights (BatchNorm statistics included) are the trained ones.
    import moebius

    loaded = moebius.load_official(tmp_path / "run" / "checkpoints" / "step-00000030" / "student")
    for (name, a), b in zip(trainer.student.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name
    assert (tmp_path / "run" / "config.yaml").is_file()
    # ... and so does the pipeline, with the checkpoint folder as root and student/ (or ema/) as the variant.
    from moebius.models.vae import TINY_VAE_CONFIG, AutoencoderKL
    from moebius.weights.vae import save_vae

    save_vae(AutoencoderKL(TINY_VAE_CONFIG), tmp_path / "vae")
    pipe = moebius.MoebiusInpaintPipeline.from_pretrained(tmp_path / "run" / "checkpoints" / "step-00000030",
                                                         variant="student", vae=tmp_path / "vae")
    assert torch.equal(pipe.unet.state_dict()["embedding_layer.weight"], trainer.student.embedding_layer.weight)
    after = _losses_on(trainer, held_out)

    rows = [json.loads(line) for line in (tmp_path / "run" / "logs" / "scalars.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 31))
    for name in ("loss/task", "loss/output_kd", "loss/feature_kd", "loss/total", "adaptive/w_output_kd",
                 "adaptive/w_feature", "lr", "grad_norm", "throughput/images_per_s"):
        values = [r[name] for r in rows]
        assert all(math.isfinite(v) for v in values), name
    # Same samples, noise and timesteps before and after training: every loss and the total fall.
    for name in ("loss/total", "loss/task", "loss/output_kd", "loss/feature_kd"):
        assert after[name] < before[name], (name, before[name], after[name])
    assert after["loss/total"] < 0.8 * before["loss/total"]


def _held_out_batch(config, keys=range(10_000, 10_008)):
    """Samples the run never draws (keys past its stream), with their own fixed noise and timesteps."""
    from moebius.train.data import InpaintingDataset, collect_items

    dataset = InpaintingDataset(collect_items(config.data), config.data, config.run.seed)
    return torch.utils.data.default_collate([dataset[k] for k in keys])


def _losses_on(trainer, batch):
    _, logs = trainer.compute_loss(batch)
    return {k: float(v) for k, v in logs.items()}


def _capture(trainer):
    """Record what compute_loss feeds the weighting: the loss tensors and the per-sample draws."""
    seen = {}
    weighting, draw = trainer.weighting, trainer._draw

    def record_weighting(losses):
        seen["losses"] = losses
        return weighting(losses)

    def record_draw(keys, hw):
        seen["draws"] = draw(keys, hw)
        return seen["draws"]

    trainer.weighting = record_weighting
    trainer._draw = record_draw
    student_out, teacher_out = {}, {}
    trainer.student.register_forward_hook(lambda m, i, o: student_out.update(out=o))
    trainer.teacher.register_forward_hook(lambda m, i, o: teacher_out.update(out=o))
    return seen, student_out, teacher_out


@pytest.mark.parametrize("mode", ["official", "paper"])
def test_adaptive_weights_match_hand_computation(tmp_path, mode):
    from moebius.train.trainer import Trainer

    lam = {"task": 0.5, "output_kd": 0.01, "feature_kd": 0.01}
    config = tiny_config(tmp_path, f"loss.adaptive.mode={mode}", *(f"loss.{k}_weight={v}" for k, v in lam.items()))
    trainer = Trainer(config)
    seen, s_out, t_out = _capture(trainer)
    total, logs = trainer.compute_loss(next(trainer._loader_iter))
    losses = seen["losses"]

    # The losses are the documented formulas (docs/training.md, "What one step does"), on the networks' actual outputs.
    eps_hat, eps_teacher = s_out["out"].sample.float(), t_out["out"].sample.float()
    torch.testing.assert_close(losses["task"], ((eps_hat - seen["draws"]["eps"]) ** 2).mean())
    torch.testing.assert_close(losses["output_kd"], ((eps_hat - eps_teacher) ** 2).mean())
    feat = ((s_out["out"].block_outputs[2] - t_out["out"].block_outputs[5]) ** 2).mean()
    torch.testing.assert_close(losses["feature_kd"], feat)

    params = dict(trainer.student.named_parameters())
    theta_o, theta_c = params[OUTPUT_PROBE], params[FEATURE_PROBE]

    def norm(loss, theta):
        (g,) = torch.autograd.grad(loss, theta, retain_graph=True, allow_unused=True)
        return 0.0 if g is None else float(g.double().norm())

    o_task, o_out = norm(losses["task"], theta_o), norm(losses["output_kd"], theta_o)
    c_feat, c_task = norm(losses["feature_kd"], theta_c), norm(losses["task"], theta_c)
    if mode == "official":
        w_out = min(o_task / (o_out + 1e-6), 1e6)
        w_feat = min(c_feat / (c_task + 1e-4), 1e4)
    else:
        w_out = min(o_task**2 / (o_out**2 + 1e-6), 1e6)
        group = lam["task"] * losses["task"] + lam["output_kd"] * w_out * losses["output_kd"]
        w_feat = min(c_feat**2 / (norm(group, theta_c) ** 2 + 1e-4), 1e4)
    assert logs["adaptive/w_output_kd"].item() == pytest.approx(w_out, rel=1e-4)
    assert logs["adaptive/w_feature"].item() == pytest.approx(w_feat, rel=1e-4)
    expected = lam["feature_kd"] * losses["feature_kd"] + w_feat * (
        lam["task"] * losses["task"] + lam["output_kd"] * w_out * losses["output_kd"])
    assert total.item() == pytest.approx(expected.item(), rel=1e-4)


def test_v_prediction_task_target(tmp_path):
    from moebius.schedulers.ddim import velocity
    from moebius.train.trainer import Trainer

    trainer = Trainer(tiny_config(tmp_path, "noise.prediction_type=v_prediction"))
    seen, s_out, t_out = _capture(trainer)
    inputs, encoded = {}, trainer._encode
    trainer.student.register_forward_pre_hook(lambda m, args: inputs.update(x=args[0], t=args[1]))
    trainer._encode = lambda images, noise: inputs.setdefault("latents", encoded(images, noise))
    trainer.compute_loss(next(trainer._loader_iter))

    z = inputs["latents"][: inputs["x"].shape[0]]
    eps = seen["draws"]["eps"]
    a = trainer.alphas_cumprod[inputs["t"]].reshape(-1, 1, 1, 1)
    torch.testing.assert_close(inputs["x"][:, :4], a.sqrt() * z + (1 - a).sqrt() * eps)
    v_hat = s_out["out"].sample.float()
    torch.testing.assert_close(seen["losses"]["task"], ((v_hat - velocity(z, eps, a)) ** 2).mean())
    # The teacher predicts v too: output KD compares like with like.
    torch.testing.assert_close(seen["losses"]["output_kd"], ((v_hat - t_out["out"].sample.float()) ** 2).mean())


@pytest.mark.parametrize("timesteps", ["uniform", "logit_normal"])
def test_max_timestep_keeps_a_refiner_at_low_noise(tmp_path, timesteps):
    from moebius.train.trainer import Trainer

    seen = []
    for limit, run in ((1000, "full"), (50, "low")):
        trainer = Trainer(tiny_config(tmp_path, f"noise.timesteps={timesteps}", f"noise.max_timestep={limit}",
                                      "data.batch_size=8", run=run))
        trainer.student.register_forward_pre_hook(lambda m, args: seen.append(args[1].clone()))
        for _ in range(3):
            trainer.compute_loss(next(trainer._loader_iter))
    full, low = torch.cat(seen[:3]), torch.cat(seen[3:])
    assert low.max() < 50 <= full.max()
    assert torch.equal(low, full // 20)  # the same draws, scaled to the shorter span


@pytest.mark.parametrize("limit", [0, 1001])
def test_max_timestep_must_lie_in_the_schedule(tmp_path, limit):
    from moebius.errors import ConfigError

    with pytest.raises(ConfigError, match="noise.max_timestep"):
        tiny_config(tmp_path, f"noise.max_timestep={limit}")


def test_resume_is_bitwise_identical(tmp_path):
    from moebius.train.trainer import Trainer

    common = ("run.max_steps=6", "run.save_every=100", "ema.enabled=true", "ema.decay=0.9", "data.num_workers=0",
              "optim.milestones=[4]", "optim.warmup_steps=2")
    straight = Trainer(tiny_config(tmp_path, *common, run="straight"))
    straight.train()

    first = Trainer(tiny_config(tmp_path, *common, run="split"))
    first.train(stop_at_step=3)
    assert (tmp_path / "split" / "checkpoints" / "step-00000003" / "trainer.json").is_file()
    del first
    second = Trainer(tiny_config(tmp_path, *common, run="split"))  # run.resume: auto
    assert second.step == 3
    second.train()

    for (name, a), b in zip(straight.student.state_dict().items(), second.student.state_dict().values()):
        assert torch.equal(a, b), name
    for name, a in straight.ema.shadow.items():
        assert torch.equal(a, second.ema.shadow[name]), f"ema {name}"
    assert straight.history[-1]["loss/total"] == second.history[-1]["loss/total"]
    sa, sb = straight.optimizer.state_dict(), second.optimizer.state_dict()
    for part in ("muon", "adamw"):
        for idx, state in sa[part]["state"].items():
            for key, value in state.items():
                assert torch.equal(torch.as_tensor(value), torch.as_tensor(sb[part]["state"][idx][key])), (part, idx, key)


def test_same_noise_on_every_rank_is_selectable(tmp_path):
    from moebius.train.trainer import Trainer

    trainer = Trainer(tiny_config(tmp_path, "noise.same_on_every_rank=true", "data.batch_size=2"))
    trainer.world = 3  # read keys as processes of a 3-process run do; the draws depend on nothing else
    first, second = trainer._draw(torch.tensor([0, 1]), (4, 4)), trainer._draw(torch.tensor([2, 3]), (4, 4))
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    following = trainer._draw(torch.tensor([6, 7]), (4, 4))  # the next global micro-batch draws anew
    assert not torch.equal(following["eps"], first["eps"])
    trainer.config.noise.same_on_every_rank = False
    assert not torch.equal(trainer._draw(torch.tensor([2, 3]), (4, 4))["eps"], first["eps"])


def test_a_parameter_only_ema_folder_loads_and_resumes(tmp_path):
    import moebius
    from moebius.train.trainer import Trainer

    common = ("run.max_steps=2", "run.save_every=2", "ema.enabled=true", "ema.decay=0.5", "data.num_workers=0")
    trainer = Trainer(tiny_config(tmp_path, *common, "ema.batchnorm_statistics=false"))
    trainer.train()
    folder = tmp_path / "run" / "checkpoints" / "step-00000002"
    ema = moebius.load_official(folder / "ema").state_dict()
    live = trainer.student.state_dict()
    stats = [k for k in live if "running_" in k]
    assert stats and all(torch.equal(ema[k], live[k]) for k in stats)
    assert all(torch.equal(ema[k], trainer.ema.shadow[k]) for k in trainer.ema.shadow)
    assert not all(torch.equal(ema[k], live[k]) for k in trainer.ema.shadow)  # the parameters are averaged
    resumed = Trainer(tiny_config(tmp_path, *common, "run.max_steps=3", "ema.batchnorm_statistics=true"))
    assert resumed.step == 2 and resumed.ema.num_updates == 2
    assert all(torch.equal(resumed.ema.shadow[k], ema[k]) for k in live)


def test_teacher_free_and_missing_perceptual_weights_warn_once(tmp_path, caplog):
    from moebius.train.trainer import Trainer

    config = tiny_config(tmp_path, "model.teacher=null", "run.max_steps=3", "loss.perceptual_weight=0.5",
                         f"loss.perceptual.weights={tmp_path / 'absent.pth'}", "run.tensorboard=true")
    with caplog.at_level(logging.WARNING, logger="moebius.train"):
        trainer = Trainer(config)
        trainer.train()
    notes = [r for r in caplog.records if "E-LatentLPIPS" in r.getMessage()]
    assert len(notes) == 1 and "WITHOUT" in notes[0].getMessage()
    assert trainer.active == ["task"]
    assert all(math.isfinite(h["loss/task"]) for h in trainer.history)
    import importlib.util

    if importlib.util.find_spec("tensorboardX") or importlib.util.find_spec("tensorboard"):
        assert list((tmp_path / "run" / "logs").glob("events.out.tfevents*"))


def test_perceptual_loss_with_local_weights_and_finetune(tmp_path):
    from moebius.perceptual.elatentlpips import ELatentLPIPS
    from moebius.train.trainer import Trainer

    torch.manual_seed(0)
    net = ELatentLPIPS()
    state = net.state_dict()
    state.update({f"lins.{k}.model.1.weight": state[f"lin{k}.model.1.weight"] for k in range(5)})  # released layout
    torch.save(state, tmp_path / "sdxl_latest_vgg16_tuned.pth")
    first = Trainer(tiny_config(tmp_path, "run.max_steps=2", run="base"))
    first.train()
    student = tmp_path / "base" / "checkpoints" / "step-00000002" / "student"
    config = tiny_config(tmp_path, "run.max_steps=2", "loss.perceptual_weight=0.5", "loss.adaptive.mode=paper",
                         f"loss.perceptual.weights={tmp_path / 'sdxl_latest_vgg16_tuned.pth'}",
                         f"model.student_weights={student}", "model.student_overrides={}", run="ft")
    trainer = Trainer(config)
    assert torch.equal(trainer.student.state_dict()["embedding_layer.weight"],
                       first.student.state_dict()["embedding_layer.weight"])
    trainer.train()
    assert "perceptual" in trainer.active
    assert all(math.isfinite(h["loss/perceptual"]) and math.isfinite(h["adaptive/w_perceptual"]) for h in trainer.history)


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="loss.adaptive.modee"):
        tiny_config(tmp_path, "loss.adaptive.modee=paper")
    with pytest.raises(ConfigError, match="loss.adaptive.mode"):
        tiny_config(tmp_path, "loss.adaptive.mode=squared")
    with pytest.raises(ConfigError, match="data.batch_size"):
        tiny_config(tmp_path, "data.batch_size=two")
    (tmp_path / "bad.yaml").write_text("run:\n  max_step: 3\n")
    with pytest.raises(ConfigError, match="run.max_step"):
        load_config(tmp_path / "bad.yaml")
    assert tiny_config(tmp_path, "loss.adaptive.mode=off").loss.adaptive.mode == "off"  # YAML's bare off


def test_recipes_load():
    from moebius.train.autoencoder import load_autoencoder_config

    for path in sorted((REPO / "configs").rglob("*.yaml")):
        (load_autoencoder_config if path.name.startswith("autoencoder_") else load_config)(path)


def test_gradient_checkpointing_does_not_change_the_run(tmp_path):
    from moebius.train.trainer import Trainer

    runs = []
    for flag in ("false", "true"):
        trainer = Trainer(tiny_config(tmp_path, "run.max_steps=2", f"model.gradient_checkpointing={flag}", run=flag))
        trainer.train()
        runs.append(trainer)
    for (name, a), b in zip(runs[0].student.state_dict().items(), runs[1].student.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


def test_teacher_free_training_of_a_teacher_shaped_network(tmp_path):
    import moebius
    from moebius.train.trainer import Trainer

    overrides = "{block_out_channels: [8, 16, 16, 16], heads: 2, norm_num_groups: 4, cross_attention_dim: 8, encoder_hid_dim: 8}"
    config = tiny_config(tmp_path, "model.teacher=null", "model.student=pixelhacker-tiny",
                         f"model.student_overrides={overrides}", "model.gradient_checkpointing=true", "run.max_steps=2")
    trainer = Trainer(config)
    trainer.train()
    loaded = moebius.load_official(tmp_path / "run" / "checkpoints" / "step-00000002" / "student")
    assert type(loaded.config).family == "pixelhacker"
    assert all(math.isfinite(h["loss/task"]) for h in trainer.history)


def test_train_command(tmp_path, capsys):
    import argparse

    from moebius.cli.train import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command", required=True))
    images = write_images(tmp_path / "images")

    def run(*argv):
        args = parser.parse_args(["train", str(TINY_CONFIG), "--set", f"data.image_dirs=[{images}]", *argv])
        return args.run(args)

    assert run("--print-config", "--max-steps", "7") == 0
    assert "max_steps: 7" in capsys.readouterr().out
    out = tmp_path / "cli"
    assert run("--output-dir", str(out), "--max-steps", "4", "--stop-at-step", "2",
               "--set", "optim.gradient_accumulation_steps=2") == 0
    assert "stopped at step 2" in capsys.readouterr().out
    assert run("--output-dir", str(out), "--max-steps", "4", "--set", "optim.gradient_accumulation_steps=2") == 0
    rows = [json.loads(line) for line in (out / "logs" / "scalars.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    with pytest.raises(ConfigError, match="already holds checkpoints"):
        run("--output-dir", str(out), "--resume", "none")
    with pytest.raises(ConfigError, match="optim.lrr"):
        run("--set", "optim.lrr=1")
