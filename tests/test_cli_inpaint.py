"""``moebius inpaint``, ``batch``, ``doctor``, ``download`` with a tiny pipeline saved in a temp folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from moebius.cli import main
from test_pipeline import scene, tiny_pipeline

FAST = ["--steps", "1", "--quiet"]


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    return tiny_pipeline().save_pretrained(tmp_path_factory.mktemp("w") / "pipe")


def _save(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


@pytest.fixture()
def pair(tmp_path):
    image, mask = scene()
    return _save(tmp_path / "in" / "photo.png", image), _save(tmp_path / "in" / "mask.png", mask)


def _one_line_error(capsys, code, *needles):
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err


# ----------------------------------------------------------------------------------------------------
# inpaint


def test_inpaint_writes_the_result_with_metadata(tmp_path, pair, weights, capsys):
    out = tmp_path / "out.png"
    assert main(["inpaint", str(pair[0]), str(pair[1]), "-o", str(out), "--weights", str(weights), "--seed", "5",
                 *FAST]) == 0
    assert "wrote" in capsys.readouterr().out
    result = Image.open(out)
    assert result.size == (96, 64)
    meta = json.loads(result.text["moebius"])
    assert (meta["preset"], meta["seed"], meta["num_inference_steps"]) == ("default", 5, 1)
    again = tmp_path / "again.png"
    main(["inpaint", str(pair[0]), str(pair[1]), "-o", str(again), "--weights", str(weights), "--seed", "5", *FAST])
    assert np.array_equal(np.asarray(result), np.asarray(Image.open(again)))


def test_inpaint_fast_preset(tmp_path, pair, weights):
    out = tmp_path / "fast.png"
    assert main(["inpaint", str(pair[0]), str(pair[1]), "-o", str(out), "--weights", str(weights), "--preset", "fast",
                 "--seed", "1", "--quiet"]) == 0
    meta = json.loads(Image.open(out).text["moebius"])
    assert (meta["preset"], meta["scheduler"], meta["num_inference_steps"]) == ("fast", "unipc", 8)
    assert meta["settings"]["guidance_interval"] == [0.0, 0.5]


def test_inpaint_official_preset_and_options(tmp_path, pair, weights):
    out = tmp_path / "official.jpg"
    assert main(["inpaint", str(pair[0]), str(pair[1]), "-o", str(out), "--weights", str(weights),
                 "--preset", "official", "--compensate", "--steps", "2", "--quiet", "--no-fast"]) == 0
    assert Image.open(out).size == (512, 512)


def test_inpaint_from_alpha_channel(tmp_path, weights):
    image, mask = scene()
    rgba = np.dstack([image, np.where(mask >= 128, 0, 255).astype(np.uint8)])
    src = _save(tmp_path / "cutout.png", rgba)
    out = tmp_path / "filled.png"
    assert main(["inpaint", str(src), "-o", str(out), "--weights", str(weights), *FAST]) == 0
    assert (np.asarray(Image.open(out))[:, :, 3] == 255).all()


def test_user_errors_are_one_line(tmp_path, pair, weights, capsys):
    w = ["--weights", str(weights), *FAST]
    _one_line_error(capsys, main(["inpaint", str(tmp_path / "nope.png"), str(pair[1]), "-o", "x.png", *w]),
                    "nope.png: no such file")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8garbage")
    _one_line_error(capsys, main(["inpaint", str(broken), str(pair[1]), "-o", "x.png", *w]), "broken.jpg")
    small = _save(tmp_path / "small.png", np.zeros((10, 10), np.uint8))
    _one_line_error(capsys, main(["inpaint", str(pair[0]), str(small), "-o", str(tmp_path / "x.png"), *w]),
                    "--resize-mask")
    _one_line_error(capsys, main(["inpaint", str(pair[0]), str(pair[1]), "-o", str(pair[0]), *w]), "one of the inputs")
    _one_line_error(capsys, main(["inpaint", str(pair[0]), str(pair[1]), "-o", str(tmp_path / "x.png"),
                                  "--weights", str(tmp_path / "empty"), *FAST]),
                    "ft_places2/diffusion_pytorch_model.bin", "vae/config.json")
    _one_line_error(capsys, main(["inpaint", str(pair[0]), str(pair[1]), "-o", str(tmp_path / "x.png"), *w,
                                  "--device", "nodevice"]), "nodevice")
    _one_line_error(capsys, main(["inpaint", str(pair[0]), str(pair[1]), "-o", str(tmp_path / "x.png"), *w,
                                  "--strength", "2"]), "strength")
    _one_line_error(capsys, main(["inpaint", str(pair[0]), str(pair[1]), "-o", str(tmp_path / "x.png"), *w,
                                  "--prefill", "telea"]), "needs strength < 1")
    assert main(["inpaint", str(pair[0]), str(small), "-o", str(tmp_path / "ok.png"), *w, "--resize-mask"]) == 0


def test_float16_is_refused_on_the_cpu_before_loading(tmp_path, pair, capsys):
    code = main(["inpaint", str(pair[0]), str(pair[1]), "-o", str(tmp_path / "o.png"), "--weights",
                 str(tmp_path / "no-weights-needed"), "--device", "cpu", "--dtype", "float16", *FAST])
    _one_line_error(capsys, code, "--dtype float16 is for CUDA and MPS")
    assert not (tmp_path / "o.png").exists()


def test_the_bundled_example_inpaints(tmp_path, weights):
    examples = Path(__file__).resolve().parents[1] / "examples"
    out = tmp_path / "coffee.png"
    assert main(["inpaint", str(examples / "coffee.jpg"), str(examples / "coffee_mask.png"), "-o", str(out),
                 "--weights", str(weights), *FAST]) == 0
    photo, result = np.asarray(Image.open(examples / "coffee.jpg")), np.asarray(Image.open(out))
    hole = np.asarray(Image.open(examples / "coffee_mask.png")) > 127
    assert result.shape == photo.shape and 0.02 < hole.mean() < 0.2
    grown = np.zeros_like(hole)  # the paste feathers a few pixels around the hole
    for dy in range(-8, 9):
        for dx in range(-8, 9):
            grown |= np.roll(hole, (dy, dx), axis=(0, 1))
    assert np.array_equal(result[~grown], photo[~grown])


def test_without_weights_the_official_folder_comes_first_then_the_bundled_model(tmp_path, pair, monkeypatch,
                                                                                capsys):
    from moebius.weights import bundled

    home = tmp_path / "home"
    monkeypatch.setenv("MOEBIUS_HOME", str(home))
    monkeypatch.setattr(bundled, "BUNDLED_MODEL_DIR", tmp_path / "bundled")
    out = tmp_path / "out.png"
    # Neither: the error names the official files to put in $MOEBIUS_HOME.
    _one_line_error(capsys, main(["inpaint", str(pair[0]), str(pair[1]), "-o", str(out), *FAST]),
                    str(home / "ft_places2"))
    # The bundled model alone: used, and said once.
    tiny_pipeline(seed=1).save_pretrained(tmp_path / "bundled")
    assert main(["inpaint", str(pair[0]), str(pair[1]), "-o", str(out), *FAST]) == 0
    err = capsys.readouterr().err
    assert err.count("small model bundled") == 1 and err.count("\n") == 1 and str(home) in err
    from_bundled = np.asarray(Image.open(out))
    # Official weights present: they win, silently.
    tiny_pipeline(seed=2).save_pretrained(home)
    assert main(["inpaint", str(pair[0]), str(pair[1]), "-o", str(tmp_path / "home.png"), *FAST]) == 0
    assert "small model bundled" not in capsys.readouterr().err
    assert not np.array_equal(np.asarray(Image.open(tmp_path / "home.png")), from_bundled)


# ----------------------------------------------------------------------------------------------------
# batch


@pytest.fixture()
def folders(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    for name, seed in (("a", 1), ("b", 2), ("c", 3), ("d", 4)):
        image, mask = scene(seed=seed)
        _save(images / f"{name}.{'jpg' if name == 'b' else 'png'}", image)
        if name == "b":
            _save(masks / "b_mask.png", mask)  # the "_mask" spelling pairs too
        elif name != "c":
            _save(masks / f"{name}.png", mask)
    (images / "e.png").write_bytes(b"not a png")
    _save(masks / "e.png", scene()[1])
    return images, masks, tmp_path / "out"


def _batch(images, masks, out, weights, *extra):
    return main(["batch", "--images", str(images), "--masks", str(masks), "--output", str(out),
                 "--weights", str(weights), *FAST, *extra])


def test_batch_pairs_by_stem_keeps_going_and_summarises(folders, weights, capsys):
    images, masks, out = folders
    assert _batch(images, masks, out, weights, "--seed", "0", "--batch-size", "2") == 1
    captured = capsys.readouterr()
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png", "d.png"]  # atomic: no temp files left
    assert "3 written, 0 skipped (already there), 2 failed of 5 images" in captured.out
    assert "c.png: no mask" in captured.err and "e.png: cannot read" in captured.err
    assert "Traceback" not in captured.err
    seeds = {p.stem: json.loads(Image.open(p).text["moebius"])["seed"] for p in out.iterdir()}
    assert seeds == {"a": 0, "b": 1, "d": 3}  # seed + position in the sorted list


def test_batch_resume_with_skip_existing(folders, weights, capsys):
    images, masks, out = folders
    _batch(images, masks, out, weights)
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    (out / "d.png").unlink()
    capsys.readouterr()
    _batch(images, masks, out, weights, "--skip-existing")
    assert "1 written, 2 skipped" in capsys.readouterr().out
    after = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert after["a.png"] == before["a.png"] and after["b.png"] == before["b.png"] and "d.png" in after


def test_batch_single_mask_for_all_and_batched_equals_single(tmp_path, weights):
    images = tmp_path / "images"
    for seed in range(3):
        _save(images / f"img{seed}.png", scene(seed=seed)[0])
    mask = _save(tmp_path / "mask.png", scene()[1])
    assert _batch(images, mask, tmp_path / "one", weights, "--seed", "3") == 0
    assert _batch(images, mask, tmp_path / "three", weights, "--seed", "3", "--batch-size", "3") == 0
    for name in ("img0.png", "img1.png", "img2.png"):
        a = np.asarray(Image.open(tmp_path / "one" / name)).astype(int)
        b = np.asarray(Image.open(tmp_path / "three" / name)).astype(int)
        assert np.abs(a - b).max() <= 1


class _Terminal:
    """A stand-in for stderr that says it is a terminal and records what was written."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    def isatty(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.parts.append(text)
        return len(text)

    def flush(self) -> None:
        pass


