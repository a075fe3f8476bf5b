"""Label checks: how many images each class has, overall and per split, and label conflicts.

These need only the samples (no file is read), so ``train`` can run them before it spends
any time decoding.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

from ..sources import SPLITS, Sample
from ..split import counts_table

IMBALANCE_WARN = 3.0  # majority/minority ratio from which accuracy stops meaning much
MIN_CLASS_IMAGES = 10  # with fewer images than this in a class its metrics are noise


def class_counts(samples: Sequence[Sample]) -> dict[str, int]:
    """Images per class, classes sorted by name."""
    return dict(sorted(Counter(s.label for s in samples).items()))


def split_class_counts(samples: Sequence[Sample]) -> dict[str, dict[str, int]]:
    """Images per class in each split that has any, splits in train/val/test order.

    Args:
        samples: The data set; samples without a split are not counted.

    Returns:
        ``{split: {class: count}}``, classes sorted by name; ``{}`` for unsplit data.
    """
    return counts_table(list(samples))  # the split module's table, the one training prints


def imbalance_ratio(classes: Mapping[str, int]) -> float | None:
    """Largest over smallest class size, or ``None`` with fewer than two classes."""
    return max(classes.values()) / min(classes.values()) if len(classes) > 1 else None


def has_conflicting_labels(members: Sequence[Sample]) -> bool:
    """Whether a group of copies of one image carries more than one label."""
    return len({m.label for m in members}) > 1


def small_classes(samples: Sequence[Sample], minimum: int = MIN_CLASS_IMAGES) -> list[str]:
    """Classes with fewer than ``minimum`` images, sorted by name."""
    return sorted(c for c, k in Counter(s.label for s in samples).items() if k < minimum)


def classes_missing_from_splits(samples: Sequence[Sample]) -> dict[str, list[str]]:
    """For each split present, the classes of the data set it has no image of.

    A class too small to reach every split shows up here: its metrics on that split are
    undefined, and a model selected on that split never saw it judged.

    Args:
        samples: The data set; unsplit data gives ``{}``.

    Returns:
        ``{split: [class, ...]}`` for the splits that miss a class, in train/val/test order.
    """
    labels = {s.label for s in samples}
    present = {s.split for s in samples if s.split is not None}
    out: dict[str, list[str]] = {}
    for sp in [x for x in SPLITS if x in present]:
        missing = sorted(labels - {s.label for s in samples if s.split == sp})
        if missing:
            out[sp] = missing
    return out


def label_problems(samples: Sequence[Sample]) -> list[str]:
    """Single class, imbalance, tiny classes, a split that misses a class: one sentence each.

    Args:
        samples: The data set.

    Returns:
        The sentences, worst first; empty when the labels look sound.
    """
    problems: list[str] = []
    counts = Counter(s.label for s in samples)
    if len(counts) < 2:
        problems.append(f"only one class ({', '.join(counts)}); a classifier needs at least two")
    elif max(counts.values()) / max(min(counts.values()), 1) >= IMBALANCE_WARN:
        problems.append(f"class imbalance {max(counts.values()) / min(counts.values()):.1f}:1 "
                        f"({dict(counts)}); read balanced accuracy and recall, not accuracy")
    tiny = small_classes(samples)
    if tiny:
        problems.append(f"class(es) {', '.join(tiny)} have fewer than {MIN_CLASS_IMAGES} images; "
                        "the metrics will be noise")
    for sp, missing in classes_missing_from_splits(samples).items():
        problems.append(f"split {sp} has no images of class(es) {', '.join(missing)}")
    return problems
