"""File checks: unreadable files, lying extensions, tiny or blank images, files training skips.

Each check takes the per-file numbers of :mod:`.scan` (or, for the cheap checks, only the
samples) and returns the report's rows; none of them decodes an image again.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from ..sources import IMAGE_EXTENSIONS, Sample
from .listing import rel_path, sample_entry
from .scan import FileInfo, sniff

MIN_SIDE = 32  # below this a 3x3 conv stack has almost nothing to look at
CONSTANT_STD = 2.0  # grey-level std under this is a blank frame (lens cap, empty tray, all-white)

# The format each extension promises.
_EXT_FORMAT = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".tif": "TIFF",
               ".tiff": "TIFF", ".webp": "WEBP", ".gif": "GIF"}


def extension_mismatch(path: Path, fmt: str) -> str | None:
    """A sentence when the extension promises another format than the content is.

    Args:
        path: The file (only its extension is read).
        fmt: The format the content is (see :func:`~.scan.sniff`).

    Returns:
        The sentence, or ``None`` when they agree or either is unknown.
    """
    want = _EXT_FORMAT.get(path.suffix.lower())
    if not fmt or fmt == "TEXT" or want is None:
        return None
    if fmt == "MPO":  # multi-picture JPEG (phone cameras) is a JPEG
        fmt = "JPEG"
    if fmt != want:
        return f"extension {path.suffix} but the content is {fmt}"
    return None


def unreadable_files(infos: list[FileInfo], samples: list[Sample],
                     root: Path) -> list[dict[str, str]]:
    """Files that could not be read or decoded, with the reason.

    Args:
        infos: One :class:`~.scan.FileInfo` per sample.
        samples: The samples the infos belong to.
        root: Paths are given relative to it.

    Returns:
        ``{"path", "reason"}`` rows, in sample order.
    """
    return [{"path": rel_path(samples[fi.index].path, root), "reason": fi.error or ""}
            for fi in infos if fi.error is not None]


def mismatched_extensions(infos: list[FileInfo], samples: list[Sample],
                          root: Path) -> list[dict[str, str]]:
    """Readable images whose extension promises another format than their content.

    Args:
        infos: One :class:`~.scan.FileInfo` per sample.
        samples: The samples the infos belong to.
        root: Paths are given relative to it.

    Returns:
        ``{"path", "reason"}`` rows, in sample order.
    """
    out = []
    for fi in infos:
        msg = extension_mismatch(samples[fi.index].path, fi.format) if fi.error is None else None
        if msg:
            out.append({"path": rel_path(samples[fi.index].path, root), "reason": msg})
    return out


def small_images(infos: list[FileInfo], samples: list[Sample], root: Path) -> list[dict[str, Any]]:
    """Readable images with a side under :data:`MIN_SIDE` pixels.

    Args:
        infos: One :class:`~.scan.FileInfo` per sample.
        samples: The samples the infos belong to.
        root: Paths are given relative to it.

    Returns:
        Sample rows (path, label, split) with ``"size"`` as ``"WxH"``, in sample order.
    """
    return [{**sample_entry(samples[fi.index], root), "size": f"{fi.width}x{fi.height}"}
            for fi in infos if fi.error is None and min(fi.width, fi.height) < MIN_SIDE]


def constant_images(infos: list[FileInfo], samples: list[Sample],
                    root: Path) -> list[dict[str, Any]]:
    """Readable images that are almost one grey level (grey std under :data:`CONSTANT_STD`).

    Args:
        infos: One :class:`~.scan.FileInfo` per sample.
        samples: The samples the infos belong to.
        root: Paths are given relative to it.

    Returns:
        Sample rows (path, label, split) with ``"std"``, in sample order.
    """
    return [{**sample_entry(samples[fi.index], root), "std": round(fi.std, 3)}
            for fi in infos if fi.error is None and fi.std < CONSTANT_STD]


def ignored_files(root: Path, samples: list[Sample]) -> list[str]:
    """Files in a folder data set that training will silently not read (e.g. .gif, .heic).

    Args:
        root: The data folder; anything that is not a folder gives no files.
        samples: The samples training would read.

    Returns:
        Paths relative to ``root``, sorted.
    """
    if not root.is_dir():
        return []
    used = {s.path.resolve() for s in samples}
    out = []
    for p in root.rglob("*"):
        if (not p.is_file() or p.name.startswith(".")
                or p.suffix.lower() in (".csv", ".json", ".txt", ".md", ".yaml")):
            continue
        if any(part == "masks" or part.startswith(".") for part in p.relative_to(root).parts[:-1]):
            continue
        if p.suffix.lower() not in IMAGE_EXTENSIONS and p.resolve() not in used:
            out.append(rel_path(p, root))
    return sorted(out)


def header_problems(samples: list[Sample]) -> list[str]:
    """Empty files, text saved as an image, lying extensions: from 32 header bytes, no decode.

    Args:
        samples: The files to look at; files that cannot be opened are skipped.

    Returns:
        One sentence per kind of problem found (empty, text, lying extension), naming up to
        five files each; empty when none.
    """
    empty, text, lying = [], [], []
    for s in samples:
        try:
            with s.path.open("rb") as f:
                head = f.read(32)
        except OSError:
            continue  # a missing file is for the decoder to report, with its path
        if not head:
            empty.append(s.path)
            continue
        fmt = sniff(head)
        if fmt == "TEXT":
            text.append(s.path)
        elif fmt and extension_mismatch(s.path, fmt):
            lying.append(s.path)
    problems: list[str] = []
    for paths, what in ((empty, "empty (0 bytes)"), (text, "text, not images"),
                        (lying, "images whose extension does not match their content")):
        if paths:
            shown = ", ".join(str(p) for p in paths[:5])
            shown += f" and {len(paths) - 5} more" if len(paths) > 5 else ""
            problems.append(f"{len(paths)} file(s) are {what}: {shown}")
    return problems


def _span(a: np.ndarray) -> dict[str, int]:
    if not len(a):
        return {}
    return {"min": int(a.min()), "median": int(np.median(a)), "max": int(a.max())}


def size_summary(infos: list[FileInfo]) -> dict[str, Any]:
    """Image sizes of the readable files: distinct count, the 5 most common, width/height spans.

    Args:
        infos: Per-file numbers; unreadable files are left out.

    Returns:
        ``{"distinct", "most_common", "width", "height"}``; the spans are ``{}`` when no
        file is readable.
    """
    ok = [fi for fi in infos if fi.error is None]
    widths = np.array([fi.width for fi in ok]) if ok else np.zeros(0)
    heights = np.array([fi.height for fi in ok]) if ok else np.zeros(0)
    size_counts = Counter(f"{fi.width}x{fi.height}" for fi in ok)
    return {
        "distinct": len(size_counts),
        "most_common": dict(size_counts.most_common(5)),
        "width": _span(widths), "height": _span(heights),
    }


def mode_counts(infos: list[FileInfo]) -> dict[str, int]:
    """Pillow modes of the readable files, most common first."""
    return dict(Counter(fi.mode for fi in infos if fi.error is None).most_common())
