"""``moebius train CONFIG.yaml`` (distillation, fine-tuning, teacher-free), ``moebius train-autoencoder`` and
``moebius gen-masks``.

Wire into the command group with ``register(subparsers)``. Multi-GPU / multi-node: run the same command
under ``accelerate launch -m moebius train CONFIG.yaml`` (see docs/training.md).
"""

from __future__ import annotations

import argparse
import logging


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``train``, ``train-autoencoder`` and ``gen-masks`` subcommands."""
    train = subparsers.add_parser(
        "train", help="train or fine-tune a student (distillation from PixelHacker, or teacher-free)",
        description="Run a training config (see configs/*.yaml and docs/training.md). Continues from the newest "
                    "checkpoint in run.output_dir unless --resume says otherwise.")
    train.add_argument("config", help="training YAML; unknown keys are errors")
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override one config entry (YAML value), e.g. --set optim.lr=1e-4; repeatable")
    train.add_argument("--output-dir", help="shorthand for --set run.output_dir=DIR")
    train.add_argument("--resume", metavar="auto|none|DIR",
                       help="'auto' (newest checkpoint in the output folder), 'none' (fresh run) or a checkpoint folder")
    train.add_argument("--max-steps", type=int, help="shorthand for --set run.max_steps=N")
    train.add_argument("--stop-at-step", type=int, metavar="N",
                       help="checkpoint and stop at step N without changing the schedule (resume later)")
    train.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    train.set_defaults(run=run_train)

    auto = subparsers.add_parser(
        "train-autoencoder", help="train the KL-VAE (or fit the space-to-depth transform) of a small model",
        description="Run an autoencoder config (configs/small/autoencoder_*.yaml); writes OUTPUT_DIR/autoencoder/, "
                    "which a training config's vae.weights and the pipeline load.")
    auto.add_argument("config", help="autoencoder YAML; unknown keys are errors")
    auto.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                      help="override one config entry (YAML value); repeatable")
    auto.add_argument("--output-dir", help="shorthand for --set run.output_dir=DIR")
    auto.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    auto.set_defaults(run=run_train_autoencoder)

    masks = subparsers.add_parser(
        "gen-masks", help="write a reproducible set of random training/evaluation masks",
        description="Draw COUNT masks from a LaMa-style preset with SEED; mask i depends only on (preset, seed, i), "
                    "so a larger set extends a smaller one. White = hole.")
    masks.add_argument("output", help="a new (or empty) folder")
    masks.add_argument("--preset", default="medium_512",
                       help="thin_256, thin_512, medium_256, medium_512, thick_256 or thick_512 (default medium_512)")
    masks.add_argument("--count", type=int, default=1000)
    masks.add_argument("--seed", type=int, default=0)
    masks.add_argument("--size", type=int, nargs="+", metavar="PX",
                       help="mask size: one side, or HEIGHT WIDTH (default: the preset's resolution)")
    masks.set_defaults(run=run_gen_masks)


def _overrides(args: argparse.Namespace) -> list[str]:
    from ..errors import ConfigError

    out = list(args.overrides)
    if args.output_dir:
        out.append(f"run.output_dir={args.output_dir}")
    if args.max_steps is not None:
        out.append(f"run.max_steps={args.max_steps}")
    if args.resume is not None:
        if args.resume == "none":
            out.append("run.resume=null")
        elif args.resume.strip() in ("", "null"):
            raise ConfigError("--resume takes 'auto', 'none' or a checkpoint folder")
        else:
            out.append(f"run.resume={args.resume}")
    return out


def run_train(args: argparse.Namespace) -> int:
    from ..errors import InputError
    from ..train.config import dump_config, load_config

    config = load_config(args.config, _overrides(args))
    if args.print_config:
        print(dump_config(config), end="")
        return 0
    if args.stop_at_step is not None and args.stop_at_step < 1:
        raise InputError("--stop-at-step must be at least 1")
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from ..train.trainer import train

    summary = train(config, stop_at_step=args.stop_at_step)
    print(f"stopped at step {summary['step']}; checkpoint: {summary['checkpoint']}")
    return 0


def run_train_autoencoder(args: argparse.Namespace) -> int:
    from ..train.autoencoder import load_autoencoder_config, train_autoencoder
    from ..train.config import dump_config

    overrides = list(args.overrides) + ([f"run.output_dir={args.output_dir}"] if args.output_dir else [])
    config = load_autoencoder_config(args.config, overrides)
    if args.print_config:
        print(dump_config(config), end="")
        return 0
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    print(f"saved {train_autoencoder(config)}")
    return 0


def run_gen_masks(args: argparse.Namespace) -> int:
    from ..errors import InputError
    from ..mask_generators import write_mask_set

    size = None
    if args.size:
        if len(args.size) > 2:
            raise InputError("--size takes one side or HEIGHT WIDTH")
        size = (args.size[0], args.size[-1])
    paths = write_mask_set(args.output, args.preset, args.count, args.seed, size)
    print(f"wrote {len(paths)} masks to {args.output}")
    return 0
