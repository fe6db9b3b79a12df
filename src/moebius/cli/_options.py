"""Options shared by ``moebius inpaint`` and ``moebius batch``, and turning them into a pipeline call.

Only torch-free modules are imported at module level (the weights' locations, the presets and the scheduler
names, from which the choices and defaults below come), so building the parser (and ``--help``) stays fast.
"""

from __future__ import annotations

import argparse
from typing import Any

from typing import get_args

from ..pipeline.prefill import PREFILLS
from ..pipeline.presets import HDStrategy, PasteMode, get_preset, list_presets, preset_summary
from ..schedulers.registry import SCHEDULER_NAMES
from ..weights.locations import DEFAULT_VARIANT, OFFICIAL_VARIANTS

DTYPES = ("float32", "bfloat16", "float16")


def add_model_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument("--weights", metavar="DIR",
                       help="weights folder: official layout (<DIR>/<variant>/diffusion_pytorch_model.bin + <DIR>/vae/) "
                            "or one written by save_pretrained, or a hub id owner/name such as hustvl/Moebius "
                            "(default: $MOEBIUS_HOME or ~/.cache/moebius, else the small model bundled with moebius)")
    group.add_argument("--variant", choices=OFFICIAL_VARIANTS,
                       help=f"official checkpoint (default: {DEFAULT_VARIANT} if present)")
    group.add_argument("--vae", metavar="DIR", help="VAE folder, if not <weights>/vae")
    group.add_argument("--local-files-only", action="store_true",
                       help="with a hub id as --weights: use the cached download only, never the network")
    group.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda, cuda:1, mps")
    group.add_argument("--dtype", default="float32", choices=DTYPES, help="network precision (default float32; float16 on CUDA/MPS only)")
    group.add_argument("--no-fast", action="store_true", help="run the reference U-Net instead of the fast path")
    add_compile_option(group)


def add_compile_option(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--compile", action="store_true",
                       help="torch.compile the U-Net (CUDA graphs on CUDA): the first run per image size compiles "
                            "(minutes on a CPU); kernels are kept in $TORCHINDUCTOR_CACHE_DIR, else "
                            "~/.cache/moebius/inductor, so later runs start fast")


def add_inpaint_options(parser: argparse.ArgumentParser) -> None:
    default, portrait = get_preset("default"), get_preset("portrait")
    group = parser.add_argument_group("inpainting (default: the preset's value)")
    group.add_argument("--preset", default="default", choices=list_presets(),
                       help="; ".join(f"{name}: {preset_summary(name)}" for name in list_presets()))
    group.add_argument("--steps", type=int, dest="num_inference_steps",
                       help=f"sampler steps ({default.num_inference_steps})")
    group.add_argument("--scheduler", choices=SCHEDULER_NAMES, help=f"sampler ({default.scheduler})")
    group.add_argument("--guidance", type=float, dest="guidance_scale",
                       help=f"CFG scale ({default.guidance_scale:.1f} scenes, {portrait.guidance_scale:.1f} portraits)")
    group.add_argument("--strength", type=float, help="1.0 = start from pure noise")
    group.add_argument("--prefill", choices=PREFILLS,
                       help="fill the hole with this OpenCV method first, then refine it (needs --strength < 1)")
    group.add_argument("--seed", type=int, help="random seed (recorded in the output's metadata)")
    group.add_argument("--hd-strategy", choices=get_args(HDStrategy), help=f"large images ({default.hd_strategy})")
    group.add_argument("--crop-margin", type=int, help=f"context around each crop, px ({default.crop_margin})")
    group.add_argument("--crop-trigger-size", type=int,
                       help=f"crop only when the long side exceeds this ({default.crop_trigger_size})")
    group.add_argument("--resize-limit", type=int, help=f"long side for --hd-strategy resize ({default.resize_limit})")
    group.add_argument("--mask-threshold", type=float,
                       help=f"mask values >= this are filled ({default.mask_threshold:g})")
    group.add_argument("--invert-mask", action="store_true", default=None, help="fill the black part instead")
    group.add_argument("--mask-dilate", type=int, help="grow the mask by this many px")
    group.add_argument("--mask-blur", type=float, help=f"feather radius of the paste-back, px ({default.mask_blur:g})")
    group.add_argument("--resize-mask", action="store_true", default=None,
                       help="resize a mask of another size to the image instead of refusing it")
    group.add_argument("--paste", choices=get_args(PasteMode), help=f"how results are pasted back ({default.paste})")
    group.add_argument("--compensate", action="store_true", default=None,
                       help="match the filled region's mean colour to its surroundings")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


_CALL_OPTIONS = ("num_inference_steps", "scheduler", "guidance_scale", "strength", "prefill", "hd_strategy",
                 "crop_margin", "crop_trigger_size", "resize_limit", "mask_threshold", "invert_mask", "mask_dilate", "mask_blur",
                 "resize_mask", "paste", "compensate")


def call_options(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments for the pipeline call; unset options keep the preset's value."""
    options = {name: getattr(args, name) for name in _CALL_OPTIONS if getattr(args, name) is not None}
    options["preset"] = args.preset
    return options


def choose_weights(weights: str | None) -> str:
    """What to load: ``--weights`` when given; else the official weights folder ($MOEBIUS_HOME or
    ~/.cache/moebius) when it holds weights; else the small model bundled with the package, said once on
    stderr; else the official folder anyway, whose loading error says which files to put where."""
    import sys

    from ..weights import default_model_dir
    from ..weights.locations import default_weights_dir, holds_weights

    if weights:
        return weights
    official = default_weights_dir()
    bundled = default_model_dir()
    if holds_weights(official) or bundled is None:
        return str(official)
    print(f"moebius: no official weights in {official}; using the small model bundled with moebius "
          f"({bundled / 'MODEL_CARD.md'}). For the official model: moebius download, or --weights DIR.",
          file=sys.stderr)
    return str(bundled)


def load_pipeline(args: argparse.Namespace) -> Any:
    """Build the pipeline the model options describe, on the chosen device and dtype; an ONNX export folder
    gives the torch-free :class:`~moebius.onnx.pipeline.OnnxInpaintPipeline` (CPU, its exported precision)."""
    from ..onnx.layout import is_export_folder

    weights = choose_weights(args.weights)
    if is_export_folder(weights):
        from ..onnx.pipeline import OnnxInpaintPipeline

        if args.compile:
            from ..errors import InputError

            raise InputError(f"--compile compiles torch weights; {weights} is an ONNX export")

        onnx_pipe = OnnxInpaintPipeline(weights)
        onnx_pipe.set_progress_bar_config(disable=True if args.quiet else None)
        return onnx_pipe

    from ..pipeline.builder import build_pipeline

    pipe = build_pipeline(weights, variant=args.variant, vae=args.vae, device=args.device,
                          dtype=args.dtype, fast=not args.no_fast, local_files_only=args.local_files_only,
                          compile=args.compile)
    pipe.set_progress_bar_config(disable=True if args.quiet else None)
    return pipe


def metadata_text(meta: Any) -> dict[str, str]:
    """PNG text chunks recording how an output was made."""
    return {"moebius": meta.to_json()}
