"""Leakage: the same image in more than one split, which turns the test score into a memory test."""

from __future__ import annotations

import hashlib
import os
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ...errors import DataError
from ..sources import Sample


def spans_splits(members: Sequence[Sample]) -> bool:
    """Whether a group of copies of one image sits in more than one split (unsplit ones aside)."""
    return len({m.split for m in members if m.split is not None}) > 1


def content_hashes(paths: list[Path], workers: int | None = None) -> list[str | None]:
    """blake2b of each file's bytes (``None`` for files that cannot be read), on a thread pool.

    Args:
        paths: The files.
        workers: Threads (default: 2x the cores, at most 8).

    Returns:
        One hex digest (or ``None``) per path, in order.
    """

    def one(p: Path) -> str | None:
        h = hashlib.blake2b(digest_size=16)
        try:
            with p.open("rb") as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
        except OSError:
            return None
        return h.hexdigest()

    with ThreadPoolExecutor(max_workers=workers or min(8, 2 * (os.cpu_count() or 1))) as pool:
        return list(pool.map(one, paths))


def check_leakage(samples: list[Sample], allow: bool = False,
                  hashes: Sequence[str | None] | None = None) -> list[list[Sample]]:
    """Refuse a split where the same file content sits in more than one split.

    A byte-identical copy of a test image in train makes the test score a memory test. This
    reads every file once (the OS cache then serves the decode that follows) and compares
    content hashes; near-duplicates need decoding and are left to ``inspectnet doctor``.

    Args:
        samples: The split data set.
        allow: Return the leaked groups instead of raising.
        hashes: :func:`content_hashes` of the samples' paths, when the caller has them.

    Returns:
        The leaked groups (each a list of samples in two or more splits); empty when clean.

    Raises:
        DataError: naming the leaked files, unless ``allow``.
    """
    if hashes is None:
        hashes = content_hashes([s.path for s in samples])
    groups: dict[str, list[Sample]] = defaultdict(list)
    for s, h in zip(samples, hashes):
        if h is not None:
            groups[h].append(s)
    leaked = [g for g in groups.values() if len({s.split for s in g}) > 1]
    leaked.sort(key=lambda g: str(g[0].path))
    if leaked and not allow:
        lines = [" = ".join(f"{s.path} ({s.split}, {s.label})" for s in g) for g in leaked[:20]]
        if len(leaked) > 20:
            lines.append(f"... and {len(leaked) - 20} more")
        raise DataError(
            f"{len(leaked)} image(s) appear in more than one split (identical file content); "
            "the test score would be inflated. Remove the copies, or allow it knowingly "
            "(--allow-leakage). Leaked:\n  " + "\n  ".join(lines)
        )
    return leaked
