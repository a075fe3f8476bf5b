"""Decode every image once, resized, into one uint8 tensor held in memory.

Epochs after the first then cost no decoding at all: a 3,000-image set at 224 px is
3000 x 3 x 224 x 224 bytes = 450 MB. Decoding runs on a thread pool (Pillow and the
resize kernels release the GIL), with a progress bar.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import DataError
from ..progress import progress_iter
from .decode import DecodeError, load_resized
from .sources import Sample


@dataclass
class BadFile:
    path: Path
    reason: str


def decode_all(
    paths: list[Path], size: int, *, desc: str = "decoding", workers: int | None = None, progress: bool = True
) -> tuple[torch.Tensor, list[BadFile]]:
    """Decode and resize ``paths`` into an ``(N, 3, size, size)`` uint8 tensor.

    Returns the tensor (rows of unreadable files left as zeros) and the list of bad files.
    """
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

    def __len__(self) -> int:
        return len(self.paths)


def build_cache(
    samples: list[Sample], classes: list[str], size: int, *, skip_bad: bool = False, progress: bool = True
) -> tuple[dict[str, CachedImages], list[BadFile]]:
    """Decode all samples once and group them by split.

    Raises:
        DataError: naming every unreadable file and its reason, unless ``skip_bad``.
    """
    paths = [s.path for s in samples]
    images, bad = decode_all(paths, size, progress=progress)
    if bad and not skip_bad:
        raise DataError(
            f"{len(bad)} image(s) cannot be read; fix or remove them, or pass --skip-bad to skip them:\n"
            + format_bad_files(bad)
        )
    bad_set = {b.path for b in bad}
    index = {c: i for i, c in enumerate(classes)}
    out: dict[str, CachedImages] = {}
    for split in ("train", "val", "test"):
        rows = [i for i, s in enumerate(samples) if s.split == split and s.path not in bad_set]
        if not rows:
            continue
        idx = torch.tensor(rows, dtype=torch.long)
        out[split] = CachedImages(
            images=images.index_select(0, idx),
            labels=torch.tensor([index[samples[i].label] for i in rows], dtype=torch.long),
            paths=[samples[i].path for i in rows],
        )
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
