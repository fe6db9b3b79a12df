"""Writing files and folders so that a crash, a full disk or a read-only folder never leaves half a result.

A file is written to a hidden temporary file beside its destination, flushed and fsynced, renamed over the
destination, and the folder is fsynced so that the rename survives a power loss. A folder is built under a
hidden temporary name and published the same way. The temporary file is created with mode 0o666 and the
folder with 0o777, so the kernel applies the user's umask exactly as it does to any new file (0o644 and
0o755 under umask 022); a file that replaces an existing one takes that file's mode instead. Files that
other libraries create inside a temporary folder (safetensors writes 0o600) are given the folder's
permission bits without execute, i.e. the same umask, read without a race from the folder the kernel made.

Any failure removes the temporary file or folder and raises :class:`WriteError`, which names the
destination, never the temporary name.

Standard library only, so that the command line can use it without importing torch.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import shutil
import stat
from pathlib import Path
from typing import BinaryIO, Iterator, NoReturn

_TEMP_ATTEMPTS = 16


class WriteError(OSError):
    """Writing ``filename`` (the destination) failed; ``errno`` and ``strerror`` are the system's."""

    def __str__(self) -> str:
        return f"cannot write {self.filename}: {self.strerror}"


def _raise_for(exc: BaseException, destination: Path) -> NoReturn:
    """Re-raise a system error as a :class:`WriteError` on ``destination`` (the outermost destination wins
    when writes nest); anything else unchanged."""
    if isinstance(exc, OSError) and exc.errno is not None:
        raise WriteError(exc.errno, exc.strerror or os.strerror(exc.errno), str(destination)) from None
    raise exc


@contextlib.contextmanager
def reported_as(destination: str | os.PathLike) -> Iterator[None]:
    """Raise a system error from the block as a :class:`WriteError` naming ``destination``."""
    try:
        yield
    except OSError as exc:
        _raise_for(exc, Path(destination))


def os_error_in(exc: Exception) -> OSError | None:
    """The system error a library reports only in its message ("... (os error 28) ..."), as an OSError."""
    found = re.search(r"os error (\d+)", str(exc))
    if found is None:
        return None
    number = int(found.group(1))
    return OSError(number, os.strerror(number))


def _temp_path(destination: Path) -> Path:
    return destination.with_name(f".{destination.name}.{secrets.token_hex(4)}.tmp")


def _replaced_mode(path: Path) -> int | None:
    """The permission bits of the file ``path`` replaces (None when there is none yet)."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return None
    if stat.S_ISDIR(info.st_mode):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR))
    if not os.access(path, os.W_OK):
        # A file the user made read-only is not replaced behind their back.
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
    return stat.S_IMODE(info.st_mode)


def _create_temp_file(destination: Path) -> tuple[Path, int]:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
    for _ in range(_TEMP_ATTEMPTS):
        tmp = _temp_path(destination)
        try:
            return tmp, os.open(tmp, flags, 0o666)  # the kernel applies the umask: no race with other threads
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary name")


def sync_folder(folder: str | os.PathLike) -> None:
    """fsync a folder, so that the names created or renamed in it survive a power loss (POSIX only)."""
    if not hasattr(os, "O_DIRECTORY"):
        return  # Windows cannot open a folder; NTFS journals renames itself
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _apply_folder_mode(root: Path) -> None:
    """Give every file and folder under ``root`` the permission bits ``root`` was created with (files
    without execute)."""
    folder_mode = stat.S_IMODE(os.stat(root).st_mode) & 0o777
    for dirpath, dirnames, filenames in os.walk(root):
        for name, mode in [*((d, folder_mode) for d in dirnames), *((f, folder_mode & 0o666) for f in filenames)]:
            path = os.path.join(dirpath, name)
            info = os.lstat(path)
            if not stat.S_ISLNK(info.st_mode) and info.st_mode & 0o777 != mode:
                os.chmod(path, stat.S_IMODE(info.st_mode) & ~0o777 | mode)  # keeps a setgid folder's bit


def sync_tree(root: str | os.PathLike) -> None:
    """fsync every file and folder under ``root`` (``root`` included), files first."""
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY | getattr(os, "O_BINARY", 0))
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        sync_folder(dirpath)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """Yield a binary handle whose bytes appear at ``path`` all at once when the block ends without error.

    The parent folders are created as needed. On any error nothing changes at ``path`` and no temporary
    file is left; a system error is raised as :class:`WriteError` naming ``path``.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        mode = _replaced_mode(path)
        tmp, fd = _create_temp_file(path)
    except OSError as exc:
        _raise_for(exc, path)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
        sync_folder(path.parent)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        _raise_for(exc, path)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    with atomic_write(path) as handle:
        handle.write(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` as UTF-8 to ``path`` atomically (see :func:`atomic_write`)."""
    write_bytes(path, text.encode("utf-8"))


def make_temp_folder(destination: str | os.PathLike) -> Path:
    """Create an empty hidden folder beside ``destination`` (parents as needed) to be published there later."""
    destination = Path(destination)
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(_TEMP_ATTEMPTS):
            tmp = _temp_path(destination)
            try:
                os.mkdir(tmp, 0o777)  # the kernel applies the umask
                return tmp
            except FileExistsError:
                continue
        raise FileExistsError(errno.EEXIST, "no free temporary name")
    except OSError as exc:
        _raise_for(exc, destination)


def publish_folder(tmp: str | os.PathLike, destination: str | os.PathLike, *, replace: bool = False) -> None:
    """Set the permissions of everything under ``tmp`` from ``tmp``'s own (made by :func:`make_temp_folder`
    or any ``mkdir`` under the current umask), fsync it all, rename it to ``destination`` and fsync the
    parent folder.

    ``replace``: an existing ``destination`` is moved aside first and removed once the new folder is in
    place. Without it, an existing non-empty ``destination`` is an error.
    """
    tmp, destination = Path(tmp), Path(destination)
    try:
        _apply_folder_mode(tmp)
        sync_tree(tmp)
        old = None
        if replace and destination.exists():
            old = _temp_path(destination)
            os.replace(destination, old)
        try:
            os.replace(tmp, destination)
        except OSError:
            if old is not None:
                os.replace(old, destination)
            raise
        sync_folder(destination.parent)
    except OSError as exc:
        _raise_for(exc, destination)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_folder(destination: str | os.PathLike, *, replace: bool = False) -> Iterator[Path]:
    """Yield a temporary folder that appears, complete and fsynced, as ``destination`` when the block ends.

    On any error the temporary folder is removed and ``destination`` is untouched; a system error is
    raised as :class:`WriteError` naming ``destination``.
    """
    destination = Path(destination)
    tmp = make_temp_folder(destination)
    try:
        yield tmp
        publish_folder(tmp, destination, replace=replace)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        _raise_for(exc, destination)
