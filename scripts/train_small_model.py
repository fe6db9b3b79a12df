"""Train a small Moebius model by the bundled model's route, from scratch on a CPU, in one command.

    bash scripts/fetch_real_photos.sh ~/.cache/moebius/real_photos          # once, ~25 s
    python scripts/train_small_model.py --photos ~/.cache/moebius/real_photos --out runs/small

About two hours on 2 CPU cores, 94 minutes of them the autoencoder. Its autoencoder, trained from scratch in
that time, is still weaker than the bundled one (which started from a GPU run; its MODEL_CARD.md): Navier–Stokes
through it scores ST-LPIPS 0.106, against 0.103 for the fill alone, so the model it gives does not yet beat the
classical fills (docs/experiments/small-model.md, "One command on a CPU"). Stages (each a ``moebius``
command on a committed config in configs/small/, logged to OUT/logs/):

1. ``photos``: the manifest's ``train`` split (the ``eval`` split stays held out), resized to a 256 short
   side (the scale the model works at) and stored as JPEG q95; then native-scale random crops of them,
   OUT/crops64 (16 a photo) and OUT/crops128 (4 a photo), by scripts/crop_photos.py.
2. the KL-VAE: ``autoencoder64-kl`` from scratch with L1 alone on the 64² crops, then ``autoencoder-kl``
   trains it further with ST-LPIPS on the 128² crops (the bundled autoencoder's order). With ``--variants
   kl s2d`` also ``autoencoder-s2d`` (space-to-depth, fitted statistics), the lossless alternative, which
   lost clearly on inpainting quality at equal steps and at equal time (docs/experiments/small-model.md).
3. per autoencoder, on the 64² crops and at timesteps below 200 (the model refines, it does not generate):
   ``teacher`` (PixelHacker architecture, plain v-MSE) and ``plain`` (the student without distillation);
   then ``distill`` (the student distilled from that teacher). ``plain`` exists for the KL variant only: it
   is the no-distillation twin of the shipped model, trained for as many steps.
4. ``export``: every trained network's EMA weights with its autoencoder as a pipeline folder,
   OUT/<variant>/<network>/pipeline/, loadable by ``MoebiusInpaintPipeline.from_pretrained``, with the
   shipped model's call defaults (Navier–Stokes pre-fill, one step at t = 0, no CFG).
   ``scripts/ship_small_model.py OUT/kl/distill/pipeline --card CARD`` installs one in the package.

``--jobs N`` runs up to N stages at once when their inputs are ready (on a CPU use 1). ``--minutes`` caps
each training stage's wall clock (run.time_limit_minutes): the run then stops and saves early, and its log
says at which step. ``--minutes 4`` caps every denoiser stage at 4 minutes and each autoencoder stage at 2;
``NETWORK=M`` entries set one network's cap (autoencoder, teacher, distill, plain). Rerunning continues
where the stages stopped.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs" / "small"
NETWORKS = ("autoencoder", "teacher", "distill", "plain")  # --minutes keys; "autoencoder" caps both stages
# The exported pipelines refine a Navier–Stokes fill with one denoising step at t = 0 (strength 0.05 of 20
# steps), which is all the low-noise training teaches. The photos are all "background" items, so the
# foreground category embeddings that classifier-free guidance contrasts with stay untrained: no CFG.
SMALL_MODEL_DEFAULTS = {"guidance_scale": 1.0, "prefill": "navier-stokes", "strength": 0.05,
                        "num_inference_steps": 20}
# Native-scale crops of the 256² photos (side, crops per photo): 64² for the first autoencoder stage and
# the denoisers, 128² for the second autoencoder stage.
CROPS = ((64, 16), (128, 4))
# The space-to-depth variant's networks see 48 latent channels (3 colours × 4 × 4) instead of 4.
S2D_CHANNELS = ["model.student_overrides.in_channels=97", "model.student_overrides.out_channels=48"]


@dataclass
class Stage:
    name: str
    command: list[str]
    needs: list[str] = field(default_factory=list)
    after: str | None = None  # "ema": copy the newest checkpoint's EMA to <run>/ema when done
    run_dir: Path | None = None


def prepare_photos(photos: Path, out: Path, side: int = 256) -> int:
    """Copy the train split of ``photos``/manifest.csv into ``out`` at a ``side`` short side; -> count."""
    from PIL import Image, ImageOps

    from moebius.train.data import resize_short_side

    manifest = photos / "manifest.csv"
    if not manifest.is_file():
        sys.exit(f"error: no manifest.csv in {photos}: run `bash scripts/fetch_real_photos.sh {photos}` first")
    with open(manifest, newline="") as f:
        names = sorted(r["file"] for r in csv.DictReader(f) if r.get("split") == "train")
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name in names:
        with Image.open(photos / name) as image:
            small = resize_short_side(ImageOps.exif_transpose(image).convert("RGB"), side)
        small.save(tmp / (Path(name).stem + ".jpg"), quality=95)
    (tmp / "SOURCES.txt").write_text("".join(f"{n}\n" for n in names))
    tmp.rename(out)
    return len(names)


def minutes_entry(text: str) -> tuple[str, float]:
    """``"4"`` -> ("", 4.0), every stage; ``"teacher=2.5"`` -> ("teacher", 2.5)."""
    network, _, value = text.rpartition("=")
    if network and network not in NETWORKS:
        raise argparse.ArgumentTypeError(f"unknown network {network!r} (choose from {', '.join(NETWORKS)})")
    try:
        minutes = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected minutes, e.g. 4 or teacher=2.5") from None
    if not minutes > 0:
        raise argparse.ArgumentTypeError(f"{text!r}: minutes must be positive")
    return network, minutes


def plan(args: argparse.Namespace) -> list[Stage]:
    out = args.out
    moebius = [sys.executable, "-m", "moebius"]
    caps = args.minutes or {}

    def time_limit(network: str) -> list[str]:
        if network in caps:
            minutes = caps[network]
        elif "" in caps:  # the plain number: autoencoders get half
            minutes = caps[""] / 2 if network == "autoencoder" else caps[""]
        else:
            return []
        return ["--set", f"run.time_limit_minutes={minutes}"]

    def data(folder: str) -> list[str]:
        return ["--set", f"data.image_dirs=[{out / folder}]"]

    denoiser_sets = [x for o in args.overrides for x in ("--set", o)]
    autoencoder_sets = [*time_limit("autoencoder"), *(x for o in args.autoencoder_overrides for x in ("--set", o))]
    stages = []
    for v in args.variants:
        ae_dir = out / v / "autoencoder"
        if v == "kl":  # from scratch on 64² crops, then further on 128² crops
            stages.append(Stage("autoencoder64-kl", [*moebius, "train-autoencoder", str(CONFIGS / "autoencoder_kl.yaml"),
                                                     "--output-dir", str(out / v / "autoencoder64"), *data("crops64"),
                                                     *autoencoder_sets], ["crops"]))
            stages.append(Stage("autoencoder-kl", [*moebius, "train-autoencoder", str(CONFIGS / "autoencoder_kl_128.yaml"),
                                                   "--output-dir", str(ae_dir), *data("crops128"), "--set",
                                                   f"model.init_weights={out / v / 'autoencoder64' / 'autoencoder'}",
                                                   *autoencoder_sets], ["autoencoder64-kl"]))
        else:
            stages.append(Stage(f"autoencoder-{v}", [*moebius, "train-autoencoder", str(CONFIGS / f"autoencoder_{v}.yaml"),
                                                     "--output-dir", str(ae_dir), *data("photos"), *autoencoder_sets],
                                ["crops"]))
        common = [*data("crops64"), *denoiser_sets, "--set", f"vae.weights={ae_dir / 'autoencoder'}"]
        if v == "s2d":
            common += [x for o in S2D_CHANNELS for x in ("--set", o)]
        networks = ["teacher", "distill", "plain"] if v == "kl" else ["teacher", "distill"]
        for net in networks:
            run_dir = out / v / net
            config = {"teacher": "teacher.yaml", "distill": "student_distill.yaml", "plain": "student_plain.yaml"}[net]
            extra = ["--set", f"model.teacher_weights={out / v / 'teacher' / 'ema'}"] if net == "distill" else []
            needs = [f"autoencoder-{v}"] + ([f"teacher-{v}"] if net == "distill" else [])
            stages.append(Stage(f"{net}-{v}", [*moebius, "train", str(CONFIGS / config), "--output-dir", str(run_dir),
                                               *common, *time_limit(net), *extra], needs, after="ema", run_dir=run_dir))
    return [s for s in stages if not args.stages or s.name in args.stages]


def copy_ema(run_dir: Path) -> None:
    """<run>/checkpoints/<newest>/ema -> <run>/ema (the weights the next stages and the export use)."""
    from moebius.train.trainer import find_checkpoints

    found = find_checkpoints(run_dir / "checkpoints")
    if not found or not (found[-1] / "ema").is_dir():
        raise SystemExit(f"error: {run_dir} has no checkpoint with EMA weights")
    shutil.rmtree(run_dir / "ema", ignore_errors=True)
    shutil.copytree(found[-1] / "ema", run_dir / "ema")
    (run_dir / "ema" / "STEP").write_text(found[-1].name + "\n")


def export(out: Path, variants: list[str]) -> list[Path]:
    """OUT/<variant>/<network>/pipeline/ for every network with EMA weights."""
    from moebius import MoebiusInpaintPipeline, load_official
    from moebius.schedulers.ddim import DDIMConfig
    from moebius.weights.vae import load_vae
    from moebius.train.config import load_config

    written = []
    for v in variants:
        vae = out / v / "autoencoder" / "autoencoder"
        for run_dir in sorted(p for p in (out / v).iterdir() if (p / "ema").is_dir()):
            target = run_dir / "pipeline"
            shutil.rmtree(target, ignore_errors=True)  # a rerun exports afresh
            unet, autoencoder = load_official(run_dir / "ema"), load_vae(vae)
            schedule = DDIMConfig(prediction_type=load_config(run_dir / "config.yaml").noise.prediction_type)
            pipe = MoebiusInpaintPipeline(unet, autoencoder, schedule, defaults=SMALL_MODEL_DEFAULTS)
            pipe.save_pretrained(target)
            written.append(target)
    return written


def run_all(stages: list[Stage], jobs: int, logs: Path) -> list[str]:
    """Start every stage whose needs are done, at most ``jobs`` at a time; -> the stages that failed.

    A failed stage skips the stages that need it; the others go on (one variant's failure does not cost
    the other's run).
    """
    logs.mkdir(parents=True, exist_ok=True)
    names = {s.name for s in stages}
    done: set[str] = set()
    failed: list[str] = []
    pending = list(stages)
    running: dict[str, tuple[subprocess.Popen, Stage, float]] = {}
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    while pending or running:
        for stage in list(pending):
            if any(n in failed for n in stage.needs):
                failed.append(stage.name)
                pending.remove(stage)
                print(f"[{time.strftime('%H:%M:%S')}] skip  {stage.name} (needs a failed stage)", flush=True)
            # A need outside the selected stages ran before (its outputs are on disk).
            elif all(n in done or n not in names for n in stage.needs) and len(running) < jobs:
                with open(logs / f"{stage.name}.log", "a") as log:
                    proc = subprocess.Popen(stage.command, stdout=log, stderr=subprocess.STDOUT, env=env)
                running[stage.name] = (proc, stage, time.monotonic())
                pending.remove(stage)
                print(f"[{time.strftime('%H:%M:%S')}] start {stage.name}", flush=True)
        time.sleep(1.0)
        for name, (proc, stage, start) in list(running.items()):
            if proc.poll() is None:
                continue
            del running[name]
            if proc.returncode == 0 and stage.after == "ema":
                copy_ema(stage.run_dir)
            if proc.returncode == 0:
                done.add(name)
                print(f"[{time.strftime('%H:%M:%S')}] done  {name} in {time.monotonic() - start:.0f} s", flush=True)
            else:
                failed.append(name)
                print(f"[{time.strftime('%H:%M:%S')}] FAILED {name} (exit {proc.returncode}); see "
                      f"{logs / (name + '.log')}", flush=True)
    return failed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, default=Path.home() / ".cache" / "moebius" / "real_photos",
                        help="fetched photos with manifest.csv (default ~/.cache/moebius/real_photos)")
    parser.add_argument("--out", type=Path, default=Path("runs/small"))
    parser.add_argument("--variants", nargs="+", choices=["kl", "s2d"], default=["kl"],
                        help="autoencoders to train networks on (default kl)")
    parser.add_argument("--stages", nargs="+", metavar="NAME", help="run only these stages (e.g. distill-kl)")
    parser.add_argument("--jobs", type=int, default=1, help="stages run at once (default 1)")
    parser.add_argument("--minutes", nargs="+", type=minutes_entry, metavar="[NETWORK=]M",
                        help="wall-clock caps: M for every denoiser stage (M/2 for autoencoders), NETWORK=M for one "
                             f"network ({', '.join(NETWORKS)})")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="extra override for every denoiser stage (e.g. a smoke test's run.max_steps=5)")
    parser.add_argument("--autoencoder-set", dest="autoencoder_overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="extra override for the autoencoder stages")
    args = parser.parse_args()
    if args.minutes is not None:
        args.minutes = dict(args.minutes)
    if args.out != Path("runs/small"):
        print(f"note: writing to {args.out}; the committed configs' default paths point at runs/small")
    photos = args.out / "photos"
    if not photos.is_dir():
        print(f"preparing {prepare_photos(args.photos, photos)} training photos in {photos}", flush=True)
    for size, per_photo in CROPS:
        crops = args.out / f"crops{size}"
        if not crops.is_dir():
            subprocess.run([sys.executable, str(ROOT / "scripts" / "crop_photos.py"), str(photos), str(crops),
                            "--size", str(size), "--per-photo", str(per_photo)], check=True)
    start = time.monotonic()
    failed = run_all(plan(args), args.jobs, args.out / "logs")
    for folder in export(args.out, args.variants):
        print(f"exported {folder}")
    if failed:
        sys.exit(f"error: {len(failed)} stage(s) failed or skipped: {', '.join(failed)}")
    print(f"all stages done in {(time.monotonic() - start) / 60:.1f} min")


if __name__ == "__main__":
    main()
