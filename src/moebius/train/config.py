"""The training configuration: a tree of dataclasses, read from YAML strictly.

Every knob of a run lives here; nothing else reads flags. An unknown key, a value of the wrong type or an
out-of-range value is a :class:`~moebius.errors.ConfigError` that names the dotted key
(``loss.adaptive.mode``). Defaults are the paper's distillation recipe with the loss multipliers of
the released demo config (docs/training.md, "The recipes"); ``configs/*.yaml`` spell out the
variants.

Typical use::

    config = load_config("configs/moebius_distill.yaml", overrides=["run.max_steps=1000"])
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

from ..errors import ConfigError


@dataclass
class RunConfig:
    """Where a run writes, how long it lasts, and how often it logs and saves."""

    output_dir: str = "runs/moebius-distill"
    seed: int = 42
    max_steps: int = 138_000  # optimizer steps
    # Wall-clock guard: checkpoint and stop once this many minutes have passed (null: no limit). The run
    # can resume later; the schedule still follows max_steps.
    time_limit_minutes: float | None = None
    log_every: int = 10
    save_every: int = 3000
    keep_last: int = 3  # checkpoints kept on disk; 0 keeps all
    # "auto": continue from the newest checkpoint in output_dir if there is one; a checkpoint folder; or
    # null: start fresh (refused when output_dir already holds checkpoints).
    resume: str | None = "auto"
    tensorboard: bool = True


@dataclass
class ModelConfig:
    """The student (trained), the teacher (frozen; null for teacher-free training) and memory options."""

    # Preset name, used when student_weights is null. Any registered preset: "moebius", "moebius-tiny", or a
    # PixelHacker preset to train a teacher-shaped network (teacher-free).
    student: str = "moebius"
    student_overrides: dict[str, Any] = field(default_factory=dict)  # config fields replaced on the preset
    # Fine-tuning: an official diffusion_pytorch_model.bin, or one of our folders (config.json +
    # model.safetensors, e.g. a training checkpoint's student/). Its config replaces the preset's.
    student_weights: str | None = None
    teacher: str | None = "pixelhacker"  # preset name; null = teacher-free (task and perceptual losses only)
    teacher_overrides: dict[str, Any] = field(default_factory=dict)
    teacher_weights: str | None = None  # official PixelHacker .bin or our folder; null = random (tests only)
    gradient_checkpointing: bool = False
    # Batch statistics over all processes (the released code keeps them per GPU); no effect on one process.
    sync_batchnorm: bool = True


@dataclass
class VAESettings:
    """The frozen encoder that maps images to latents (the decoder is never used in training)."""

    weights: str | None = None  # a folder with config.json + diffusion_pytorch_model.*; null = random
    preset: Literal["official", "tiny"] = "official"  # architecture when weights is null (tests only)
    sample_posterior: bool = True  # official: z = mean + std·noise; false: the posterior mean
    dtype: Literal["float32", "bfloat16"] = "float32"


@dataclass
class DataConfig:
    """Datasets, masks and augmentations."""

    jsonl: list[str] = field(default_factory=list)  # official format, paths relative to each file
    image_dirs: list[str] = field(default_factory=list)  # plain folders: every image is a "background" item
    resolution: int = 512  # square crop side in pixels
    batch_size: int = 2  # per process; global batch = batch_size × processes × accumulation steps
    num_workers: int = 4
    random_mask_p: float = 0.5  # background items: probability of a generated mask over the item's own
    mask_preset: str = "medium_512"  # masks.PRESETS
    object_mask_dirs: list[str] = field(default_factory=list)  # extra object-shaped masks
    # Background items: probability of combining the mask with a random object mask (from object_mask_dirs
    # and the foreground items' masks). Official use_extra_fg_mask=True means 0.5.
    object_mask_p: float = 0.0
    object_mask_combine: Literal["and", "or"] = "and"  # official: "and"
    dilate_p: float = 0.99
    dilate_kernels: list[int] = field(default_factory=lambda: [3, 5, 7])
    dilate_iterations: list[int] = field(default_factory=lambda: [1, 2])
    flip_p: float = 0.5
    min_hole_overlap: float = 0.5  # hole-biased crop: share of the hole kept inside the crop
    # Classifier-free guidance contrasts the background ids with the foreground ids. A set of background
    # items alone never trains the foreground embeddings; with this probability a background item is given
    # the foreground ids instead (condition dropout), so that branch learns the unconditioned fill.
    category_dropout_p: float = 0.0


@dataclass
class NoiseConfig:
    """Forward process: timestep distribution and offset noise."""

    timesteps: Literal["logit_normal", "uniform"] = "logit_normal"
    logit_mean: float = 0.0
    logit_std: float = 1.0
    noise_offset: float = 0.0357
    # The network's output and task target: "epsilon" (the official models; a distillation teacher must
    # predict what its student does) or "v_prediction" (v = √ᾱ·ε − √(1−ᾱ)·x0, moebius.schedulers.ddim).
    prediction_type: Literal["epsilon", "v_prediction"] = "epsilon"
    # Timesteps are drawn from [0, max_timestep): below the scheduler's 1000, a refiner that only ever
    # denoises a pre-filled image from low noise (pipeline strength <= max_timestep / 1000).
    max_timestep: int = 1000
    # true: every process draws the noise, timesteps and augmentation of the first process's samples, as
    # the released code (one seed on every rank); false: each sample its own, so processes differ.
    same_on_every_rank: bool = False


@dataclass
class AdaptiveConfig:
    """Gradient-norm loss weighting (paper Eq. 4-5, or the released code's variant)."""

    # "paper": squared norm ratios, W_C balances L_C_KD against the whole output group;
    # "official": plain ratios with eps and clamps, W_C from the task loss only; "off": all weights 1.
    mode: Literal["paper", "official", "off"] = "official"
    # θ_F, the final output layer: "auto" = diff_model.conv_out.conv_pw.weight (the student's pointwise conv),
    # or diff_model.conv_out.weight for a PixelHacker-shaped network trained teacher-free.
    output_probe: str = "auto"
    feature_probe: str = "auto"  # θ_C: "auto" = the last layer producing the student's KD feature
    eps_output: float = 1e-6  # added to the denominator norm (official) or squared norm (paper)
    eps_feature: float = 1e-4
    max_output: float = 1e6  # clamp of the output-side weights
    max_feature: float = 1e4  # clamp of W_C
    sync: bool = True  # average the probe gradients over processes so every rank uses the same weights


@dataclass
class PerceptualConfig:
    """E-LatentLPIPS between predicted clean latents."""

    weights: str | None = None  # the released sdxl_latest_vgg16_tuned.pth, or our .safetensors
    ensembling: bool = True  # random geometric augmentation, shared by both inputs
    add_l1: bool = True
    # Quirks of the released code, off by default:
    official_double_scaling: bool = False  # multiply the (already scaled) latents by 0.13025 again
    official_x0_reference: bool = False  # reference x̂0 rebuilt from x_t and ε instead of the clean latent


@dataclass
class LossConfig:
    """Static multipliers λ (0 disables a loss) and the adaptive weighting on top of them."""

    task_weight: float = 0.5
    output_kd_weight: float = 0.01
    feature_kd_weight: float = 0.01
    perceptual_weight: float = 0.5
    # [student block index, teacher block index] pairs; student 2 = last down block, teacher 5 = first up block.
    feature_pairs: list[list[int]] = field(default_factory=lambda: [[2, 5]])
    adaptive: AdaptiveConfig = field(default_factory=AdaptiveConfig)
    perceptual: PerceptualConfig = field(default_factory=PerceptualConfig)


@dataclass
class OptimConfig:
    """Muon for matrices + AdamW for the rest, learning-rate milestones."""

    optimizer: Literal["muon_adamw", "adamw"] = "muon_adamw"
    lr: float = 2e-4
    weight_decay: float = 0.1
    # Weight decay of the AdamW group (biases, norms, embedding table, conv_in/conv_out). The released code
    # uses 0.1 for everything; 0 keeps the untrained CFG embeddings from shrinking.
    adamw_weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    eps: float = 1e-8
    momentum: float = 0.95
    nesterov: bool = True
    ns_steps: int = 5
    muon_backend: Literal["auto", "torch", "moebius"] = "auto"  # auto: torch.optim.Muon when it exists
    # Muon's step 0.2·√max(A, B): A, B the sides of the orthogonalised matrix (C_out, C_in·k·k), the RMS
    # match; "leading": the parameter's first two dimensions, as the released code (smaller conv steps).
    muon_scale_shape: Literal["matrix", "leading"] = "matrix"
    # The AdamW group of muon_adamw: torch.optim.AdamW, or "moonlight", the released code's (eps added to the
    # uncorrected √v; differs only for near-zero gradients).
    adamw_form: Literal["torch", "moonlight"] = "torch"
    adamw_names: list[str] = field(default_factory=lambda: ["embedding_layer", "conv_in", "conv_out"])
    warmup_steps: int = 0
    milestones: list[int] = field(default_factory=lambda: [111_000, 129_000])
    gamma: float = 0.1
    max_grad_norm: float = 1.0  # 0 disables clipping
    gradient_accumulation_steps: int = 1


@dataclass
class EMAConfig:
    """Exponential moving average of the student's parameters and BatchNorm statistics."""

    enabled: bool = False
    decay: float = 0.9999
    warmup: bool = True  # update n (from 1) uses min(decay, (1 + n) / (10 + n)), as the released code
    every: int = 1
    # false: parameters only, as the released code; the EMA folder then carries the live statistics.
    batchnorm_statistics: bool = True


@dataclass
class TrainConfig:
    """A whole training run."""

    run: RunConfig = field(default_factory=RunConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    vae: VAESettings = field(default_factory=VAESettings)
    data: DataConfig = field(default_factory=DataConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    ema: EMAConfig = field(default_factory=EMAConfig)
    mixed_precision: Literal["no", "bf16"] = "bf16"  # bf16 autocast; master weights stay float32

    def __post_init__(self) -> None:
        validate(self)


# ----------------------------------------------------------------------------------------------------
# Strict construction from plain data


def from_dict(cls: type, data: Any, path: str = "") -> Any:
    """Build dataclass ``cls`` from nested dicts; every unknown key or bad value names its dotted path."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(str(k) for k in data if k not in names)
    if unknown:
        where = f" in {path}" if path else ""
        raise ConfigError(f"unknown config key{'s' if len(unknown) > 1 else ''}{where}: "
                          + ", ".join(f"{path + '.' if path else ''}{k}" for k in unknown))
    kwargs = {key: _coerce(value, hints[key], f"{path}.{key}" if path else key) for key, value in data.items()}
    return cls(**kwargs)


def _coerce(value: Any, hint: Any, path: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, path)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        rest = [a for a in args if a is not type(None)]
        return _coerce(value, rest[0], path)
    if origin is Literal:
        if isinstance(value, bool):  # YAML 1.1 reads a bare no/off (yes/on) as a boolean
            words = [w for w in (("yes", "on") if value else ("no", "off")) if w in args]
            value = words[0] if words else value
        if value not in args:
            raise ConfigError(f"{path}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        return [_coerce(v, args[0], f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        return dict(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return value
    if hint is Any:
        return value
    raise ConfigError(f"{path}: unsupported config type {hint}")  # pragma: no cover - a bug in this file


def validate(config: TrainConfig) -> None:
    """Range checks that a type cannot express."""
    from ..mask_generators import PRESETS

    def need(ok: bool, key: str, message: str) -> None:
        if not ok:
            raise ConfigError(f"{key}: {message}")

    need(config.run.max_steps >= 1, "run.max_steps", "must be at least 1")
    need(config.run.log_every >= 1 and config.run.save_every >= 1, "run.log_every/save_every", "must be at least 1")
    need(config.run.keep_last >= 0, "run.keep_last", "must be >= 0")
    need(config.run.time_limit_minutes is None or config.run.time_limit_minutes > 0, "run.time_limit_minutes",
         "must be positive")
    need(config.data.resolution >= 8 and config.data.resolution % 8 == 0, "data.resolution",
         "must be a positive multiple of 8")
    need(config.data.batch_size >= 1, "data.batch_size", "must be at least 1")
    need(config.data.num_workers >= 0, "data.num_workers", "must be >= 0")
    need(config.data.mask_preset in PRESETS, "data.mask_preset", f"unknown preset; known: {', '.join(sorted(PRESETS))}")
    for key in ("random_mask_p", "object_mask_p", "dilate_p", "flip_p", "min_hole_overlap", "category_dropout_p"):
        need(0.0 <= getattr(config.data, key) <= 1.0, f"data.{key}", "must lie in [0, 1]")
    need(bool(config.data.dilate_kernels) and all(k >= 1 and k % 2 for k in config.data.dilate_kernels),
         "data.dilate_kernels", "must be odd positive sizes")
    need(bool(config.data.dilate_iterations) and all(i >= 1 for i in config.data.dilate_iterations),
         "data.dilate_iterations", "must be positive")
    need(config.noise.logit_std > 0, "noise.logit_std", "must be positive")
    from ..schedulers.ddim import DDIMConfig  # the schedule the trainer noises with

    train_steps = DDIMConfig().num_train_timesteps
    need(0 < config.noise.max_timestep <= train_steps, "noise.max_timestep",
         f"must lie in [1, {train_steps}], the noise schedule's training timesteps")
    for key in ("task_weight", "output_kd_weight", "feature_kd_weight", "perceptual_weight"):
        need(getattr(config.loss, key) >= 0, f"loss.{key}", "must be >= 0")
    need(all(len(p) == 2 for p in config.loss.feature_pairs), "loss.feature_pairs", "each entry is [student, teacher]")
    need(config.optim.lr > 0, "optim.lr", "must be positive")
    need(len(config.optim.betas) == 2 and all(0 <= b < 1 for b in config.optim.betas), "optim.betas",
         "two numbers in [0, 1)")
    need(config.optim.gradient_accumulation_steps >= 1, "optim.gradient_accumulation_steps", "must be at least 1")
    need(config.optim.milestones == sorted(config.optim.milestones), "optim.milestones", "must be increasing")
    need(config.optim.max_grad_norm >= 0, "optim.max_grad_norm", "must be >= 0 (0 disables clipping)")
    need(0 < config.ema.decay < 1 and config.ema.every >= 1, "ema", "decay in (0, 1), every >= 1")


# ----------------------------------------------------------------------------------------------------
# YAML


def _yaml() -> Any:
    """The ``yaml`` module (PyYAML, in the ``train`` extra), or a one-line ConfigError naming the extra."""
    try:
        import yaml
    except ImportError:
        raise ConfigError("training configs need PyYAML: pip install 'moebius-inpaint[train]'") from None
    return yaml


def apply_override(data: dict[str, Any], override: str) -> None:
    """Set ``a.b.c=value`` (value parsed as YAML) in nested dict ``data``."""
    yaml = _yaml()

    key, sep, raw = override.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {override!r} is not KEY=VALUE (e.g. run.max_steps=100)")
    node = data
    parts = key.strip().split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {override!r}: {part} is not a section")
        node = child
    try:
        node[parts[-1]] = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {override!r}: value is not valid YAML ({exc})") from None


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Read a YAML file (or start from the defaults when ``path`` is None) and apply ``KEY=VALUE`` overrides."""
    return load_yaml_config(TrainConfig, path, overrides)


def load_yaml_config(cls: type, path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> Any:
    """Config dataclass ``cls`` from a YAML file (its defaults when ``path`` is None) plus overrides, strictly."""
    yaml = _yaml()

    data: Any = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the top level must be a mapping")
    for override in overrides:
        apply_override(data, override)
    return from_dict(cls, data)


def config_to_dict(config: Any) -> dict[str, Any]:
    """Plain nested dict of a config (what ``dump_config`` writes and ``from_dict`` reads back)."""
    return dataclasses.asdict(config)


def dump_config(config: Any) -> str:
    """The resolved config as YAML (keys in declaration order)."""
    return _yaml().safe_dump(config_to_dict(config), sort_keys=False)
