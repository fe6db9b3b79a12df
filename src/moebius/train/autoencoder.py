"""Training the autoencoder of a small model: a KL-VAE of the official family, or a fitted space-to-depth.

The official Moebius works in the SDXL VAE's latent space; a small model trained here needs an
autoencoder of its own. ``kind: kl`` trains an :class:`~moebius.models.vae.AutoencoderKL` (the official
architecture, fewer and narrower levels) with an L1 reconstruction loss, a light KL term and, with
``loss.perceptual_weight``, ST-LPIPS, from scratch or from an earlier one (``model.init_weights``), then sets
its ``scaling_factor`` so that training latents have unit variance. ``kind: space_to_depth`` has nothing
to learn: it fits the per-colour statistics of :class:`~moebius.models.space_to_depth.SpaceToDepth`.

Run: ``moebius train-autoencoder CONFIG.yaml``; the result is ``<output_dir>/autoencoder/`` (config.json +
diffusion_pytorch_model.safetensors), which ``vae.weights`` of a training config and the pipeline load.
Runs are short (minutes), so there is no mid-run checkpoint or resume; ``run.time_limit_minutes`` stops
early and still saves.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from ..errors import ConfigError
from ..files import atomic_folder, write_text
from .config import dump_config, load_yaml_config

logger = logging.getLogger("moebius.train")


@dataclass
class AutoencoderRunConfig:
    output_dir: str = "runs/autoencoder"
    seed: int = 0
    max_steps: int = 3000
    log_every: int = 50
    time_limit_minutes: float | None = None  # stop early (and save) after this many minutes


@dataclass
class AutoencoderModelConfig:
    """``kl``: an AutoencoderKL with these fields; ``space_to_depth``: only ``factor`` matters."""

    kind: Literal["kl", "space_to_depth"] = "kl"
    block_out_channels: list[int] = field(default_factory=lambda: [64, 128, 128])  # f = 2^(levels - 1)
    layers_per_block: int = 1
    latent_channels: int = 4
    norm_num_groups: int = 32
    mid_block_add_attention: bool = True
    factor: int = 4
    init_weights: str | None = None  # kl: start from this autoencoder folder (its architecture must match)


@dataclass
class AutoencoderDataConfig:
    image_dirs: list[str] = field(default_factory=list)
    resolution: int = 256  # images are resized to this short side, then square-cropped at random
    batch_size: int = 16
    num_workers: int = 4
    flip_p: float = 0.5
    stats_images: int = 256  # images used to fit the latent scale (kl) or colour statistics (space_to_depth)


@dataclass
class AutoencoderLossConfig:
    l1_weight: float = 1.0
    mse_weight: float = 0.0
    kl_weight: float = 1e-6  # on the per-element mean KL, so the latents stay close to an autoencoder's
    # ST-LPIPS (VGG, the stlpips-pytorch weights) between reconstruction and input, as LDM's autoencoders add
    # LPIPS to L1: an L1-only decoder blurs texture, which a perceptual benchmark then charges every fill.
    perceptual_weight: float = 0.0


@dataclass
class AutoencoderOptimConfig:
    lr: float = 5e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.99])
    weight_decay: float = 0.0
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1  # cosine decay to lr × this at max_steps
    max_grad_norm: float = 1.0


@dataclass
class AutoencoderTrainConfig:
    run: AutoencoderRunConfig = field(default_factory=AutoencoderRunConfig)
    model: AutoencoderModelConfig = field(default_factory=AutoencoderModelConfig)
    data: AutoencoderDataConfig = field(default_factory=AutoencoderDataConfig)
    loss: AutoencoderLossConfig = field(default_factory=AutoencoderLossConfig)
    optim: AutoencoderOptimConfig = field(default_factory=AutoencoderOptimConfig)
    mixed_precision: Literal["no", "bf16"] = "no"

    def __post_init__(self) -> None:
        r, d = self.run, self.data
        if r.max_steps < 1 or r.log_every < 1:
            raise ConfigError("run.max_steps and run.log_every must be at least 1")
        if r.time_limit_minutes is not None and r.time_limit_minutes <= 0:
            raise ConfigError("run.time_limit_minutes: must be positive")
        if d.resolution < 8 or d.batch_size < 1 or d.num_workers < 0 or d.stats_images < 1:
            raise ConfigError("data: resolution >= 8, batch_size >= 1, num_workers >= 0, stats_images >= 1")
        if not d.image_dirs:
            raise ConfigError("data.image_dirs: name at least one folder of training images")
        if self.model.factor < 1:
            raise ConfigError("model.factor must be positive")
        loss = self.loss
        if min(loss.l1_weight, loss.mse_weight, loss.kl_weight, loss.perceptual_weight) < 0:
            raise ConfigError("loss weights must be non-negative")


def load_autoencoder_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> AutoencoderTrainConfig:
    """Read a YAML file strictly and apply ``KEY=VALUE`` overrides (as :func:`~moebius.train.config.load_config`)."""
    return load_yaml_config(AutoencoderTrainConfig, path, overrides)


class ImageCrops(torch.utils.data.Dataset):
    """``dataset[key]`` -> a (3, S, S) crop in [-1, 1]; image order and crop are fixed by (seed, key)."""

    def __init__(self, paths: list[Path], config: AutoencoderDataConfig, seed: int) -> None:
        from .data import KeyOrder

        if not paths:
            raise ConfigError("data.image_dirs holds no images")
        self.paths, self.config, self.seed = paths, config, seed
        self.index_of = KeyOrder(len(paths), seed)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key: int) -> torch.Tensor:
        from PIL import Image

        from .data import resize_short_side

        size = self.config.resolution
        rng = np.random.default_rng([self.seed, int(key)])
        with Image.open(self.paths[self.index_of(int(key))]) as opened:
            pixels = np.asarray(resize_short_side(opened.convert("RGB"), size), np.float32) / 127.5 - 1.0
        h, w = pixels.shape[:2]
        top, left = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
        pixels = pixels[top:top + size, left:left + size]
        if rng.random() < self.config.flip_p:
            pixels = pixels[:, ::-1]
        return torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1)


def build_autoencoder(config: AutoencoderModelConfig) -> torch.nn.Module:
    """A fresh autoencoder of ``config``'s kind."""
    if config.kind == "space_to_depth":
        from ..models.space_to_depth import SpaceToDepth, SpaceToDepthConfig

        return SpaceToDepth(SpaceToDepthConfig(factor=config.factor))
    from ..models.vae import AutoencoderKL, VAEConfig

    return AutoencoderKL(VAEConfig(block_out_channels=tuple(config.block_out_channels),
                                   layers_per_block=config.layers_per_block, latent_channels=config.latent_channels,
                                   norm_num_groups=config.norm_num_groups,
                                   mid_block_add_attention=config.mid_block_add_attention, scaling_factor=1.0))


