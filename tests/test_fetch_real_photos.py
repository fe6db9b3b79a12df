"""scripts/fetch_real_photos.sh chooses a Python that has Pillow, or stops with one line before fetching.

apt-get, dpkg and the Python are stand-ins (shell scripts logging their calls), so nothing is downloaded.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "fetch_real_photos.sh"


def _stub(path: Path, body: str) -> Path:
    path.write_text(f"#!/bin/sh\necho \"$(basename \"$0\") $*\" >> \"{path.parent / 'calls.log'}\"\n{body}\n")
    path.chmod(0o755)
    return path


def _run(tmp_path: Path, python_has_pillow: bool) -> tuple[subprocess.CompletedProcess, list[str]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _stub(bin_dir / "apt-get", "exit 0")
    _stub(bin_dir / "dpkg", "exit 0")
    python = _stub(bin_dir / "some-python", "exit 0" if python_has_pillow else
                   '[ "$1" = "-c" ] && exit 1; exit 0')
    env = {**os.environ, "PATH": f"{bin_dir}:/usr/bin:/bin", "PYTHON": str(python),
           "REAL_PHOTOS_CACHE": str(tmp_path / "cache")}
    result = subprocess.run(["bash", str(SCRIPT), str(tmp_path / "out")], env=env, capture_output=True, text=True)
    log = bin_dir / "calls.log"
    return result, log.read_text().splitlines() if log.exists() else []


def test_the_python_named_by_PYTHON_runs_the_extraction(tmp_path):
    result, calls = _run(tmp_path, python_has_pillow=True)
    assert result.returncode == 0, result.stderr
    assert any(c.startswith("apt-get download") for c in calls)
    assert calls[-1].startswith(f"some-python {SCRIPT.parent / 'extract_real_photos.py'} --root")


def test_a_python_without_pillow_stops_the_script_with_one_line_before_any_download(tmp_path):
    result, calls = _run(tmp_path, python_has_pillow=False)
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1 and "PYTHON=" in result.stderr
    assert not any(c.startswith(("apt-get", "dpkg")) for c in calls)
