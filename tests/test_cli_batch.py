"""``moebius batch``: output names, folders nested in each other, kill and resume, per-image failures."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from moebius.cli._batch_inputs import remove_leftover_temp_files
from moebius.pipeline.pipeline import MoebiusInpaintPipeline
from test_cli_inpaint import _batch, _one_line_error, _save
from test_pipeline import scene, tiny_pipeline

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    return tiny_pipeline().save_pretrained(tmp_path_factory.mktemp("w") / "pipe")


def _files(folder: Path) -> list[str]:
    """Every file under ``folder`` (hidden ones too), as sorted relative paths."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def _photos(folder: Path, *names: str) -> None:
    for seed, name in enumerate(names):
        _save(folder / name, scene(seed=seed)[0])


def test_images_with_the_same_output_name_refuse_the_run_naming_both(tmp_path, weights, capsys):
    images, masks, out = tmp_path / "images", tmp_path / "masks", tmp_path / "out"
    _photos(images, "a.png", "a.jpg", "b.png")
    _photos(masks, "a.png", "b.png")
    _one_line_error(capsys, _batch(images, masks, out, weights), "a.jpg and", "a.png would both be written to")
    assert not out.exists()  # refused before any work
    # Compared ignoring case: a.png and A.png are one file on macOS and Windows.
    (images / "a.jpg").rename(images / "A.jpg")
    _one_line_error(capsys, _batch(images, masks, out, weights), "A.jpg and", "a.png would both")
    (images / "A.jpg").rename(images / "a.jpg")
    # --format keep gives every image its own name.
    assert _batch(images, masks, out, weights, "--format", "keep") == 0
    assert "3 written" in capsys.readouterr().out
    assert _files(out) == ["a.jpg", "a.png", "b.png"]


def test_dotted_names_keep_their_whole_stem(tmp_path, weights, capsys):
    images, out = tmp_path / "images", tmp_path / "out"
    _photos(images, "x.v1.png", "x.v2.png")
    mask = _save(tmp_path / "mask.png", scene()[1])
    assert _batch(images, mask, out, weights) == 0
    assert "2 written" in capsys.readouterr().out
    assert _files(out) == ["x.v1.png", "x.v2.png"]


def test_output_and_mask_folders_inside_the_image_tree_are_not_read_as_input(tmp_path, weights, capsys):
    tree = tmp_path / "tree"
    _photos(tree, "x.png", "sub/y.png")
    _photos(tree / "masks", "x.png", "sub/y.png")
    args = (tree, tree / "masks", tree / "out", weights, "--recursive")
    assert _batch(*args) == 0
    assert "2 written, 0 skipped (already there), 0 failed of 2 images" in capsys.readouterr().out
    assert _batch(*args, "--skip-existing") == 0  # the first run's results are not new inputs
    assert "0 written, 2 skipped (already there), 0 failed of 2 images" in capsys.readouterr().out
    assert _files(tree / "out") == ["sub/y.png", "x.png"]
    # An output folder that is, or holds, an input folder would be read back as input: refused.
    _one_line_error(capsys, _batch(tree, tree / "masks", tree / "masks", weights), "is the --masks folder")
    _one_line_error(capsys, _batch(tree / "sub", tree / "masks", tree, weights), "contains the --images folder")


_DIE_ON_SECOND_WRITE = textwrap.dedent("""
    import os, signal, sys
    from moebius.cli import main
    from moebius.pipeline import image_io

    write_image, calls = image_io.write_image, []

    def dying_write(image, handle, *args, **kwargs):
        calls.append(image)
        if len(calls) == 2:  # killed halfway through writing the second result
            handle.write(b"half a png")
            handle.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        write_image(image, handle, *args, **kwargs)

    image_io.write_image = dying_write
    sys.exit(main(sys.argv[1:]))
""")


