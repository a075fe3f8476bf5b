"""Deterministic, stratified, seeded train/val/test split, written once as ``split.csv``.

A split given by the data (pre-split folders or a ``split`` column) is obeyed exactly. With a
``group`` column every group lands whole in one split (and in one fold of
:func:`stratified_folds`), so one part photographed twice cannot be in train and in test.
"""

from __future__ import annotations

import csv
import io
import math
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
    if any(s.group is not None for s in samples):
        return _grouped_split(samples, val_fraction, test_fraction, seed)
    by_class: dict[str, list[Sample]] = defaultdict(list)
    for s in sorted(samples, key=lambda s: (s.label, str(s.path))):
        by_class[s.label].append(s)
    rng = np.random.default_rng(seed)
    for label, items in by_class.items():
        order = rng.permutation(len(items))
        _, n_val, n_test = _split_sizes(len(items), val_fraction, test_fraction)
        for rank, idx in enumerate(order):
            items[idx].split = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
    return samples


def _split_sizes(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int, int]:
    """``(train, val, test)`` images of a class of ``n``: at least one in each split from 3 up."""
    n_test = int(round(n * test_fraction))
    n_val = int(round(n * val_fraction))
    if n >= 3:
        n_test = max(n_test, 1 if test_fraction > 0 else 0)
        n_val = max(n_val, 1 if val_fraction > 0 else 0)
    return n - n_val - n_test, n_val, n_test


def _units(samples: list[Sample]) -> list[list[Sample]]:
    """The samples that must stay together: one list per group, one list of one per sample
    without a group; in a fixed order (by group name, then path), whatever the input order."""
    by_key: dict[str, list[Sample]] = defaultdict(list)
    for s in sorted(samples, key=lambda s: (s.label, str(s.path))):
        by_key[f"g:{s.group}" if s.group is not None else f"p:{s.path}"].append(s)
    return [by_key[k] for k in sorted(by_key)]


def assign_units(units: list[list[Sample]], targets: dict[str, list[float]], seed: int) -> list[int]:
    """Put each unit (a group) whole into one of several bins, stratified by label.

    The units are shuffled with ``seed``, then placed largest first; each goes to the bin
    where it brings the counts closest to the targets (per label, the change of
    ``|have - wanted|`` relative to ``wanted``, less 1 where the label has no image there yet),
    ties to the bin least filled so far. With units of one image this hits the targets
    exactly; with groups, as closely as whole groups allow, and a class with a group for every
    bin reaches every bin (a group of 2 goes to a split that wants 1 rather than leave it empty).

    Args:
        units: Lists of samples that must share a bin.
        targets: ``{label: [images wanted in bin 0, bin 1, ...]}``.
        seed: Seed of the shuffle.

    Returns:
        The bin of each unit, in order.
    """
    n_bins = len(next(iter(targets.values())))
    have = {c: [0] * n_bins for c in targets}
    total = [0] * n_bins
    shuffled = np.random.default_rng(seed).permutation(len(units)).tolist()
    bins = [0] * len(units)
    for i in sorted(shuffled, key=lambda i: -len(units[i])):  # stable: shuffled within a size
        counts = Counter(s.label for s in units[i])

        def cost(b: int) -> tuple[float, float, int, int]:
            if any(targets[c][b] <= 0 for c in counts):
                return (math.inf, math.inf, total[b], b)
            # closer to the targets, and a bonus for a class's first images in a bin that wants some
            closer = sum((abs(have[c][b] + k - targets[c][b]) - abs(have[c][b] - targets[c][b])) / targets[c][b]
                         - (have[c][b] == 0) for c, k in counts.items())
            filled = sum(k * have[c][b] / targets[c][b] for c, k in counts.items())
            return (round(closer, 9), round(filled, 9), total[b], b)

        bins[i] = min(range(n_bins), key=cost)
        for c, k in counts.items():
            have[c][bins[i]] += k
        total[bins[i]] += len(units[i])
    return bins


def _grouped_split(samples: list[Sample], val_fraction: float, test_fraction: float, seed: int) -> list[Sample]:
    """:func:`stratified_split` with groups: whole groups to train, val or test."""
    counts = Counter(s.label for s in samples)
    targets = {c: [float(x) for x in _split_sizes(n, val_fraction, test_fraction)] for c, n in counts.items()}
    units = _units(samples)
    for unit, b in zip(units, assign_units(units, targets, seed)):
        for s in unit:
            s.split = ("train", "val", "test")[b]
    return samples


def stratified_folds(samples: list[Sample], k: int, seed: int = 0) -> list[int]:
    """The fold (``0..k-1``) of each sample for k-fold cross-validation.

    Stratified by label (each fold holds about ``1/k`` of every class) and group-aware (a
    group sits in one fold); seeded and independent of the input order.

    Args:
        samples: The data set (any ``split`` is ignored).
        k: Folds, at least 2.
        seed: Seed of the assignment.

    Returns:
        One fold index per sample, in order.
    """
    counts = Counter(s.label for s in samples)
    targets = {c: [n / k] * k for c, n in counts.items()}
    units = _units(samples)
    fold_of = {id(s): b for unit, b in zip(units, assign_units(units, targets, seed)) for s in unit}
    return [fold_of[id(s)] for s in samples]


def check_split(samples: list[Sample], every_class: bool = True) -> None:
    """Every class must have training images (unless not ``every_class``: an anomaly detector
    trains on one class); a split must not be missing a class entirely."""
    classes = sorted({s.label for s in samples})
    train_counts = Counter(s.label for s in samples if s.split == "train")
    empty = [c for c in classes if train_counts[c] == 0]
    if empty and (every_class or len(empty) == len(classes)):
        raise DataError(
            f"class(es) {', '.join(empty)} have no training images; every class needs some in train"
        )
    unknown = sorted({str(s.split) for s in samples if s.split not in SPLITS})
    if unknown:
        raise DataError(f"unknown split value(s) {', '.join(unknown)}; allowed: {', '.join(SPLITS)}")


def write_split_csv(samples: list[Sample], path: str | Path) -> Path:
    """Write ``path,label,split`` (+ ``group`` when given, + metadata columns) so every number
    can be reproduced."""
    meta_cols = sorted({k for s in samples for k in s.meta})
    grouped = any(s.group is not None for s in samples)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["path", "label", "split", *(["group"] if grouped else []), *meta_cols])
    for s in samples:
        # Absolute paths: the CSV lives in the run folder, which is not where the data is.
        w.writerow([str(Path(s.path).resolve()), s.label, s.split, *([s.group or ""] if grouped else []),
                    *(s.meta.get(k, "") for k in meta_cols)])
    return atomic_write_text(path, buf.getvalue())


def counts_table(samples: list[Sample]) -> dict[str, dict[str, int]]:
    """``{split: {class: n}}`` for reports and the start-of-run summary."""
    out: dict[str, dict[str, int]] = {}
    for split in SPLITS:
        c = Counter(s.label for s in samples if s.split == split)
        if c:
            out[split] = dict(sorted(c.items()))
    return out
