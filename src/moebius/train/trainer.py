"""The training loop: adaptive multi-granularity distillation on accelerate.

One optimizer step, per process (``Trainer.train_step``):

1. A batch of ``data.batch_size`` examples, addressed by global sample keys (``data.py``). Each key seeds a
   generator for that sample's VAE posterior noise, ε (plus offset noise), timestep and E-LatentLPIPS
   augmentation, so the run is the same on any number of processes and resumes exactly.
2. Latents z = E(image), z_m = E(masked image) (scaled); the mask nearest-resized to the latent.
3. t ~ logit-normal (or uniform); x_t = √ᾱ·z + √(1 − ᾱ)·ε with the DDIM module's SD schedule.
4. Under bf16 autocast: student and frozen teacher on [x_t | m | z_m] with the same t and category ids.
5. Losses and adaptive weights (``losses.py``), backward (DDP averages), clip, Muon/AdamW step, EMA.

Launch: ``moebius train CONFIG.yaml`` on one device, ``accelerate launch -m moebius train CONFIG.yaml`` on
many. The run folder holds ``config.yaml``, ``logs/`` (TensorBoard + ``scalars.jsonl``) and
``checkpoints/step-XXXXXXXX/`` with ``student/`` (and ``ema/``) loadable by ``moebius.load_official``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.profiler import record_function

from ..errors import CheckpointError, ConfigError
from ..files import publish_folder, reported_as, write_text
from ..schedulers.ddim import DDIMConfig, scaled_linear_alphas_cumprod, velocity
from . import _build
from ._state import capture_rng, load_state, read_json, restore_rng, save_state
from .checkpoints import (CHECKPOINT_PREFIX, MANIFEST_NAME, TRAINER_STATE_NAME, checkpoint_problem, find_checkpoints,
                          newest_intact, remove_stale_temporaries, write_manifest)
from .config import TrainConfig, dump_config
from .data import first_rank_key, training_tensors
from .losses import AdaptiveWeighting, feature_kd_loss, mse, predict_x0

logger = logging.getLogger("moebius.train")


def sample_seed(seed: int, key: int, stream: int = 0) -> int:
    """A 63-bit seed for sample ``key`` of a run seeded ``seed`` (independent streams per ``stream``)."""
    words = np.random.SeedSequence([seed, stream, key]).generate_state(2, np.uint32)
    return int(words[0]) << 31 ^ int(words[1])


class _ScalarLog:
    """``scalars.jsonl`` always; TensorBoard events when tensorboardX or tensorboard is installed.

    A run that resumes at ``start_step`` first drops the rows after it: they were logged by the interrupted
    run after its last checkpoint, and the resumed run logs those steps again.
    """

    def __init__(self, folder: Path, tensorboard: bool, start_step: int = 0) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "scalars.jsonl"
        _trim_jsonl(path, start_step)
        self.jsonl = path.open("a")
        self.writer = None
        if tensorboard:
            try:
                from tensorboardX import SummaryWriter
            except ImportError:
                try:
                    from torch.utils.tensorboard import SummaryWriter  # type: ignore[no-redef]
                except ImportError:
                    SummaryWriter = None  # type: ignore[assignment,misc]
            if SummaryWriter is None:
                logger.warning("neither tensorboardX nor tensorboard is installed: scalars go to scalars.jsonl only")
            else:
                self.writer = SummaryWriter(str(folder), purge_step=start_step + 1 if start_step else None)

    def write(self, step: int, scalars: dict[str, float]) -> None:
        self.jsonl.write(json.dumps({"step": step, **scalars}) + "\n")
        self.jsonl.flush()
        if self.writer is not None:
            for name, value in scalars.items():
                self.writer.add_scalar(name, value, step)
            self.writer.flush()

    def close(self) -> None:
        self.jsonl.close()
        if self.writer is not None:
            self.writer.close()


def _trim_jsonl(path: Path, last_step: int) -> None:
    """Keep only the rows of ``path`` with ``step <= last_step`` (and drop a half-written last line)."""
    if not path.is_file():
        return
    lines = path.read_text().splitlines(keepends=True)
    kept = []
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if line.endswith("\n") and isinstance(row, dict) and row.get("step", 0) <= last_step:
            kept.append(line)
    if len(kept) != len(lines):
        write_text(path, "".join(kept))


class Trainer:
    """Holds everything of a run; ``train()`` runs it to ``run.max_steps`` (or ``stop_at_step``)."""

    def __init__(self, config: TrainConfig, accelerator: Any = None) -> None:
        try:
            from accelerate import Accelerator
        except ImportError:
            raise ConfigError("training needs accelerate: pip install 'moebius-inpaint[train]'") from None
        self.config = config
        # Without a GPU, accelerate only forms a process group (gloo) when told it runs on CPU.
        on_cpu = not (torch.cuda.is_available() or torch.backends.mps.is_available())
        self.acc = accelerator or Accelerator(mixed_precision=config.mixed_precision, cpu=on_cpu)
        self.device = self.acc.device
        if self.device.type == "cuda":
            # Every step has the same shapes, so cuDNN's one-off search for the fastest convolution pays back.
            torch.backends.cudnn.benchmark = True
        self.rank, self.world = self.acc.process_index, self.acc.num_processes
        self.is_main = self.acc.is_main_process
        self.run_dir = Path(config.run.output_dir)
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.history: list[dict[str, float]] = []
        self.step = 0
        self.samples_seen = 0
        resume_from = self._resume_folder()

        # Same seed on every rank while building, so randomly initialised frozen nets agree everywhere.
        torch.manual_seed(config.run.seed)
        self.student = _build.build_student(config.model)
        self.teacher = _build.build_teacher(config.model)
        self.vae = _build.build_vae_encoder(config.vae)
        self.perceptual = _build.build_perceptual(config.loss.perceptual, config.loss.perceptual_weight,
                                                  warn=self.is_main)
        self.active = [name for name, w in (("task", config.loss.task_weight),
                                            ("output_kd", config.loss.output_kd_weight),
                                            ("feature_kd", config.loss.feature_kd_weight))
                       if w > 0 and (name == "task" or self.teacher is not None)]
        if self.perceptual is not None:
            self.active.append("perceptual")
        if not self.active:
            raise ConfigError("no loss is active: set loss.task_weight > 0 (or configure a teacher)")

        if config.model.gradient_checkpointing:
            from ._modules import enable_gradient_checkpointing, student_checkpoint_blocks

            enable_gradient_checkpointing(self.student, student_checkpoint_blocks())
        if config.model.sync_batchnorm and self.world > 1:
            from ._modules import sync_batchnorm

            sync_batchnorm(self.student)
        self.student.to(self.device)
        for net in (self.teacher, self.perceptual):
            if net is not None:
                net.to(self.device)
        self.vae.to(self.device)
        self.alphas_cumprod = scaled_linear_alphas_cumprod(DDIMConfig()).to(self.device)

        from .ema import EMA
        from .optim import build_optimizer

        self.optimizer = build_optimizer(self.student, config.optim)
        self.ema = (EMA(self.student, config.ema.decay, config.ema.warmup, config.ema.batchnorm_statistics)
                    if config.ema.enabled else None)
        if resume_from is not None:
            self._load_checkpoint(resume_from)
        # Per-rank seed for anything outside the keyed streams (after a resume restored the generators).
        if resume_from is None:
            torch.manual_seed(config.run.seed + 1 + self.rank)
            np.random.seed((config.run.seed + 1 + self.rank) % 2**32)

        self.model = self.acc.prepare(self.student)
        self.weighting = AdaptiveWeighting(config.loss, *self._probes(),
                                           reduce=self._mean_over_ranks if self.world > 1 else None)
        self._loader_iter = iter(self._make_loader())
        self._log = None
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            write_text(self.run_dir / "config.yaml", dump_config(config))
            self._log = _ScalarLog(self.run_dir / "logs", config.run.tensorboard, start_step=self.step)
            logger.info("training on %d process(es), global batch %d, losses: %s%s", self.world, self.global_batch,
                        ", ".join(self.active), f"; resumed at step {self.step}" if resume_from else "")

    # ------------------------------------------------------------------------------------------------
    # Setup helpers

    @property
    def global_batch(self) -> int:
        return self.config.data.batch_size * self.world

    def _resume_folder(self) -> Path | None:
        resume = self.config.run.resume
        if resume is None:
            if find_checkpoints(self.ckpt_dir):
                raise ConfigError(f"{self.run_dir} already holds checkpoints; set run.resume to 'auto' to continue "
                                  "or choose a new run.output_dir")
            return None
        if resume == "auto":
            folder = newest_intact(self.ckpt_dir, log=self.is_main)
        else:
            folder = Path(resume)
            if not (folder / TRAINER_STATE_NAME).is_file() and not (folder / MANIFEST_NAME).is_file():
                raise ConfigError(f"run.resume: {folder} is not a training checkpoint (no trainer.json)")
            problem = checkpoint_problem(folder)
            if problem is not None:
                raise CheckpointError(f"run.resume: checkpoint {folder} is damaged: {problem}")
        if folder is not None and self.is_main and not (folder / MANIFEST_NAME).is_file():
            logger.warning("%s has no %s (written by an older version): resuming without checking it",
                           folder, MANIFEST_NAME)
        return folder

    def _probes(self) -> tuple[torch.nn.Parameter, torch.nn.Parameter | None]:
        a = self.config.loss.adaptive
        name = _build.output_probe_name(self.student) if a.output_probe == "auto" else a.output_probe
        output = _build.find_parameter(self.student, name, "loss.adaptive.output_probe")
        feature = None
        if "feature_kd" in self.active:
            name = a.feature_probe
            if name == "auto":
                name = _build.feature_probe_name(self.student, self.config.loss.feature_pairs[0][0])
            feature = _build.find_parameter(self.student, name, "loss.adaptive.feature_probe")
        return output, feature

    def _make_loader(self) -> torch.utils.data.DataLoader:
        from .data import InpaintingDataset, KeySampler, collect_items

        d = self.config.data
        dataset = InpaintingDataset(collect_items(d), d, self.config.run.seed)
        if self.samples_seen % self.global_batch:
            logger.warning("resuming with a different global batch: the sample stream restarts at a batch boundary")
        start = self.samples_seen // self.global_batch
        sampler = KeySampler(d.batch_size, self.rank, self.world, start=start)
        return torch.utils.data.DataLoader(dataset, batch_size=d.batch_size, sampler=sampler, num_workers=d.num_workers,
                                           pin_memory=self.device.type == "cuda", persistent_workers=d.num_workers > 0)

    def _mean_over_ranks(self, t: torch.Tensor) -> torch.Tensor:
        t = t.clone()
        dist.all_reduce(t)
        return t / self.world

    # ------------------------------------------------------------------------------------------------
    # One step

    def _draw(self, keys: torch.Tensor, latent_hw: tuple[int, int]) -> dict[str, torch.Tensor]:
        """Per-sample randomness from each sample's own generator, stacked and moved to the device."""
        from ..perceptual.elatentlpips import draw_augment_params

        n = self.config.noise
        h, w = latent_hw
        out: dict[str, list[torch.Tensor]] = {"vae": [], "eps": [], "u": [], "aug": []}
        c = self.vae.config.latent_channels
        for key in keys.tolist():
            if n.same_on_every_rank:
                key = first_rank_key(key, self.config.data.batch_size, self.world)
            g = torch.Generator().manual_seed(sample_seed(self.config.run.seed, key))
            if self.config.vae.sample_posterior:
                out["vae"].append(torch.randn(2, c, h, w, generator=g))
            eps = torch.randn(c, h, w, generator=g)
            out["eps"].append(eps + n.noise_offset * torch.randn(c, 1, 1, generator=g))
            out["u"].append(torch.randn((), generator=g) if n.timesteps == "logit_normal" else torch.rand((), generator=g))
            out["aug"].append(draw_augment_params(g))
        return {k: torch.stack(v).to(self.device) for k, v in out.items() if v}

    @torch.no_grad()
    def _encode(self, images: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        """Images (N, 3, H, W) -> scaled latents (N, C, h, w) float32 (NaNs zeroed, as the released code)."""
        cfg = self.vae.config
        posterior = self.vae.encode(images.to(next(self.vae.parameters()).dtype))
        z = posterior.sample(noise=noise) if noise is not None else posterior.mode()
        if cfg.shift_factor is not None:
            z = z - cfg.shift_factor
        return torch.nan_to_num(z.float() * cfg.scaling_factor)

    def compute_loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Forward both networks on one micro-batch; -> (total loss, detached log scalars)."""
        images, hole, masked = training_tensors(batch, self.device)
        b = images.shape[0]
        f = self.vae.config.downsample_factor
        hw = (images.shape[2] // f, images.shape[3] // f)
        with record_function("moebius/draw"):
            draws = self._draw(batch["key"], hw)

        vae_noise = torch.cat([draws["vae"][:, 0], draws["vae"][:, 1]]) if self.config.vae.sample_posterior else None
        with record_function("moebius/encode"):
            latents = self._encode(torch.cat([images, masked]), vae_noise)
        z, z_masked = latents[:b], latents[b:]
        mask = F.interpolate(hole, size=hw, mode="nearest")
        span = self.config.noise.max_timestep
        if self.config.noise.timesteps == "logit_normal":
            t = torch.sigmoid(self.config.noise.logit_mean + self.config.noise.logit_std * draws["u"]) * span
        else:
            t = draws["u"] * span
        t = t.floor().long().clamp(0, span - 1)
        return self.loss_at(z, z_masked, mask, draws["eps"], t, batch["input_ids"].to(self.device), draws["aug"])

    def loss_at(self, z: torch.Tensor, z_masked: torch.Tensor, mask: torch.Tensor, eps: torch.Tensor,
                t: torch.Tensor, ids: torch.Tensor, augment: torch.Tensor | None = None,
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss of one micro-batch from its latents and random draws; -> (total loss, detached log scalars).

        z, z_masked (B, C, h, w): scaled latents of the image and the masked image; mask (B, 1, h, w), 1 = hole;
        eps (B, C, h, w): the noise, offset included; t (B,) int64 timesteps; ids (B, L) category ids;
        augment: E-LatentLPIPS augmentation parameters (B, ...), used when ``loss.perceptual.ensembling``.
        """
        alpha_bar = self.alphas_cumprod[t]
        a = alpha_bar.reshape(-1, 1, 1, 1)
        x_t = a.sqrt() * z + (1 - a).sqrt() * eps
        inputs = torch.cat([x_t, mask, z_masked], dim=1)

        with self.acc.autocast():
            with record_function("moebius/student_forward"):
                student = self.model(inputs, t, ids, return_block_outputs=True)
            teacher = None
            if self.teacher is not None:
                with torch.no_grad(), record_function("moebius/teacher_forward"):
                    teacher = self.teacher(inputs, t, ids, return_block_outputs=True)
        losses: dict[str, torch.Tensor] = {}
        if "task" in self.active:
            target = eps if self.config.noise.prediction_type == "epsilon" else velocity(z, eps, a)
            losses["task"] = mse(student.sample, target)
        if "output_kd" in self.active:
            losses["output_kd"] = mse(student.sample, teacher.sample)
        if "feature_kd" in self.active:
            try:
                losses["feature_kd"] = feature_kd_loss(student.block_outputs, teacher.block_outputs,
                                                       self.config.loss.feature_pairs)
            except (ValueError, IndexError) as exc:
                raise ConfigError(f"loss.feature_pairs: {exc}; pick blocks of equal shape (student 2 and teacher 5 "
                                  "for the official presets)") from None
        if "perceptual" in self.active:
            p = self.config.loss.perceptual
            x0 = predict_x0(x_t, student.sample, alpha_bar, self.config.noise.prediction_type)
            if p.official_x0_reference:
                rounded = x_t.bfloat16() if self.config.mixed_precision == "bf16" else x_t
                ref = predict_x0(rounded, eps, alpha_bar, "epsilon")
            else:
                ref = z
            if p.official_double_scaling:
                x0, ref = x0 * self.vae.config.scaling_factor, ref * self.vae.config.scaling_factor
            with self.acc.autocast():
                score = self.perceptual(x0, ref, augment if p.ensembling else None, add_l1=p.add_l1)
            losses["perceptual"] = score.float().mean()

        with record_function("moebius/adaptive_weights"):
            total, logs = self.weighting(losses)
        logs = {**{f"loss/{k}": v.detach() for k, v in losses.items()}, "loss/total": total.detach(),
                **{f"adaptive/{k}": v for k, v in logs.items()}, "t_mean": t.float().mean()}
        return total, logs

    def train_step(self) -> dict[str, float]:
        """One optimizer step (with ``gradient_accumulation_steps`` micro-batches); -> the step's scalars."""
        from .optim import set_lr

        o = self.config.optim
        start = time.perf_counter()
        factor = set_lr(self.optimizer, self.step, o)
        sums: dict[str, torch.Tensor] = {}
        data_wait = 0.0
        for micro in range(o.gradient_accumulation_steps):
            waited = time.perf_counter()
            with record_function("moebius/data"):
                batch = next(self._loader_iter)
            data_wait += time.perf_counter() - waited
            last = micro == o.gradient_accumulation_steps - 1
            sync = contextlib.nullcontext() if last or self.world == 1 else self.acc.no_sync(self.model)
            with sync:
                total, logs = self.compute_loss(batch)
                with record_function("moebius/backward"):
                    self.acc.backward(total / o.gradient_accumulation_steps)
            for k, v in logs.items():
                sums[k] = sums.get(k, 0) + v.float() / o.gradient_accumulation_steps
        grad_norm = self.apply_gradients()
        self.samples_seen += self.global_batch * o.gradient_accumulation_steps
        sums["grad_norm"] = grad_norm.detach().float()
        names = sorted(sums)
        values = torch.stack([sums[k].to(self.device) for k in names])
        if self.world > 1:
            values = self._mean_over_ranks(values)
        scalars = dict(zip(names, values.tolist()))
        elapsed = time.perf_counter() - start
        scalars["lr"] = o.lr * factor
        scalars["throughput/images_per_s"] = self.global_batch * o.gradient_accumulation_steps / elapsed
        # Where a slow step goes: waiting for the loader vs everything else (bench/train_step_profile.py splits more).
        scalars["time/step_s"] = elapsed
        scalars["time/data_wait_s"] = data_wait
        return scalars

    def apply_gradients(self) -> torch.Tensor:
        """Clip the accumulated gradients, step the optimizer, clear them and update the EMA.

        -> the global gradient norm before clipping. Advances ``self.step``.
        """
        o = self.config.optim
        params = [p for p in self.student.parameters() if p.requires_grad]
        with record_function("moebius/optimizer"):
            grad_norm = torch.nn.utils.clip_grad_norm_(params, o.max_grad_norm if o.max_grad_norm > 0 else math.inf)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        if self.ema is not None and self.step % self.config.ema.every == 0:
            with record_function("moebius/ema"):
                self.ema.update(self.student)
        return grad_norm

    def train(self, stop_at_step: int | None = None) -> dict[str, Any]:
        """Run to ``run.max_steps`` (or stop early at ``stop_at_step``, checkpointing there)."""
        r = self.config.run
        target = r.max_steps if stop_at_step is None else min(stop_at_step, r.max_steps)
        last_saved = None
        deadline = None if r.time_limit_minutes is None else time.monotonic() + 60 * r.time_limit_minutes
        try:
            while self.step < target:
                if deadline is not None and self._out_of_time(deadline):
                    logger.info("run.time_limit_minutes reached at step %d: checkpointing and stopping", self.step)
                    if last_saved is None or last_saved.name != f"{CHECKPOINT_PREFIX}{self.step:08d}":
                        last_saved = self.save_checkpoint()
                    break
                scalars = self.train_step()
                self.history.append({"step": self.step, **scalars})
                if self.is_main and (self.step % r.log_every == 0 or self.step == target):
                    self._log.write(self.step, scalars)
                    logger.info("step %d  loss %.4f  %s", self.step, scalars["loss/total"],
                                "  ".join(f"{k.split('/')[-1]} {v:.3g}" for k, v in scalars.items() if k.startswith("adaptive/w_")))
                if self.step % r.save_every == 0 or self.step == target:
                    last_saved = self.save_checkpoint()
        finally:
            if self._log is not None:
                self._log.close()
                self._log = None
        return {"step": self.step, "run_dir": str(self.run_dir), "checkpoint": str(last_saved) if last_saved else None,
                "last": self.history[-1] if self.history else {}}

    def _out_of_time(self, deadline: float) -> bool:
        """Whether any process has passed ``deadline`` (all ranks agree, so they stop at the same step)."""
        late = time.monotonic() > deadline
        if self.world == 1:
            return late  # no device tensor and no synchronisation on every step of a single process
        flag = torch.tensor(float(late), device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    # ------------------------------------------------------------------------------------------------
    # Checkpoints

    def save_checkpoint(self) -> Path:
        """Write ``checkpoints/step-XXXXXXXX`` atomically and prune old ones.

        Every process writes into one hidden temporary folder; the main one then adds ``trainer.json`` and,
        last, ``manifest.json``, fsyncs every file and folder, and renames the folder into place.
        """
        from ..weights.serialization import save_folder, save_model

        name = f"{CHECKPOINT_PREFIX}{self.step:08d}"
        final, tmp = self.ckpt_dir / name, self.ckpt_dir / f".{name}.tmp"
        if self.is_main:
            with reported_as(final):
                remove_stale_temporaries(self.ckpt_dir)
                tmp.mkdir(parents=True)
        self.acc.wait_for_everyone()
        with reported_as(final):
            if self.is_main:
                save_model(self.student, tmp / "student")
                if self.ema is not None:
                    save_folder(self.ema.full_state(self.student), self.student.config, tmp / "ema")
                save_state(tmp, "optimizer", self.optimizer.state_dict())
            save_state(tmp, f"rng-rank{self.rank}", capture_rng())
        self.acc.wait_for_everyone()
        if self.is_main:
            meta = {"step": self.step, "samples_seen": self.samples_seen, "world_size": self.world,
                    "ema_updates": self.ema.num_updates if self.ema is not None else None}
            with reported_as(final):
                (tmp / TRAINER_STATE_NAME).write_text(json.dumps(meta, indent=2) + "\n")
                write_manifest(tmp)
                publish_folder(tmp, final, replace=True)
            keep = self.config.run.keep_last
            if keep:
                # Only older ones: a newer, damaged checkpoint a resume passed over must not push this one out.
                older = [p for p in find_checkpoints(self.ckpt_dir) if p.name < final.name]
                for old in older[:len(older) - (keep - 1)]:
                    shutil.rmtree(old, ignore_errors=True)
            logger.info("saved %s", final)
        self.acc.wait_for_everyone()
        return final

    def _load_checkpoint(self, folder: Path) -> None:
        from ..weights.official import read_state_dict

        meta = read_json(folder / TRAINER_STATE_NAME)
        self.student.load_state_dict(read_state_dict(folder / "student" / "model.safetensors"), strict=True)
        self.optimizer.load_state_dict(load_state(folder, "optimizer"))
        if self.ema is not None:
            if (folder / "ema").is_dir():
                self.ema.load_state_dict({"shadow": read_state_dict(folder / "ema" / "model.safetensors"),
                                          "num_updates": meta["ema_updates"]})
            else:
                logger.warning("%s has no EMA; the EMA restarts from the current weights", folder)
        self.step, self.samples_seen = int(meta["step"]), int(meta["samples_seen"])
        rng = folder / f"rng-rank{self.rank}.json"
        if rng.is_file() and meta["world_size"] == self.world:
            restore_rng(load_state(folder, f"rng-rank{self.rank}"))
        else:
            logger.warning("no RNG state for rank %d in %s; keyed sample streams are unaffected", self.rank, folder)


def train(config: TrainConfig, stop_at_step: int | None = None) -> dict[str, Any]:
    """Build a :class:`Trainer` from ``config`` and run it. -> summary dict (final step, checkpoint, last scalars)."""
    return Trainer(config).train(stop_at_step=stop_at_step)
