"""Shared fixtures: parity data and the official-layout formula checkpoints (built once per session)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from parity_formula import PARITY_DIR, formula_state_dict, load_layout


@pytest.fixture(scope="session")
def student_state() -> dict[str, torch.Tensor]:
    """The formula weights in the official student layout (1203 entries)."""
    return formula_state_dict(load_layout("student"))


@pytest.fixture(scope="session")
def student_reference() -> dict[str, torch.Tensor]:
    """What the official student computed on the formula weights (tests/data/parity/README.md)."""
    return load_file(str(PARITY_DIR / "student_forward.safetensors"))


@pytest.fixture
def one_thread():
    """Run a test on one torch thread, restoring the setting afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
