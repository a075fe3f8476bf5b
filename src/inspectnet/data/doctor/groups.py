"""Groups: several photos of one part, which must not be split between train and test.

A manifest's ``group`` column names them (:class:`~inspectnet.data.sources.Sample.group`);
the automatic split keeps each group whole. Two checks here:

- :func:`groups_across_splits`: a pre-split data set whose group sits in two splits (the
  test score would then partly measure memory of the part); ``train`` refuses it;
- :func:`name_groups` / :func:`name_group_hint`: without a ``group`` column, file names that
  differ only by a trailing counter or view (``part017_a.png``, ``part017_b.png``,
  ``insert_12-3.jpg``, ``IMG_0001 (2).jpg``) suggest groups the split cannot see.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from ..sources import SPLITS, Sample

GROUP_SHARE_WARN = 0.2  # share of images in name groups from which the doctor warns
MAX_NAME_GROUP = 16  # a larger "group" is a numbering scheme (batch3_1 .. batch3_80), not one part
_VIEWS = "top|bottom|side|front|back|left|right|copy|(?:view|cam|angle|v)\\d{0,2}"
# A trailing separator and a short token: a counter of 1-2 digits, one letter, a view word;
# or " (2)", as file managers name a second copy.
_SUFFIX = re.compile(rf"^(?P<stem>.+?)(?:[\s_.\-]+(?:\d{{1,2}}|[a-z]|{_VIEWS})|\s*\(\d{{1,3}}\))$", re.IGNORECASE)


def groups_across_splits(samples: Sequence[Sample]) -> list[tuple[str, list[str]]]:
    """Groups (``group`` column) whose images sit in more than one split.

    Args:
        samples: The data set; samples without a group or a split are not counted.

    Returns:
        ``(group, [split, ...])`` per straddling group, sorted by group; splits in
        train/val/test order. Empty when every group is in one split.
    """
    splits: dict[str, set[str]] = defaultdict(set)
    for s in samples:
        if s.group is not None and s.split is not None:
            splits[s.group].add(s.split)
    return [(g, [sp for sp in SPLITS if sp in found]) for g, found in sorted(splits.items()) if len(found) > 1]


def name_stem(path: Path) -> str | None:
    """The part a file name names, its trailing counter or view stripped: ``part017`` for
    ``part017_b.png``; ``None`` when the name has no such suffix or what is left carries no
    digit (``damaged_1.png`` is the first damaged image, not a view of part ``damaged``)."""
    m = _SUFFIX.match(path.stem)
    if m is None or not any(ch.isdigit() for ch in m["stem"]):
        return None
    return m["stem"].lower()


def name_groups(samples: Sequence[Sample]) -> list[list[Sample]]:
    """Images whose file names differ only by a trailing counter or view, grouped.

    A group has at least two distinct file names (one of them may be the bare stem:
    ``part017.png`` with ``part017_b.png``) and at most :data:`MAX_NAME_GROUP` images.

    Returns:
        The groups, largest first (then by stem); each in path order.
    """
    by_stem: dict[str, list[Sample]] = defaultdict(list)
    stems = {name_stem(s.path) for s in samples} - {None}
    for s in samples:
        stem = name_stem(s.path)
        if stem is None and s.path.stem.lower() in stems:
            stem = s.path.stem.lower()
        if stem is not None:
            by_stem[stem].append(s)
    groups = [sorted(g, key=lambda s: str(s.path)) for _, g in sorted(by_stem.items())
              if 2 <= len(g) <= MAX_NAME_GROUP and len({s.path.name.lower() for s in g}) > 1]
    return sorted(groups, key=len, reverse=True)


def name_group_hint(samples: Sequence[Sample], share: float = GROUP_SHARE_WARN) -> str | None:
    """The doctor's warning when names suggest groups and no ``group`` column gives them.

    Args:
        samples: The data set.
        share: Warn when at least this share of the images sits in :func:`name_groups`.

    Returns:
        One sentence with a few example groups and how to add the column; ``None`` when the
        data gives groups, or too few names look grouped.
    """
    if not samples or any(s.group is not None for s in samples):
        return None
    groups = name_groups(samples)
    n = sum(len(g) for g in groups)
    if n < share * len(samples):
        return None
    examples = "; ".join(" + ".join(s.path.name for s in g[:3]) + (" ..." if len(g) > 3 else "")
                         for g in groups[:3])
    return (f"{n} of {len(samples)} images ({n / len(samples):.0%}) have names that suggest several photos "
            f"of one part ({len(groups)} groups, e.g. {examples}); a random split may put one part in "
            "train and test. If they are, list the images in a CSV manifest with a group column "
            "(path,label,group: one value per part) and the split keeps each group whole")
