"""Decode every image once, resized, into one uint8 tensor.

Epochs after the first then cost no decoding at all: a 3,000-image set at 224 px is
3000 x 3 x 224 x 224 bytes = 450 MB. Decoding runs on a thread pool (Pillow and the
resize kernels release the GIL), with a progress bar.

The tensor lives in memory while it fits a budget (``cache_mb``, default half of the
available RAM); beyond that it is a ``numpy.memmap`` file that the DataLoader reads
through the page cache, so a data set larger than RAM trains at disk speed instead of
failing. Samples are decoded split by split, so each split is a slice (a view, no copy)
of the one tensor in either case.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from ..progress import progress_iter
from .decode import DecodeError, load_resized
from .sources import Sample


SPLITS = ("train", "val", "test")


@dataclass
class BadFile:
    path: Path
    reason: str


# Assumed available RAM (MiB) where no probe answers: a 1 GiB cache budget, which a laptop
# has to spare, rather than an unbounded one that could swap a large data set.
FALLBACK_AVAILABLE_MB = 2048.0


def _meminfo_mb() -> float | None:
    # Linux: MemAvailable counts the page cache the kernel can reclaim, unlike MemFree.
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _psutil_mb() -> float | None:
    try:
        import psutil
    except ImportError:
        return None
    try:
        return psutil.virtual_memory().available / 2**20
    except (OSError, AttributeError, RuntimeError):
        return None


def _windows_mb() -> float | None:
    if os.name != "nt":
        return None
    import ctypes

    class MemoryStatusEx(ctypes.Structure):
        _fields_ = [("dwLength", ctypes.c_ulong), ("dwMemoryLoad", ctypes.c_ulong)] + [
            (name, ctypes.c_ulonglong) for name in ("ullTotalPhys", "ullAvailPhys", "ullTotalPageFile",
                                                    "ullAvailPageFile", "ullTotalVirtual", "ullAvailVirtual",
                                                    "ullAvailExtendedVirtual")]

    stat = MemoryStatusEx()
    stat.dwLength = ctypes.sizeof(stat)
    if not ctypes.windll.kernel32.GlobalMemoryStatusEx(ctypes.byref(stat)):
        return None
    return stat.ullAvailPhys / 2**20


def _sysconf_mb() -> float | None:
    # Free pages only (no reclaimable cache): an underestimate, which is the safe side.
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (AttributeError, ValueError, OSError):
        return None  # no os.sysconf (Windows) or no such name (macOS)


RAM_PROBES = (_meminfo_mb, _psutil_mb, _windows_mb, _sysconf_mb)


def available_mb() -> float | None:
    """Available RAM in MiB, from the first probe that answers: ``/proc/meminfo`` (Linux),
    psutil (when installed), the Windows API, ``os.sysconf``; None when none does."""
    for probe in RAM_PROBES:
        mb = probe()
        if mb is not None and mb > 0:
            return mb
    return None


def default_cache_mb() -> float:
    """Half of the available RAM: room is left for the model, activations and the OS.

    Where the RAM cannot be read, half of :data:`FALLBACK_AVAILABLE_MB`: a bounded budget,
    so that a large data set spills to disk instead of filling memory."""
    mb = available_mb()
    return (FALLBACK_AVAILABLE_MB if mb is None else mb) / 2


def allocate_images(n: int, size: int, *, spill_path: Path | None = None,
                    cache_mb: float | None = None) -> tuple[torch.Tensor, Path | None]:
    """An ``(n, 3, size, size)`` uint8 tensor: zeros in memory, or a memmap file when too big.

    Args:
        n: Number of images.
        size: Side in pixels.
        spill_path: Where the memmap file goes when needed (None: always in memory).
        cache_mb: Budget in MiB; None = :func:`default_cache_mb`. 0 always spills.

    Returns:
        The tensor and the memmap file's path (None when in memory).
    """
    need_mb = n * 3 * size * size / 2**20
    budget = default_cache_mb() if cache_mb is None else float(cache_mb)
    if spill_path is None or need_mb <= budget:
        return torch.zeros((n, 3, size, size), dtype=torch.uint8), None
    spill_path.parent.mkdir(parents=True, exist_ok=True)
    # w+ creates or truncates: a file left by a killed run is never read back.
    mm = np.memmap(spill_path, dtype=np.uint8, mode="w+", shape=(max(n, 1), 3, size, size))
    return torch.from_numpy(mm)[:n], spill_path


def decode_all(
    paths: list[Path], size: int, *, desc: str = "decoding", workers: int | None = None, progress: bool = True,
    out: torch.Tensor | None = None,
) -> tuple[torch.Tensor, list[BadFile]]:
    """Decode and resize ``paths`` into an ``(N, 3, size, size)`` uint8 tensor.

    Args:
        out: Where to write (e.g. from :func:`allocate_images`); a new in-memory tensor if None.

    Returns the tensor (rows of unreadable files left as zeros) and the list of bad files.
    """
    if out is None:
        out = torch.zeros((len(paths), 3, size, size), dtype=torch.uint8)
    bad: list[BadFile] = []
    workers = workers or min(4, (os.cpu_count() or 1) + 1)

    def work(i: int) -> tuple[int, str | None]:
        try:
            out[i] = load_resized(paths[i], size)
            return i, None
        except DecodeError as e:
            return i, str(e)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(work, range(len(paths)))
        for i, err in progress_iter(results, total=len(paths), desc=desc, enabled=progress):
            if err is not None:
                bad.append(BadFile(paths[i], err))
    bad.sort(key=lambda b: str(b.path))
    return out, bad


def format_bad_files(bad: list[BadFile], limit: int = 50) -> str:
    lines = [f"  {b.path}: {b.reason}" for b in bad[:limit]]
    if len(bad) > limit:
        lines.append(f"  ... and {len(bad) - limit} more")
    return "\n".join(lines)


@dataclass
class CachedImages:
    """Decoded images and integer labels of one split."""

    images: torch.Tensor  # (N, 3, S, S) uint8
    labels: torch.Tensor  # (N,) int64
    paths: list[Path]
    spill_path: Path | None = None  # the memmap file behind ``images``, when not in memory

    def __len__(self) -> int:
        return len(self.paths)


def build_cache(
    samples: list[Sample], classes: list[str], size: int, *, skip_bad: bool = False, progress: bool = True,
    spill_path: Path | None = None, cache_mb: float | None = None,
) -> tuple[dict[str, CachedImages], list[BadFile]]:
    """Decode all samples once and group them by split.

    Args:
        spill_path: File for the decoded images when they exceed ``cache_mb`` (None: RAM).
        cache_mb: In-memory budget in MiB (None: half of the available RAM; 0: always spill).

    Raises:
        DataError: naming every unreadable file and its reason, unless ``skip_bad``.
    """
    # Split by split, so that every split is one contiguous slice of the tensor.
    order = [s for split in SPLITS for s in samples if s.split == split]
    images, spilled = allocate_images(len(order), size, spill_path=spill_path, cache_mb=cache_mb)
    try:
        images, bad = decode_all([s.path for s in order], size, progress=progress, out=images)
        if bad and not skip_bad:
            raise DataError(
                f"{len(bad)} image(s) cannot be read; fix or remove them, or pass --skip-bad to skip them:\n"
                + format_bad_files(bad)
            )
    except BaseException:
        del images
        if spilled is not None:
            spilled.unlink(missing_ok=True)
        raise
    bad_set = {b.path for b in bad}
    keep = [i for i, s in enumerate(order) if s.path not in bad_set]
    if len(keep) < len(order):
        # Move the readable rows up, in place (the target row never lies after the source).
        for w, r in enumerate(keep):
            if w != r:
                images[w] = images[r]
        order = [order[i] for i in keep]
    index = {c: i for i, c in enumerate(classes)}
    out: dict[str, CachedImages] = {}
    start = 0
    for split in SPLITS:
        rows = [s for s in order if s.split == split]
        if not rows:
            continue
        out[split] = CachedImages(
            images=images[start : start + len(rows)],
            labels=torch.tensor([index[s.label] for s in rows], dtype=torch.long),
            paths=[s.path for s in rows],
            spill_path=spilled,
        )
        start += len(rows)
    return out, bad


def fingerprint(samples: list[Sample]) -> str:
    """A short hash of (path name, label, split, size) for the model card: same data, same hash."""
    h = hashlib.sha256()
    for s in sorted(samples, key=lambda s: str(s.path)):
        try:
            size = s.path.stat().st_size
        except OSError:
            size = -1
        h.update(f"{s.path.name}|{s.label}|{s.split}|{size}\n".encode())
    return h.hexdigest()[:16]
