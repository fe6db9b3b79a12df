"""Training checkpoints on disk: finding them, their integrity record, and choosing one to resume from.

A checkpoint ``checkpoints/step-XXXXXXXX/`` is built under a hidden temporary name; ``manifest.json``
(every file's size and SHA-256) is written last, everything is fsynced and the folder renamed into place
(``Trainer.save_checkpoint``). Before a resume loads anything, the checkpoint is checked against its
manifest; with ``run.resume: auto`` a damaged one is reported in one line and the newest intact one is
used instead.

Standard library only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

from ..errors import CheckpointError

logger = logging.getLogger("moebius.train")

CHECKPOINT_PREFIX = "step-"
MANIFEST_NAME = "manifest.json"
TRAINER_STATE_NAME = "trainer.json"
_MANIFEST_FORMAT = "moebius-checkpoint-manifest"
_CHUNK = 1 << 20


def find_checkpoints(folder: Path) -> list[Path]:
    """Published checkpoints in ``folder`` (intact or not; hidden temporary folders excluded), oldest first."""
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.name.startswith(CHECKPOINT_PREFIX) and p.is_dir()
             and ((p / MANIFEST_NAME).exists() or (p / TRAINER_STATE_NAME).exists())]
    return sorted(found, key=lambda p: p.name)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(folder: Path) -> None:
    """Record every file under ``folder`` (relative path, size, SHA-256) in ``folder/manifest.json``.

    Written last, after every other file of the checkpoint.
    """
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST_NAME):
        files[path.relative_to(folder).as_posix()] = {"size": path.stat().st_size, "sha256": _sha256(path)}
    record = {"format": _MANIFEST_FORMAT, "version": 1, "files": files}
    (folder / MANIFEST_NAME).write_text(json.dumps(record, indent=1) + "\n")


def checkpoint_problem(folder: Path) -> str | None:
    """None when every file ``manifest.json`` lists has its recorded size and SHA-256; else one sentence
    naming the first damaged file. A checkpoint from before manifests existed (``trainer.json`` but no
    ``manifest.json``) cannot be checked and passes."""
    manifest = folder / MANIFEST_NAME
    if not manifest.exists():
        return None if (folder / TRAINER_STATE_NAME).is_file() else f"{manifest} is missing"
    try:
        record = json.loads(manifest.read_text(encoding="utf-8"))
        files = record["files"] if record.get("format") == _MANIFEST_FORMAT else None
        entries = [(name, int(e["size"]), str(e["sha256"])) for name, e in files.items()]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return f"{manifest} is unreadable (truncated or not a checkpoint manifest)"
    if TRAINER_STATE_NAME not in files:
        return f"{manifest} does not list {TRAINER_STATE_NAME}"
    for name, size, sha256 in entries:
        path = folder / name
        try:
            actual = path.stat().st_size
        except OSError:
            return f"{path} is missing"
        if actual != size:
            return f"{path} is {actual} bytes where the manifest records {size} (truncated or overwritten)"
        try:
            if _sha256(path) != sha256:
                return f"{path} does not match the SHA-256 its manifest records (corrupted)"
        except OSError as exc:
            return f"{path} is unreadable ({exc.strerror or exc})"
    return None


def newest_intact(folder: Path, log: bool = True) -> Path | None:
    """The newest checkpoint in ``folder`` that passes :func:`checkpoint_problem`; None when there is none
    at all, a :class:`CheckpointError` when every one is damaged.

    With ``log``, each damaged checkpoint passed over is reported in one line, and so is the fallback.
    """
    found = find_checkpoints(folder)
    first_problem = None
    for candidate in reversed(found):
        problem = checkpoint_problem(candidate)
        if problem is None:
            if log and first_problem is not None:
                logger.warning("resuming from %s instead, the newest intact checkpoint", candidate)
            return candidate
        if log:
            logger.warning("checkpoint %s is damaged: %s", candidate.name, problem)
        first_problem = first_problem or problem
    if found:
        raise CheckpointError(f"no intact checkpoint in {folder}; the newest is damaged: {first_problem}. Move the "
                              "damaged ones aside to start over, or set run.output_dir to a new folder")
    return None


def remove_stale_temporaries(folder: Path) -> None:
    """Delete hidden ``.step-*`` folders a crash during a save left behind."""
    if folder.is_dir():
        for path in folder.iterdir():
            if path.name.startswith(f".{CHECKPOINT_PREFIX}") and path.is_dir():
                shutil.rmtree(path, ignore_errors=True)