def test_batch_bar_and_step_bar_share_one_line(tmp_path, weights, monkeypatch):
    images = tmp_path / "images"
    for seed in range(2):
        _save(images / f"img{seed}.png", scene(seed=seed)[0])
    mask = _save(tmp_path / "mask.png", scene()[1])
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert main(["batch", "--images", str(images), "--masks", str(mask), "--output", str(tmp_path / "out"),
                 "--weights", str(weights), "--steps", "2"]) == 0
    lines = "".join(terminal.parts).split("\r")
    drawn = [line.rstrip() for line in lines if line.strip()]
    # Every redraw is the batch bar, the step count riding on it; a lone step bar never takes the line.
    assert drawn and all(line.startswith("batch |") for line in drawn), drawn
    assert any(line.endswith("inpainting 2/2") for line in drawn) and drawn[-1].endswith("<00:00]")
    assert "".join(terminal.parts).endswith("\n") and "".join(terminal.parts).count("\n") == 1


def test_batch_never_overwrites_an_input(tmp_path, weights, capsys):
    images = tmp_path / "data"
    _save(images / "x.png", scene()[0])
    _save(images / "x_mask.png", scene()[1])
    _one_line_error(capsys, _batch(images, images, images, weights), "is the --images folder")
    mask = _save(tmp_path / "out" / "x.png", scene()[1])  # one mask for all, where x.png's result would go
    assert _batch(images, mask, tmp_path / "out", weights) == 1
    assert "would overwrite an input" in capsys.readouterr().err
    assert np.array_equal(np.asarray(Image.open(images / "x.png")), scene()[0])
    assert np.array_equal(np.asarray(Image.open(mask)), scene()[1])