def test_a_killed_run_resumes_to_exactly_one_result_per_input(tmp_path, weights, capsys):
    tree = tmp_path / "tree"
    _photos(tree, "a.png", "b.png", "sub/c.png")
    mask = _save(tmp_path / "mask.png", scene()[1])
    out = tree / "out"  # one mask for all, results inside the image tree
    args = ["batch", "--images", str(tree), "--masks", str(mask), "--output", str(out), "--recursive",
            "--weights", str(weights), "--steps", "1", "--quiet", "--seed", "0"]
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    killed = subprocess.run([sys.executable, "-c", _DIE_ON_SECOND_WRITE, *args], env=env, capture_output=True,
                            text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    left = _files(out)
    assert "a.png" in left and any(name.startswith(".b.") for name in left), left  # a temp file was left

    assert _batch(tree, mask, out, weights, "--recursive", "--seed", "0", "--skip-existing") == 0
    assert "2 written, 1 skipped (already there), 0 failed of 3 images" in capsys.readouterr().out
    assert _files(out) == ["a.png", "b.png", "sub/c.png"]
    seeds = [json.loads(Image.open(out / name).text["moebius"])["seed"] for name in _files(out)]
    assert seeds == [0, 1, 2]  # as one uninterrupted run would have numbered them


def test_only_temp_files_of_this_runs_outputs_are_removed(tmp_path):
    out = tmp_path / "out"
    ours = [".a.k3x_9qzm.png", ".a.png.0f1e2d3c.tmp", ".x.v2.abcdefgh.png"]  # mkstemp style, hex style
    others = [".a.png.notes", ".b.png.0f1e2d3c.tmp", ".a.abcdefgh.jpg", "a.abcdefgh.png", ".a.abc.png"]
    out.mkdir()
    for name in ours + others:
        (out / name).write_bytes(b"half a file")
    remove_leftover_temp_files([out / "a.png", out / "x.v2.png", out / "sub" / "c.png"], keep=set())
    assert _files(out) == sorted(others)
    keep = {(out / ".x.v2.abcdefgh.png").resolve()}  # a file given as an input is never deleted
    (out / ".x.v2.abcdefgh.png").write_bytes(b"an input")
    remove_leftover_temp_files([out / "x.v2.png"], keep=keep)
    assert (out / ".x.v2.abcdefgh.png").exists()


def test_ranks_run_one_after_the_other_share_the_work_with_output_inside_the_tree(tmp_path, weights, capsys,
                                                                                  monkeypatch):
    tree = tmp_path / "tree"
    _photos(tree, "a.png", "b.png", "c.png", "sub/d.png")
    mask = _save(tmp_path / "mask.png", scene()[1])
    monkeypatch.setenv("WORLD_SIZE", "2")
    for rank in ("0", "1"):  # rank 1 lists the folder after rank 0 has written into it
        monkeypatch.setenv("RANK", rank)
        assert _batch(tree, mask, tree / "out", weights, "--recursive", "--seed", "0") == 0
        summary = capsys.readouterr().out
        assert f"rank {rank}/2: 2 written, 0 skipped (already there), 0 failed of 2 images" in summary
    assert _files(tree / "out") == ["a.png", "b.png", "c.png", "sub/d.png"]
    seeds = [json.loads(Image.open(tree / "out" / name).text["moebius"])["seed"] for name in _files(tree / "out")]
    assert seeds == [0, 1, 2, 3]


def test_a_file_name_with_a_newline_stays_on_one_report_line(tmp_path, weights, capsys):
    images, masks, out = tmp_path / "images", tmp_path / "masks", tmp_path / "out"
    _photos(images, "a.png", "no\nmask.png")
    (images / "bad\nfile.png").write_bytes(b"not a png")
    _photos(masks, "a.png", "bad\nfile.png")
    assert _batch(images, masks, out, weights) == 1
    captured = capsys.readouterr()
    assert captured.out.count("\n") == 1
    assert "1 written, 0 skipped (already there), 2 failed of 3 images" in captured.out
    lines = captured.err.splitlines()
    assert len(lines) == 2 and all(line.startswith("failed: ") for line in lines), captured.err
    assert any("bad\\nfile.png: " in line and "cannot read" in line for line in lines), lines
    assert any("no\\nmask.png: no mask" in line for line in lines), lines


@pytest.fixture()
def three_photos(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    _photos(images, "a.png", "b.png", "c.png")
    _photos(masks, "a.png", "b.png", "c.png")
    return images, masks, tmp_path / "out"


def _fail_on(monkeypatch, bad: np.ndarray, error: BaseException) -> None:
    """Make every pipeline call whose batch holds the image ``bad`` raise ``error``."""
    call = MoebiusInpaintPipeline.__call__

    def failing(self, images, *args, **kwargs):
        if any(np.array_equal(image, bad) for image in images):
            raise error
        return call(self, images, *args, **kwargs)

    monkeypatch.setattr(MoebiusInpaintPipeline, "__call__", failing)


@pytest.mark.parametrize("error", [torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB\n"
                                                                "(GPU 0; 139 GiB total capacity)"),
                                   MemoryError()])
def test_a_runtime_failure_of_one_image_is_reported_and_the_run_goes_on(three_photos, weights, capsys,
                                                                       monkeypatch, error):
    images, masks, out = three_photos
    _fail_on(monkeypatch, scene(seed=1)[0], error)  # b.png
    assert _batch(images, masks, out, weights, "--batch-size", "2") == 1  # a and b share the failing batch
    captured = capsys.readouterr()
    assert "2 written, 0 skipped (already there), 1 failed of 3 images" in captured.out
    assert _files(out) == ["a.png", "c.png"]
    assert captured.err.count("\n") == 1 and "b.png: " + type(error).__name__ in captured.err, captured.err
    assert "Traceback" not in captured.err


def test_ctrl_c_still_stops_the_run(three_photos, weights, capsys, monkeypatch):
    images, masks, out = three_photos
    _fail_on(monkeypatch, scene(seed=1)[0], KeyboardInterrupt())
    assert _batch(images, masks, out, weights) == 130
    assert "interrupted" in capsys.readouterr().err
    assert _files(out) == ["a.png"]  # c.png never started


def test_a_failure_line_is_printed_above_the_progress_bar():
    import io

    from moebius.pipeline._progress import ProgressBar

    stream = io.StringIO()
    bar = ProgressBar(3, "batch", True, stream)
    bar.update()
    bar.write("failed: a.png: reason")
    bar.update()  # redrawn at once below the line
    lines = stream.getvalue().split("\n")
    assert lines[0].endswith("\r\x1b[Kfailed: a.png: reason") and lines[0].startswith("\rbatch |")
    assert lines[1].startswith("\rbatch |") and "2/3" in lines[1]
