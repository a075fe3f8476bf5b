"""The doctor's checks that can ruin a model, run by ``train`` before any decoding.

``inspectnet doctor`` reports these as findings; :func:`check_for_training` runs the same
functions (:func:`~.duplicates.exact_groups`, :func:`~.duplicates.group_kinds`,
:func:`~.leakage.content_hashes`, :func:`~.leakage.check_leakage`,
:func:`~.labels.classes_missing_from_splits`) and refuses what would make the model or its
numbers wrong:

- a row that repeats a file already listed with the same label is dropped, with a warning
  (in a pre-split set a repeat in another split would be leakage; dropping the repeat keeps
  the first listing, and for an unsplit set it does not matter which split the copy drew);
- one image under two labels (the same path, or byte-identical content) stops the run,
  unless ``allow_label_conflicts``;
- the same image in two splits stops the run, unless ``allow_leakage``; so does a group of the
  ``group`` column (:func:`~.groups.groups_across_splits`) whose images sit in two splits;
- a class too small to reach every split (after the split) stops the run with its counts.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ...errors import DataError
from ..sources import SPLITS, Sample
from .duplicates import exact_groups, group_kinds
from .groups import groups_across_splits
from .labels import classes_missing_from_splits
from .leakage import check_leakage, content_hashes

if TYPE_CHECKING:
    from ...config import TrainConfig

_LISTED = 20  # paths named in one message at most


def _where(path: Path) -> str:
    try:
        return str(path.resolve())
    except OSError:
        return str(path.absolute())


def drop_duplicate_rows(samples: list[Sample]) -> tuple[list[Sample], list[tuple[Sample, Sample]]]:
    """Rows that repeat a file already listed with the same label, removed.

    Returns:
        The samples to keep (in order) and ``(kept, dropped)`` per removed repeat.
    """
    drop: dict[int, Sample] = {}
    for group in exact_groups([_where(s.path) for s in samples]):
        first: dict[str, Sample] = {}
        for i in group:
            if samples[i].label in first:
                drop[i] = first[samples[i].label]
            else:
                first[samples[i].label] = samples[i]
    kept = [s for i, s in enumerate(samples) if i not in drop]
    return kept, [(drop[i], samples[i]) for i in sorted(drop)]


def label_conflicts(samples: Sequence[Sample], hashes: Sequence[str | None]) -> list[list[Sample]]:
    """Groups of rows that show one image (the same path, or identical bytes) under two labels."""
    keys = [h if h is not None else f"path:{_where(s.path)}" for s, h in zip(samples, hashes)]
    groups = [[samples[i] for i in g] for g in exact_groups(keys)]
    return [g for g in groups if "conflicting_labels" in group_kinds(g)]


def _conflict_lines(groups: list[list[Sample]]) -> list[str]:
    lines = []
    for g in groups[:_LISTED]:
        if len({_where(s.path) for s in g}) == 1:
            lines.append(f"{g[0].path} is listed under labels {', '.join(sorted({s.label for s in g}))}")
        else:
            lines.append("identical content: " + " = ".join(f"{s.path} ({s.label})" for s in g))
    if len(groups) > _LISTED:
        lines.append(f"... and {len(groups) - _LISTED} more")
    return lines


def too_small_for_the_splits(samples: Sequence[Sample]) -> str | None:
    """The sentence for classes that miss a split, with their counts; None when every class
    has images in every split the data set has."""
    missing = classes_missing_from_splits(samples)
    if not missing:
        return None
    present = [sp for sp in SPLITS if any(s.split == sp for s in samples)]
    counts = Counter((s.label, s.split) for s in samples)
    parts = []
    for c in sorted({c for cs in missing.values() for c in cs}):
        total = sum(counts[(c, sp)] for sp in present)
        per = ", ".join(f"{sp} {counts[(c, sp)]}" for sp in present)
        parts.append(f"{c!r} has {total} image(s) ({per})")
    return (f"class(es) too small to reach every split: {'; '.join(parts)}. Every class needs images in "
            f"{', '.join(present)} (at least {len(present)} when inspectnet makes the split), or its "
            "metrics and threshold are undefined; add images of it, move some into the empty split, "
            "or leave the class out")


def group_leakage_message(samples: Sequence[Sample]) -> str | None:
    """The sentence for groups (``group`` column) that sit in more than one split, naming them
    and their splits; None when every group is in one split."""
    found = groups_across_splits(samples)
    if not found:
        return None
    named = "; ".join(f"group {g!r} in {' and '.join(sp)}" for g, sp in found[:_LISTED])
    more = f"; ... and {len(found) - _LISTED} more" if len(found) > _LISTED else ""
    return (f"{len(found)} group(s) of the group column sit in more than one split: {named}{more}. Photos "
            "of one part in train and test inflate the test score; move each group into one split, "
            "or drop the split column and let inspectnet split (it keeps groups whole)")


def check_for_training(samples: list[Sample], cfg: TrainConfig,
                       every_class: bool = True) -> tuple[list[Sample], list[str]]:
    """Run the checks above on a split data set, in that order.

    Args:
        samples: The data set after the split.
        cfg: Reads ``allow_label_conflicts`` and ``allow_leakage``.
        every_class: Refuse classes that miss a split (False: the approach trains on one
            class and checks its own needs, see ``Approach.needs_all_classes``).

    Returns:
        The samples to train on (duplicate rows dropped) and warnings to print.

    Raises:
        DataError: naming the paths (label conflicts, leakage) or the class and its counts.
    """
    warnings: list[str] = []
    samples, dropped = drop_duplicate_rows(samples)
    if dropped:
        names = ", ".join(f"{d.path} ({k.split or '-'}, {d.split or '-'})" if k.split != d.split else str(d.path)
                          for k, d in dropped[:_LISTED]) + (" ..." if len(dropped) > _LISTED else "")
        warnings.append(f"dropped {len(dropped)} duplicate row(s), files listed again with the same label "
                        f"(the first listing is kept): {names}")
    hashes = content_hashes([s.path for s in samples])
    conflicts = label_conflicts(samples, hashes)
    if conflicts and not getattr(cfg, "allow_label_conflicts", False):
        raise DataError(f"{len(conflicts)} image(s) carry more than one label; the model would learn "
                        "both answers for one picture. Fix the labels, or train anyway knowingly "
                        "(--allow-label-conflicts):\n  " + "\n  ".join(_conflict_lines(conflicts)))
    if conflicts:
        warnings.append(f"{len(conflicts)} image(s) carry more than one label (--allow-label-conflicts): "
                        + "; ".join(_conflict_lines(conflicts)[:3]))
    # Leakage makes every later number dishonest (the same hashes: each file is read once).
    check_leakage(samples, allow=cfg.allow_leakage, hashes=hashes)
    straddling = group_leakage_message(samples)
    if straddling and not cfg.allow_leakage:
        raise DataError(straddling)
    if straddling:
        warnings.append(straddling + " (--allow-leakage)")
    small = too_small_for_the_splits(samples) if every_class else None
    if small:
        raise DataError(small)
    return samples, warnings
