"""Locate the built web front-end (``web_app/``) of an ``iopaint`` package installed beside this one.

``moebius serve --ui iopaint`` serves those files at ``/`` from where pip put them; nothing is copied into
this project. The package is found without importing it (importing ``iopaint`` pulls torch, diffusers and
much more), so ``pip install --no-deps iopaint==1.6.0`` is all it needs.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from pathlib import Path

from ..errors import ConfigError

IOPAINT_VERSION = "1.6.0"  # the front-end whose calls the /api/v1 routes answer
INSTALL_HINT = f"pip install --no-deps iopaint=={IOPAINT_VERSION}"


def iopaint_web_app() -> Path:
    """The folder holding IOPaint's ``index.html`` and ``assets/``; ConfigError naming the install command when
    the package (or its built front-end) is missing."""
    try:
        spec = importlib.util.find_spec("iopaint")
    except (ImportError, ValueError):
        spec = None
    folders = list(spec.submodule_search_locations or ()) if spec is not None else []
    for folder in folders:
        web_app = Path(folder) / "web_app"
        if (web_app / "index.html").is_file():
            return web_app
    found = "is not installed" if not folders else "is installed without its built web_app/ front-end"
    raise ConfigError(f"--ui iopaint: the iopaint package {found}; install it with: {INSTALL_HINT}")


def iopaint_version() -> str | None:
    """The installed ``iopaint`` distribution's version, or None."""
    try:
        return importlib.metadata.version("iopaint")
    except importlib.metadata.PackageNotFoundError:
        return None
