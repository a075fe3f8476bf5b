"""Deterministic, stratified, seeded train/val/test split, written once as ``split.csv``.

A split given by the data (pre-split folders or a ``split`` column) is obeyed exactly.
"""

from __future__ import annotations

import csv
import io
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..io import atomic_write_text
from .sources import SPLITS, Sample


def stratified_split(
    samples: list[Sample], val_fraction: float = 0.15, test_fraction: float = 0.15, seed: int = 0
) -> list[Sample]:
    """Assign ``split`` to samples that have none, per class, with a seeded shuffle.

    Each class with at least 3 images gets at least one image in train, val and test
    (when those fractions are above zero), so that no split misses a class.
    """
    if all(s.split is not None for s in samples):
        return samples
    if any(s.split is not None for s in samples):
        raise DataError("some samples have a split and others do not; give a split for all or none")
    by_class: dict[str, list[Sample]] = defaultdict(list)
    for s in sorted(samples, key=lambda s: (s.label, str(s.path))):
        by_class[s.label].append(s)
    rng = np.random.default_rng(seed)
    for label, items in by_class.items():
        order = rng.permutation(len(items))
        n = len(items)
        n_test = int(round(n * test_fraction))
        n_val = int(round(n * val_fraction))
        if n >= 3:
            n_test = max(n_test, 1 if test_fraction > 0 else 0)
            n_val = max(n_val, 1 if val_fraction > 0 else 0)
        for rank, idx in enumerate(order):
            items[idx].split = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
    return samples


def check_split(samples: list[Sample]) -> None:
    """Every class must have training images; a split must not be missing a class entirely."""
    classes = sorted({s.label for s in samples})
    train_counts = Counter(s.label for s in samples if s.split == "train")
    empty = [c for c in classes if train_counts[c] == 0]
    if empty:
        raise DataError(
            f"class(es) {', '.join(empty)} have no training images; every class needs some in train"
        )
    unknown = sorted({str(s.split) for s in samples if s.split not in SPLITS})
    if unknown:
        raise DataError(f"unknown split value(s) {', '.join(unknown)}; allowed: {', '.join(SPLITS)}")


def write_split_csv(samples: list[Sample], path: str | Path) -> Path:
    """Write ``path,label,split`` (+ metadata columns) so every number can be reproduced."""
    meta_cols = sorted({k for s in samples for k in s.meta})
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["path", "label", "split", *meta_cols])
    for s in samples:
        # Absolute paths: the CSV lives in the run folder, which is not where the data is.
        w.writerow([str(Path(s.path).resolve()), s.label, s.split, *(s.meta.get(k, "") for k in meta_cols)])
    return atomic_write_text(path, buf.getvalue())


def counts_table(samples: list[Sample]) -> dict[str, dict[str, int]]:
    """``{split: {class: n}}`` for reports and the start-of-run summary."""
    out: dict[str, dict[str, int]] = {}
    for split in SPLITS:
        c = Counter(s.label for s in samples if s.split == split)
        if c:
            out[split] = dict(sorted(c.items()))
    return out
