"""bench/sampler_quality.py: its --quick run on a tiny random model and a stand-in photo folder."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from PIL import Image

from bench_scripts import load_bench
from moebius.errors import InputError
from test_pipeline import tiny_pipeline

sampler_quality = load_bench("sampler_quality")


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """A folder laid out as scripts/fetch_real_photos.sh writes it: manifest.csv and an eval split."""
    root = tmp_path_factory.mktemp("photos")
    (root / "eval").mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for i in range(3):
        y, x = np.mgrid[0:90, 0:120]
        rgb = np.stack([128 + 90 * np.sin(x / (7 + i) + c + rng.random()) * np.cos(y / 9 + c) for c in range(3)], -1)
        Image.fromarray(rgb.clip(0, 255).astype(np.uint8)).save(root / "eval" / f"photo{i}.png")
        rows.append({"file": f"eval/photo{i}.png", "split": "eval", "sha256": ""})
    with open(root / "manifest.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["file", "split", "sha256"])
        writer.writeheader()
        writer.writerows(rows)
    return root


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return tiny_pipeline().save_pretrained(tmp_path_factory.mktemp("w") / "pipe")


def test_quick_run_prints_every_row_against_the_reference(weights, photos, capsys):
    assert sampler_quality.main([str(weights), "--photos", str(photos), "--quick", "--threads", "1"]) == 0
    table = capsys.readouterr().out
    lines = [line for line in table.splitlines() if line.startswith("| ")]
    assert len(lines) == 1 + 1 + len(sampler_quality.QUICK_ROWS)  # header, reference, rows
    assert lines[1].startswith("| ddim:8 (reference) | 8 + 8 |")
    assert "| ddim:4:0-0.5 | 4 + 2 |" in table and "| unipc:3:0-0.5 | 3 + 2 |" in table
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert float(cells[2]) > 0 and float(cells[3]) > 0  # seconds, PSNR against the reference
        assert 0 <= float(cells[4]) < 1 and float(cells[5]) > 0 and 0 <= float(cells[7]) < 1  # ST-LPIPS, PSNR, ST-LPIPS
        assert cells[8] == cells[9] == "–"  # --quick leaves out the Inception metrics


def test_same_settings_reproduce_the_reference_and_rows_are_checked(weights, photos):
    row = sampler_quality.parse_row("ddim:3")
    result = sampler_quality.run(str(weights), photos_dir=photos, rows=[row, sampler_quality.parse_row("ddim:3:0-0.5")],
                                 reference=row, limit=1, resolution=64, short_side=80, metrics=("psnr", "lpips"))
    same = result["rows"][1]
    assert same["psnr_hole_vs_reference"] == 100.0 and same["lpips_hole_vs_reference"] == 0.0  # same noise
    assert result["rows"][2]["psnr_hole_vs_reference"] < 100.0
    for bad in ("ddim", "euler:8", "ddim:x", "ddim:8:0.5-0.2", "ddim:0"):
        with pytest.raises(InputError):
            sampler_quality.parse_row(bad)


def test_e2e_benchmark_compares_presets_and_sampler_settings():
    e2e = load_bench("e2e_benchmark")
    default = e2e.setting("default")
    row = e2e.setting("dpmpp-2m:8:0-0.5")
    assert default.name == "default" and row.name == "dpmpp-2m:8:0-0.5"
    assert (row.scheduler, row.num_inference_steps, row.guidance_interval) == ("dpmpp-2m", 8, (0.0, 0.5))
    assert row.replace(name="default", scheduler="ddim", num_inference_steps=20, guidance_interval=(0, 1)) == default
    assert e2e.describe(row) == "dpmpp-2m, 8 steps, guidance 2.5 on 4 of them (interval 0-0.5)"
    assert e2e.describe(default) == "ddim, 20 steps, guidance 2.5 on 20 of them"
    with pytest.raises(InputError):
        e2e.setting("fastest")
