"""``moebius doctor`` (what this machine offers and where weights are looked for) and ``moebius download``."""

from __future__ import annotations

import argparse
import importlib.util
import platform
from pathlib import Path

from ..weights.locations import DEFAULT_VARIANT, OFFICIAL_VARIANTS


def register(commands: argparse._SubParsersAction) -> None:
    doctor = commands.add_parser("doctor", help="show torch, devices, dtypes and where weights are looked for")
    doctor.add_argument("--weights", metavar="DIR", help="weights folder to inspect (default: $MOEBIUS_HOME or ~/.cache/moebius)")
    doctor.set_defaults(run=run_doctor)

    download = commands.add_parser(
        "download", help="download the official weights from the Hugging Face hub",
        description="Fetch hf.co/hustvl/Moebius/<variant>/ and hf.co/hustvl/PixelHacker/vae/ into the official "
                    "layout (needs the huggingface_hub package and a network connection).")
    download.add_argument("--variant", default=DEFAULT_VARIANT, choices=(*OFFICIAL_VARIANTS, "all"))
    download.add_argument("--weights", metavar="DIR", help="target folder (default: $MOEBIUS_HOME or ~/.cache/moebius)")
    download.add_argument("--local-files-only", action="store_true", help="only check the hub cache, no network")
    download.set_defaults(run=run_download)


def _inspect_weights(root: Path) -> list[str]:
    from ..weights.locations import PIPELINE_FILE, VAE_WEIGHT_NAMES

    if not root.is_dir():
        return ["(folder does not exist)"]
    if (root / PIPELINE_FILE).is_file():
        return [f"pipeline folder ({PIPELINE_FILE}, unet/, vae/)"]
    lines = []
    for variant in OFFICIAL_VARIANTS:
        found = [p.name for p in sorted((root / variant).glob("*")) if p.is_file()] if (root / variant).is_dir() else []
        lines.append(f"{variant}: {', '.join(found) if found else 'missing'}")
    vae = [n for n in ("config.json", *VAE_WEIGHT_NAMES) if (root / "vae" / n).is_file()]
    lines.append(f"vae: {', '.join(vae) if vae else 'missing'}")
    return lines


def run_doctor(args: argparse.Namespace) -> int:
    import torch

    from .. import __version__
    from ..pipeline.builder import resolve_device
    from ..weights import default_model_dir
    from ..weights.locations import default_weights_dir

    root = Path(args.weights) if args.weights else default_weights_dir()
    cuda = torch.cuda.is_available()
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    rows = [
        ("moebius", __version__),
        ("python", platform.python_version()),
        ("torch", torch.__version__),
        ("cpu threads", str(torch.get_num_threads())),
        ("cuda", ", ".join(f"{i}: {torch.cuda.get_device_name(i)}" for i in range(torch.cuda.device_count()))
         if cuda else "not available"),
        ("mps", "available" if mps else "not available"),
        ("device (auto)", resolve_device("auto")),
        ("dtypes", "float32 (default), bfloat16" + (", float16" if cuda or mps else "")),
        ("huggingface_hub", "installed" if importlib.util.find_spec("huggingface_hub") else
         "not installed (moebius download needs it; manual download works without)"),
        ("weights", f"{root}  (set with --weights or $MOEBIUS_HOME)"),
        ("bundled model", str(default_model_dir() or "none in this installation")),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    for line in _inspect_weights(root):
        print(f"{'':<{width}}  {line}")
    return 0


def run_download(args: argparse.Namespace) -> int:
    from ..weights.locations import default_weights_dir, fetch_official

    root = Path(args.weights) if args.weights else default_weights_dir()
    variants = OFFICIAL_VARIANTS if args.variant == "all" else (args.variant,)
    fetch_official(root, variants, args.local_files_only)
    print(f"weights in {root}: {', '.join(variants)} + vae")
    return 0
