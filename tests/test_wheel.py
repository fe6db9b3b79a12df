"""The built wheel carries everything the package needs: installed from it into a fresh virtual environment
(not the editable install the tests otherwise use), `moebius inpaint` runs the bundled model on the sample.

Offline and fast: the wheel is built without build isolation from a copy of the project, installed with
--no-deps, and the new environment sees the running interpreter's packages (torch, ...) through a .pth file.
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
DATA_FILES = ("moebius/py.typed", "moebius/serve/static/index.html", "moebius/serve/static/editor.js",
              "moebius/serve/static/editor.css", "moebius/weights/small/moebius_pipeline.json",
              "moebius/weights/small/MODEL_CARD.md", "moebius/weights/small/unet/model.safetensors",
              "moebius/weights/small/vae/diffusion_pytorch_model.safetensors")


def _run(*cmd: str | Path, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{cmd}\n{result.stdout}\n{result.stderr}"
    return result


def _build_wheel(tmp_path: Path) -> Path:
    project = tmp_path / "project"  # a copy, so the build leaves nothing in the repository
    project.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, project / name)
    shutil.copytree(REPO / "src", project / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "--quiet",
         "-w", tmp_path / "dist", project, cwd=tmp_path)
    (wheel,) = (tmp_path / "dist").glob("moebius_inpaint-*.whl")
    return wheel


def _fresh_env(tmp_path: Path, wheel: Path) -> Path:
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    purelib = _run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=tmp_path)
    # Only the running interpreter's site folders (torch, numpy, ...); its editable moebius is not among
    # them, because the .pth files inside those folders are not processed from here.
    ours = [p for p in {*site.getsitepackages(), site.getusersitepackages()} if os.path.isdir(p)]
    Path(purelib.stdout.strip(), "running_interpreter.pth").write_text("\n".join(ours) + "\n")
    _run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "--quiet", wheel,
         cwd=tmp_path)
    return env_dir


def test_the_wheel_installs_and_inpaints_the_sample_with_its_bundled_model(tmp_path):
    wheel = _build_wheel(tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    assert [f for f in DATA_FILES if f not in names] == []

    env_dir = _fresh_env(tmp_path, wheel)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MOEBIUS_HOME", "VIRTUAL_ENV")}
    env.update(XDG_CACHE_HOME=str(tmp_path / "cache"), OMP_NUM_THREADS="1")  # no official weights there
    where = _run(env_dir / "bin" / "python", "-c", "import moebius; print(moebius.__file__)", cwd=tmp_path, env=env)
    assert Path(where.stdout.strip()).is_relative_to(env_dir)

    out = tmp_path / "out.png"
    fast = ("--hd-strategy", "resize", "--resize-limit", "256")  # a 256-px working size: seconds, not a minute
    result = _run(env_dir / "bin" / "moebius", "inpaint", REPO / "examples" / "coffee.jpg",
                  REPO / "examples" / "coffee_mask.png", "-o", out, "--seed", "0", "--quiet", *fast,
                  cwd=tmp_path, env=env)
    assert "bundled" in result.stderr and f"wrote {out}" in result.stdout
    photo, filled = np.asarray(Image.open(REPO / "examples" / "coffee.jpg")), np.asarray(Image.open(out))
    hole = np.asarray(Image.open(REPO / "examples" / "coffee_mask.png").convert("L")) > 127
    assert filled.shape == photo.shape
    assert np.abs(filled[hole].astype(int) - photo[hole]).mean() > 5  # the spoon is painted over