def _lr_factor(step: int, config: AutoencoderOptimConfig, max_steps: int) -> float:
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, max_steps - config.warmup_steps)
    return config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def kl_divergence(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Mean over elements of KL(N(mean, exp(logvar)) || N(0, 1))."""
    return 0.5 * (mean.square() + logvar.exp() - 1.0 - logvar).mean()


def psnr(x: torch.Tensor, y: torch.Tensor) -> float:
    """PSNR in dB between images in [-1, 1] (batch mean of per-image values)."""
    mse = ((x.clamp(-1, 1) - y) / 2).square().flatten(1).mean(1).clamp_min(1e-10)
    return float((-10 * torch.log10(mse)).mean())


class _Reconstruction(torch.nn.Module):
    """images -> (reconstruction from a posterior sample, posterior mean, posterior log-variance)."""

    def __init__(self, autoencoder: torch.nn.Module) -> None:
        super().__init__()
        self.autoencoder = autoencoder

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        posterior = self.autoencoder.encode(x)
        return self.autoencoder.decode(posterior.sample()), posterior.mean, posterior.logvar


class AutoencoderTrainer:
    """Trains (``kl``) or fits (``space_to_depth``) the autoencoder of ``config``; ``run()`` saves it."""

    def __init__(self, config: AutoencoderTrainConfig) -> None:
        try:
            from accelerate import Accelerator
        except ImportError:
            raise ConfigError("training needs accelerate: pip install 'moebius-inpaint[train]'") from None
        from .data import KeySampler
        from ..mask_generators import list_images

        self.config = config
        on_cpu = not (torch.cuda.is_available() or torch.backends.mps.is_available())
        self.acc = Accelerator(mixed_precision=config.mixed_precision, cpu=on_cpu)
        self.out = Path(config.run.output_dir)
        torch.manual_seed(config.run.seed)
        self.model = build_autoencoder(config.model)
        if config.model.init_weights:
            self._load_initial(Path(config.model.init_weights))
        self.perceptual = None
        if config.loss.perceptual_weight > 0:
            from ..perceptual.lpips import load_lpips

            self.perceptual = load_lpips("vgg", "shift-tolerant").to(self.acc.device)
        paths = [p for folder in config.data.image_dirs for p in list_images(folder)]
        dataset = ImageCrops(paths, config.data, config.run.seed)
        sampler = KeySampler(config.data.batch_size, self.acc.process_index, self.acc.num_processes)
        self.loader = torch.utils.data.DataLoader(dataset, batch_size=config.data.batch_size, sampler=sampler,
                                                  num_workers=config.data.num_workers, drop_last=True,
                                                  persistent_workers=config.data.num_workers > 0)
        self.history: list[dict[str, float]] = []

    def _load_initial(self, folder: Path) -> None:
        from ..weights.vae import load_vae

        if self.config.model.kind != "kl":
            raise ConfigError("model.init_weights: only a kl autoencoder starts from weights")
        start = load_vae(folder)
        try:
            self.model.load_state_dict(start.state_dict())
        except RuntimeError as exc:
            raise ConfigError(f"model.init_weights: {folder} does not match model's architecture ({exc})") from None

    def _stats_batches(self) -> Any:
        """The first ``stats_images`` crops of the stream (same on every run with this seed)."""
        seen = 0
        for batch in self.loader:
            yield batch
            seen += batch.shape[0]
            if seen >= self.config.data.stats_images:
                return

    def run(self) -> Path:
        """Train or fit, save ``<output_dir>/autoencoder/`` and ``summary.json``; -> the autoencoder folder."""
        if self.config.model.kind == "space_to_depth":
            self.model.fit(self._stats_batches())
            summary: dict[str, Any] = {"kind": "space_to_depth", "steps": 0}
        else:
            summary = self._train()
        return self._save(summary)

    def _train(self) -> dict[str, Any]:
        params = [p for p in self.model.parameters() if p.requires_grad]
        optim = self.config.optim
        optimizer = torch.optim.AdamW(params, lr=optim.lr, betas=tuple(optim.betas), weight_decay=optim.weight_decay)
        # Through a module's forward, so that DDP (several processes) sees the whole computation.
        model, optimizer = self.acc.prepare(_Reconstruction(self.model.train()), optimizer)
        log_path = self.out / "logs" / "scalars.jsonl"
        if self.acc.is_main_process:
            log_path.parent.mkdir(parents=True, exist_ok=True)
        minutes = self.config.run.time_limit_minutes
        deadline = None if minutes is None else time.monotonic() + 60 * minutes
        batches = iter(self.loader)
        step, start = 0, time.monotonic()
        while step < self.config.run.max_steps:
            if deadline is not None and time.monotonic() > deadline:
                logger.info("run.time_limit_minutes reached at step %d", step)
                break
            for group in optimizer.param_groups:
                group["lr"] = self.config.optim.lr * _lr_factor(step, self.config.optim, self.config.run.max_steps)
            x = next(batches).to(self.acc.device)
            with self.acc.autocast():
                recon, mean, logvar = model(x)
            recon = recon.float()
            l1 = (recon - x).abs().mean()
            mse = (recon - x).square().mean()
            kl = kl_divergence(mean.float(), logvar.float())
            loss = self.config.loss.l1_weight * l1 + self.config.loss.mse_weight * mse + self.config.loss.kl_weight * kl
            perceptual = None
            if self.perceptual is not None:
                perceptual = self.perceptual(recon, x).mean()
                loss = loss + self.config.loss.perceptual_weight * perceptual
            self.acc.backward(loss)
            if self.config.optim.max_grad_norm > 0:
                self.acc.clip_grad_norm_(params, self.config.optim.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            if self.acc.is_main_process and (step % self.config.run.log_every == 0
                                             or step == self.config.run.max_steps):
                scalars = {"step": step, "loss": loss.item(), "l1": l1.item(), "kl": kl.item(),
                           "psnr": psnr(recon.detach(), x), "seconds": time.monotonic() - start}
                if perceptual is not None:
                    scalars["perceptual"] = perceptual.item()
                self.history.append(scalars)
                with log_path.open("a") as f:
                    f.write(json.dumps(scalars) + "\n")
                extra = f"  st-lpips {scalars['perceptual']:.4f}" if perceptual is not None else ""
                logger.info("step %d  l1 %.4f  psnr %.2f dB  kl %.3g%s", step, scalars["l1"], scalars["psnr"],
                            scalars["kl"], extra)
        self.model = self.acc.unwrap_model(model).autoencoder.eval()
        self._set_scaling_factor()
        return {"kind": "kl", "steps": step, "seconds": time.monotonic() - start,
                "last": self.history[-1] if self.history else {},
                "scaling_factor": self.model.config.scaling_factor}

    @torch.no_grad()
    def _set_scaling_factor(self) -> None:
        """scaling_factor = 1 / std of the posterior means over the statistics images (as SD chose 0.18215).

        Means, not samples: the small-model recipe trains on deterministic encodings (sample_posterior false).
        """
        total = torch.zeros(3, dtype=torch.float64)
        for batch in self._stats_batches():
            z = self.model.encode(batch.to(self.acc.device)).mode().double()
            total += torch.stack([torch.tensor(float(z.numel()), dtype=torch.float64), z.sum().cpu(), z.square().sum().cpu()])
        mean = total[1] / total[0]
        std = float((total[2] / total[0] - mean**2).sqrt())
        self.model.config = dataclasses.replace(self.model.config, scaling_factor=round(1.0 / std, 5))

    def _save(self, summary: dict[str, Any]) -> Path:
        from ..weights.vae import save_vae

        folder = self.out / "autoencoder"
        if self.acc.is_main_process:
            with atomic_folder(folder, replace=True) as tmp:
                save_vae(self.model.float().cpu(), tmp)
            write_text(self.out / "config.yaml", dump_config(self.config))
            write_text(self.out / "summary.json", json.dumps(summary, indent=2) + "\n")
            logger.info("saved %s", folder)
        self.acc.wait_for_everyone()
        return folder


def train_autoencoder(config: AutoencoderTrainConfig) -> Path:
    """Build an :class:`AutoencoderTrainer` from ``config`` and run it; -> the saved autoencoder folder."""
    return AutoencoderTrainer(config).run()
