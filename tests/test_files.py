"""Writing results: the user's umask decides permissions, failures name the destination, nothing is left behind."""

from __future__ import annotations

import errno
import os
import resource
import signal
import stat
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from moebius.cli import main
from moebius.files import WriteError, atomic_folder, atomic_write, write_bytes
from moebius.pipeline.image_io import save_image
from test_pipeline import scene, tiny_pipeline


@pytest.fixture()
def umask():
    """Set the process umask for one test (``umask(value)``), restoring it afterwards."""
    before = os.umask(0o022)
    os.umask(before)
    yield lambda value: os.umask(value)
    os.umask(before)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _noise_image(size: int = 64) -> Image.Image:
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8))


def _make_read_only(folder: Path, monkeypatch) -> None:
    """chmod 0o555; as root, which ignores permission bits, refuse file creation there as the kernel would."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o555)
    if os.geteuid() == 0:
        real_open = os.open

        def guarded(path, flags, *args, **kwargs):
            if flags & os.O_CREAT and Path(path).parent == folder:
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
            return real_open(path, flags, *args, **kwargs)

        monkeypatch.setattr(os, "open", guarded)


class _FileSizeLimit:
    """A real write failure part-way through a file: RLIMIT_FSIZE makes writes past ``limit`` bytes fail (EFBIG)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit

    def __enter__(self):
        self.signal = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        self.before = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (self.limit, self.before[1]))

    def __exit__(self, *exc):
        resource.setrlimit(resource.RLIMIT_FSIZE, self.before)
        signal.signal(signal.SIGXFSZ, self.signal)


# ----------------------------------------------------------------------------------------------------
# Permissions


@pytest.mark.parametrize("mask, file_mode, folder_mode", [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750)])
def test_new_files_and_folders_get_what_the_umask_gives(tmp_path, umask, mask, file_mode, folder_mode):
    from moebius.weights.serialization import save_folder

    umask(mask)
    image = save_image(_noise_image(8), tmp_path / "out.png")
    assert _mode(image) == file_mode
    pipe = tiny_pipeline()
    folder = save_folder(pipe.unet.state_dict(), pipe.unet.config, tmp_path / "weights")
    assert _mode(folder) == folder_mode
    assert {p.name: _mode(p) for p in folder.iterdir()} == {"config.json": file_mode, "model.safetensors": file_mode}
    saved = pipe.save_pretrained(tmp_path / "pipe")
    for path in [saved, *saved.rglob("*")]:
        assert _mode(path) == (folder_mode if path.is_dir() else file_mode), path


def test_an_overwritten_file_keeps_its_mode(tmp_path, umask):
    umask(0o022)
    path = tmp_path / "out.png"
    path.write_bytes(b"old")
    path.chmod(0o664)
    save_image(_noise_image(8), path)
    assert _mode(path) == 0o664 and Image.open(path).size == (8, 8)


# ----------------------------------------------------------------------------------------------------
# Failures


def test_a_read_only_folder_names_the_destination_and_leaves_nothing(tmp_path, monkeypatch):
    folder = tmp_path / "ro"
    _make_read_only(folder, monkeypatch)
    try:
        with pytest.raises(WriteError) as info:
            save_image(_noise_image(8), folder / "out.png")
    finally:
        folder.chmod(0o755)
    assert str(info.value) == f"cannot write {folder / 'out.png'}: Permission denied"
    assert info.value.errno == errno.EACCES and list(folder.iterdir()) == []


def test_a_read_only_file_is_not_replaced(tmp_path, monkeypatch):
    path = tmp_path / "keep.png"
    path.write_bytes(b"mine")
    path.chmod(0o444)
    if os.geteuid() == 0:  # root may write anything: answer as the kernel answers any other user
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda p, m, **kw: not (m & os.W_OK and Path(p) == path)
                            and real_access(p, m, **kw))
    with pytest.raises(WriteError, match="keep.png: Permission denied"):
        save_image(_noise_image(8), path)
    assert path.read_bytes() == b"mine" and [p.name for p in tmp_path.iterdir()] == ["keep.png"]


def test_a_write_that_fails_midway_names_the_destination_and_leaves_nothing(tmp_path):
    path = tmp_path / "out.png"
    path.write_bytes(b"previous result")
    with _FileSizeLimit(4096):
        with pytest.raises(WriteError) as info:
            save_image(_noise_image(128), path)  # about 49 kB of incompressible pixels
    assert info.value.errno == errno.EFBIG and info.value.filename == str(path)
    assert str(info.value).startswith(f"cannot write {path}: ")
    assert path.read_bytes() == b"previous result" and [p.name for p in tmp_path.iterdir()] == ["out.png"]


def test_weights_that_do_not_fit_name_the_folder_and_leave_nothing(tmp_path):
    from moebius.weights.serialization import save_model

    unet = tiny_pipeline().unet
    with _FileSizeLimit(4096):
        with pytest.raises(WriteError) as info:  # safetensors reports the error only in its message
            save_model(unet, tmp_path / "weights")
    assert info.value.errno == errno.EFBIG and info.value.filename == str(tmp_path / "weights")
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_at_fsync_names_the_destination(tmp_path, monkeypatch):
    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(WriteError, match=r"cannot write .*out\.bin: No space left on device"):
        write_bytes(tmp_path / "out.bin", b"x" * 100)
    with pytest.raises(WriteError, match=r"cannot write .*model: No space left on device"):
        with atomic_folder(tmp_path / "model") as tmp:
            (tmp / "a.txt").write_text("a")
    assert list(tmp_path.iterdir()) == []


def test_an_error_inside_the_block_changes_nothing(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("before")
    with pytest.raises(KeyError):
        with atomic_write(path) as handle:
            handle.write(b"half")
            raise KeyError("encoder failed")
    assert path.read_text() == "before" and [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_the_inpaint_command_reports_the_destination_in_one_line(tmp_path, monkeypatch, capsys):
    weights = tiny_pipeline().save_pretrained(tmp_path / "pipe")
    image, mask = scene()
    Image.fromarray(image).save(tmp_path / "photo.png")
    Image.fromarray(mask).save(tmp_path / "mask.png")
    out = tmp_path / "ro" / "out.png"
    _make_read_only(out.parent, monkeypatch)
    try:
        code = main(["inpaint", str(tmp_path / "photo.png"), str(tmp_path / "mask.png"), "-o", str(out),
                     "--weights", str(weights), "--steps", "1", "--quiet"])
    finally:
        out.parent.chmod(0o755)
    err = capsys.readouterr().err
    assert code == 2 and err == f"moebius inpaint: error: cannot write {out}: Permission denied\n"
    assert list(out.parent.iterdir()) == []
