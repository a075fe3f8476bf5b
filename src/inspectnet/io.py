"""Atomic file writes: write to a temporary file in the same folder, then rename.

A crash or Ctrl-C leaves the previous good file, never half of a new one. A write that
fails (full disk, no permission, read-only file system, a file where a folder should be)
removes its temporary file, leaves the previous file as it was and raises
:class:`~inspectnet.errors.StorageError` naming the path: :func:`storage_error` turns any
``OSError`` into that message, for the writers that do not come through here too.
"""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import StorageError

_NO_SPACE = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
_NOT_WRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS}


def _size(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def _existing_ancestor(path: Path) -> Path:
    p = path.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _file_in_the_way(path: Path) -> Path | None:
    """The first of ``path``'s ancestors (or ``path``, a folder to be) that exists but is not a folder."""
    full = path.absolute()
    for p in [*reversed(full.parents), full]:
        if p.exists() and not p.is_dir():
            return p
    return None


def storage_error(e: OSError, path: str | Path, needed: int | None = None) -> StorageError:
    """A :class:`StorageError` that says why ``path`` could not be written.

    Args:
        e: The ``OSError`` the write raised.
        path: The file (or folder) being written.
        needed: Bytes the write needed, when known (reported with the free space).
    """
    path = Path(path)
    code = e.errno
    why = e.strerror or str(e)
    if code in _NO_SPACE:
        try:
            free = f"{_size(shutil.disk_usage(_existing_ancestor(path)).free)} free"
        except OSError:
            free = "free space unknown"
        need = f"{_size(needed)} needed, " if needed else ""
        return StorageError(f"cannot write {path}: no space left on the device ({need}{free}); "
                            "free some space or write elsewhere")
    if code == errno.EROFS:
        return StorageError(f"cannot write {path}: {_existing_ancestor(path.parent)} is on a read-only file system")
    if code in _NOT_WRITABLE:
        return StorageError(f"cannot write {path}: the folder {_existing_ancestor(path.parent)} is not writable "
                            f"({why}); choose another place or fix its permissions")
    blocker = _file_in_the_way(path) if code in (errno.ENOTDIR, errno.EEXIST, errno.ENOENT) else None
    if blocker is not None:
        return StorageError(f"cannot write {path}: {blocker} is a file, not a folder")
    return StorageError(f"cannot write {path}: {why}")


def make_dir(path: str | Path) -> Path:
    """``mkdir -p``, with a :class:`StorageError` naming the folder when it cannot be made."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise storage_error(e, path) from None
    return path


def atomic_write(path: str | Path, writer: Callable[[Path], None], size: int | None = None) -> Path:
    """Call ``writer(tmp_path)`` then rename the temporary file onto ``path``.

    Args:
        path: The file to (re)place.
        writer: Writes the whole new content to the path it is given.
        size: Bytes about to be written, when known (a full disk's message reports it).

    Raises:
        StorageError: the folder or the file cannot be written; the previous file is
            intact and no temporary file is left behind.
    """
    path = Path(path)
    make_dir(path.parent)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise storage_error(e, path, size) from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        writer(tmp_path)
        os.replace(tmp_path, path)
    except BaseException as e:
        tmp_path.unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise storage_error(e, path, size) from None
        raise
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda p: p.write_bytes(data), size=len(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    data = text.encode("utf-8")
    return atomic_write(path, lambda p: p.write_bytes(data), size=len(data))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    """``obj`` as indented JSON. Non-finite floats (NaN, inf) are written as ``null``: they
    are not JSON, and a reader that chokes on them loses the whole file."""
    return atomic_write_text(path, json.dumps(finite_json(obj), indent=2, default=_json_default,
                                              allow_nan=False) + "\n")


def finite_json(obj: Any) -> Any:
    """``obj`` with every non-finite float (NaN, inf) replaced by ``None``, containers copied;
    numpy values become Python ones."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_json(v) for v in obj]
    if hasattr(obj, "tolist") and not isinstance(obj, (str, bytes)):
        return finite_json(obj.tolist())
    return obj


def _json_default(o: Any) -> Any:
    # numpy scalars and arrays show up in metrics; JSON has no type for them.
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"cannot serialise {type(o).__name__} to JSON")