def test_batch_bad_folders_are_one_line_errors(tmp_path, weights, capsys):
    _one_line_error(capsys, _batch(tmp_path / "none", tmp_path, tmp_path / "o", weights), "not a folder")
    (tmp_path / "empty").mkdir()
    _one_line_error(capsys, _batch(tmp_path / "empty", tmp_path, tmp_path / "o", weights), "no images")


def test_batch_shards_across_two_processes(folders, weights):
    images, masks, out = folders
    (images / "e.png").unlink()
    (masks / "c.png").write_bytes((masks / "a.png").read_bytes())
    runs = []
    for rank in (0, 1):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank), "OMP_NUM_THREADS": "1"}
        cmd = [sys.executable, "-m", "moebius", "batch", "--images", str(images), "--masks", str(masks),
               "--output", str(out), "--weights", str(weights), "--seed", "0", *FAST]
        runs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = [p.communicate(timeout=300) for p in runs]
    assert [p.returncode for p in runs] == [0, 0], outputs
    assert "rank 0/2: 2 written" in outputs[0][0] and "rank 1/2: 2 written" in outputs[1][0]
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png", "c.png", "d.png"]
    seeds = sorted(json.loads(Image.open(p).text["moebius"])["seed"] for p in out.iterdir())
    assert seeds == [0, 1, 2, 3]  # the same seeds one process would have used


