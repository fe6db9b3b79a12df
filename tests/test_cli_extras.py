"""A command whose optional extra is missing says so in one line, naming the package as it is installed."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from moebius.cli import main

REPO = Path(__file__).resolve().parents[1]


def _one_line_error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    return err


def test_serve_without_the_serve_extra(monkeypatch, capsys):
    for name in [m for m in sys.modules if m == "moebius.serve" or m.startswith("moebius.serve.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "fastapi", None)  # makes `import fastapi` fail
    err = _one_line_error(capsys, ["serve"])
    assert "pip install 'moebius-inpaint[serve]'" in err and "fastapi missing" in err


@pytest.mark.parametrize("command", ["train", "train-autoencoder"])
def test_training_without_the_train_extra(monkeypatch, capsys, command):
    monkeypatch.setitem(sys.modules, "yaml", None)
    err = _one_line_error(capsys, [command, str(REPO / "configs" / "tiny_cpu.yaml")])
    assert "PyYAML" in err and "pip install 'moebius-inpaint[train]'" in err


def test_no_message_or_document_names_the_unrelated_moebius_distribution():
    # `moebius` on the package index is another project; ours installs as moebius-inpaint.
    files = [*(REPO / "src").rglob("*.py"), *(REPO / "docs").rglob("*.md"), REPO / "README.md",
             *(REPO / "scripts").iterdir()]
    offenders = [str(p.relative_to(REPO)) for p in files if p.is_file()
                 and re.search(r"pip install[^\n]*['\" ]moebius\[", p.read_text(errors="replace"))]
    assert offenders == []
