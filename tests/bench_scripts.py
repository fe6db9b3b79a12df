"""Import a script of bench/ or docs/experiments/scripts/ (neither is a package) as a module, for tests."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]
BENCH_DIR = REPO / "bench"
EXPERIMENT_SCRIPTS_DIR = REPO / "docs" / "experiments" / "scripts"


def _load(folder: Path, name: str) -> ModuleType:
    """``<folder>/<name>.py`` as a fresh module named ``name``; its neighbours import as when it runs there."""
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    spec = importlib.util.spec_from_file_location(name, folder / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_bench(name: str) -> ModuleType:
    """``bench/<name>.py`` as a module."""
    return _load(BENCH_DIR, name)


def load_experiment(name: str) -> ModuleType:
    """``docs/experiments/scripts/<name>.py`` as a module."""
    return _load(EXPERIMENT_SCRIPTS_DIR, name)
