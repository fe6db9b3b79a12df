"""The one folder listing that batch runs, evaluation and training share."""

from __future__ import annotations

from moebius.image_files import list_image_files


def test_lists_images_sorted_skipping_hidden_files_and_other_suffixes(tmp_path):
    for name in ("b.png", "a.JPG", "notes.txt", "._a.jpg", ".hidden.png", "sub/c.webp", "sub/.d.png"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "folder.png").mkdir()  # a folder named like an image is not one

    assert list_image_files(tmp_path) == [tmp_path / "a.JPG", tmp_path / "b.png"]
    assert list_image_files(tmp_path, recursive=True) == [tmp_path / "a.JPG", tmp_path / "b.png",
                                                          tmp_path / "sub" / "c.webp"]