# ----------------------------------------------------------------------------------------------------
# doctor, download


def test_doctor_reports_torch_devices_and_weights(weights, capsys):
    assert main(["doctor", "--weights", str(weights)]) == 0
    out = capsys.readouterr().out
    assert "torch" in out and "device (auto)" in out and str(weights) in out and "pipeline folder" in out
    assert "bundled model" in out


def test_download_without_hub_gives_manual_instructions(tmp_path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "huggingface_hub" else real(name, *a))
    _one_line_error(capsys, main(["download", "--weights", str(tmp_path)]), "huggingface_hub", "hustvl/PixelHacker")


def test_option_choices_and_defaults_come_from_the_library(monkeypatch):
    import argparse

    from moebius.cli import _options
    from moebius.pipeline import presets
    from moebius.schedulers.registry import SCHEDULER_NAMES

    parser = argparse.ArgumentParser()
    _options.add_inpaint_options(parser)
    actions = {a.dest: a for a in parser._actions}
    assert tuple(actions["preset"].choices) == tuple(presets.list_presets())
    assert tuple(actions["scheduler"].choices) == SCHEDULER_NAMES
    assert f"({presets.get_preset('default').num_inference_steps})" in actions["num_inference_steps"].help

    changed = presets.get_preset("default").replace(num_inference_steps=37, crop_margin=99)
    monkeypatch.setattr(_options, "get_preset", lambda name: changed if name == "default" else presets.get_preset(name))
    parser = argparse.ArgumentParser()
    _options.add_inpaint_options(parser)
    helps = {a.dest: a.help for a in parser._actions}
    assert "(37)" in helps["num_inference_steps"] and "(99)" in helps["crop_margin"]
