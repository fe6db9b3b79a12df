"""``bench/gpu_suite.py --device cpu --quick`` runs every figure on tiny networks and prints one table."""

from __future__ import annotations

import os
import subprocess
import sys

from bench_scripts import BENCH_DIR, REPO


def test_quick_run_prints_every_figure():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), *sys.path])}
    done = subprocess.run([sys.executable, str(BENCH_DIR / "gpu_suite.py"), "--device", "cpu", "--quick"],
                          env=env, capture_output=True, text=True, timeout=240, cwd=REPO)
    assert done.returncode == 0, done.stderr
    rows = [line.split("|")[1:-1] for line in done.stdout.splitlines() if line.startswith("| ")]
    assert [cell.strip() for cell in rows[0]] == ["figure", "case", "value", "peak memory"]
    measured = {(figure.strip(), case.strip()): value.strip() for figure, case, value, _ in rows[1:]}
    figures = {figure for figure, _ in measured}
    assert figures == {"U-Net step", "teacher step", "VAE encode", "VAE decode", "end to end", "training"}
    assert not [row for row, value in measured.items() if value.startswith("error")], measured
    for batch in (1, 2):
        for dtype in ("fp32", "bf16"):
            assert measured[("U-Net step", f"32² batch {batch} {dtype} eager")].endswith(" ms")
    assert measured[("teacher step", "PixelHacker 64² batch 1 bf16, chunked GLA (ours)")].endswith(" ms")
    assert "CUDA-only" in measured[("teacher step", "PixelHacker 64² batch 1 bf16, fla GLA kernel")]
    assert measured[("end to end", "64² default preset, 2 steps, bf16 eager")].endswith(" s per image")
    assert next(v for (f, _), v in measured.items() if f == "training").endswith(" images/s on cpu")
    assert "peak resident memory" in done.stdout
