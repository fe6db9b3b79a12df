"""Training checkpoints survive damage: an integrity record, one-line reports, fallback, no repeated log rows."""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path

import pytest

pytest.importorskip("accelerate")
pytest.importorskip("yaml")

from moebius.errors import CheckpointError  # noqa: E402
from moebius.train.checkpoints import MANIFEST_NAME, checkpoint_problem  # noqa: E402
from test_train import tiny_config  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def _steps(run: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run / "logs" / "scalars.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory) -> Path:
    """A 4-step run with a checkpoint after steps 2 and 4 (EMA included), trained once for the module."""
    from moebius.train.trainer import Trainer

    tmp = tmp_path_factory.mktemp("ckpt")
    before = os.umask(0o022)
    try:
        Trainer(tiny_config(tmp, "run.max_steps=4", "run.save_every=2", "run.keep_last=0", "ema.enabled=true")).train()
    finally:
        os.umask(before)
    return tmp


def _copy_run(saved_run: Path, tmp_path: Path) -> Path:
    import shutil

    shutil.copytree(saved_run, tmp_path, dirs_exist_ok=True)
    return tmp_path


def test_a_checkpoint_records_every_file_and_gets_the_umask_permissions(saved_run):
    folder = saved_run / "run" / "checkpoints" / "step-00000004"
    record = json.loads((folder / MANIFEST_NAME).read_text())
    on_disk = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()} - {MANIFEST_NAME}
    assert set(record["files"]) == on_disk
    assert {"trainer.json", "optimizer.json", "optimizer.safetensors", "rng-rank0.json", "student/model.safetensors",
            "ema/model.safetensors"} <= on_disk
    assert record["files"]["trainer.json"]["size"] == (folder / "trainer.json").stat().st_size
    assert checkpoint_problem(folder) is None
    for path in [folder, *folder.rglob("*")]:  # umask 022 while it was written
        assert stat.S_IMODE(path.stat().st_mode) == (0o755 if path.is_dir() else 0o644), path
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_every_truncated_or_altered_file_is_named(saved_run, tmp_path):
    folder = _copy_run(saved_run, tmp_path) / "run" / "checkpoints" / "step-00000004"
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    for path in files:
        original = path.read_bytes()
        path.write_bytes(original[: len(original) // 2])
        problem = checkpoint_problem(folder)
        assert problem is not None and str(path) in problem and "\n" not in problem, (path, problem)
        path.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))  # same size, one bit flipped
        problem = checkpoint_problem(folder)
        assert problem is not None and str(path) in problem, (path, problem)
        path.write_bytes(original)
    assert checkpoint_problem(folder) is None


def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(saved_run, tmp_path, caplog):
    from moebius.train.trainer import Trainer

    run = _copy_run(saved_run, tmp_path) / "run"
    damaged = run / "checkpoints" / "step-00000004" / "optimizer.json"
    damaged.write_text(damaged.read_text()[:40])
    with caplog.at_level(logging.WARNING, logger="moebius.train"):
        trainer = Trainer(tiny_config(tmp_path, "run.max_steps=6", "run.save_every=2", "run.keep_last=0",
                                      "ema.enabled=true"))
    assert trainer.step == 2
    lines = [r.getMessage() for r in caplog.records if r.filename == "checkpoints.py"]
    assert len(lines) == 2 and all("\n" not in line for line in lines), lines
    assert str(damaged) in lines[0] and "step-00000004 is damaged" in lines[0]
    assert "resuming from" in lines[1] and "step-00000002" in lines[1]
    trainer.train()
    assert trainer.step == 6 and checkpoint_problem(run / "checkpoints" / "step-00000004") is None  # rewritten
    assert _steps(run) == [1, 2, 3, 4, 5, 6]


def test_no_intact_checkpoint_is_a_one_line_error(saved_run, tmp_path):
    from moebius.train.trainer import Trainer

    run = _copy_run(saved_run, tmp_path) / "run"
    for step in (2, 4):
        path = run / "checkpoints" / f"step-{step:08d}" / "student" / "model.safetensors"
        path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="no intact checkpoint") as info:
        Trainer(tiny_config(tmp_path, "run.max_steps=6"))
    assert "\n" not in str(info.value) and "step-00000004/student/model.safetensors" in str(info.value)
    chosen = run / "checkpoints" / "step-00000002"
    with pytest.raises(CheckpointError, match="run.resume: checkpoint .* is damaged") as info:
        Trainer(tiny_config(tmp_path, "run.max_steps=6", f"run.resume={chosen}"))
    assert "\n" not in str(info.value) and str(chosen / "student" / "model.safetensors") in str(info.value)


def test_a_resumed_run_does_not_repeat_log_rows(tmp_path, monkeypatch):
    from moebius.train.trainer import Trainer

    common = ("run.max_steps=12", "run.save_every=4")
    crashing = Trainer(tiny_config(tmp_path, *common))
    step = Trainer.train_step

    def crash_after_ten(self):
        if self.step == 10:
            raise KeyboardInterrupt  # a crash after step 10, two steps past the last checkpoint
        return step(self)

    monkeypatch.setattr(Trainer, "train_step", crash_after_ten)
    with pytest.raises(KeyboardInterrupt):
        crashing.train()
    monkeypatch.undo()
    run = tmp_path / "run"
    assert _steps(run) == list(range(1, 11))
    with (run / "logs" / "scalars.jsonl").open("a") as log:
        log.write('{"step": 11, "loss/to')  # a row cut short by the crash
    resumed = Trainer(tiny_config(tmp_path, *common))
    assert resumed.step == 8
    resumed.train()
    assert _steps(run) == list(range(1, 13))
