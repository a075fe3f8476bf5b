"""``inspectnet doctor``: what is wrong with a data set, before any training time is spent on it.

:func:`diagnose` reads every file once (:mod:`.scan`), keeping a few numbers per file and
never the pixels, runs the checks on those numbers and returns a :class:`Report` with the
findings ranked by harm. :func:`cheap_checks` is the part that needs no decoding, for
``train`` to print first. Where each check lives:

- :mod:`.files`: unreadable or corrupt files, lying extensions, tiny and blank images,
  files training does not read;
- :mod:`.duplicates`: byte-identical files and near-duplicates (pHash, :mod:`.hashing`,
  confirmed on thumbnails);
- :mod:`.labels`: class sizes, imbalance, a split that misses a class, conflicting labels;
- :mod:`.leakage`: the same image in two splits (:func:`check_leakage`);
- :mod:`.groups`: a ``group`` column's group in two splits, file names that suggest groups;
- :mod:`.report`: the :class:`Report`, its ranking, and the table, JSON and CSV renderings;
- :mod:`.diagnosis`: the order the checks run in;
- :mod:`.training`: :func:`check_for_training`, the checks that stop ``train`` (label
  conflicts, leakage, classes too small for the splits) or drop rows (duplicate rows).
"""

from __future__ import annotations

from .diagnosis import cheap_checks, diagnose
from .duplicates import (
    NEAR_PIXEL_TOL,
    Fingerprints,
    band_count,
    exact_groups,
    group_kinds,
    near_duplicates,
    near_pairs,
)
from .files import (
    CONSTANT_STD,
    MIN_SIDE,
    extension_mismatch,
    header_problems,
    ignored_files,
)
from .hashing import HASH_SIDE, hamming, phash
from .labels import (
    IMBALANCE_WARN,
    MIN_CLASS_IMAGES,
    class_counts,
    classes_missing_from_splits,
    has_conflicting_labels,
    label_problems,
    small_classes,
)
from .groups import GROUP_SHARE_WARN, groups_across_splits, name_group_hint, name_groups, name_stem
from .leakage import check_leakage, content_hashes, spans_splits
from .listing import collect_samples
from .report import HARM_ORDER, Report, doctor_tables, verdict_line, write_fix_report
from .scan import STD_SIDE, THUMB_SIDE, FileInfo, inspect_file, scan_files, sniff
from .training import (
    check_for_training,
    drop_duplicate_rows,
    group_leakage_message,
    label_conflicts,
    too_small_for_the_splits,
)

__all__ = [
    "CONSTANT_STD",
    "GROUP_SHARE_WARN",
    "HARM_ORDER",
    "HASH_SIDE",
    "IMBALANCE_WARN",
    "MIN_CLASS_IMAGES",
    "MIN_SIDE",
    "NEAR_PIXEL_TOL",
    "STD_SIDE",
    "THUMB_SIDE",
    "FileInfo",
    "Fingerprints",
    "Report",
    "band_count",
    "cheap_checks",
    "check_for_training",
    "check_leakage",
    "class_counts",
    "classes_missing_from_splits",
    "collect_samples",
    "content_hashes",
    "diagnose",
    "doctor_tables",
    "drop_duplicate_rows",
    "exact_groups",
    "extension_mismatch",
    "group_kinds",
    "group_leakage_message",
    "groups_across_splits",
    "hamming",
    "has_conflicting_labels",
    "header_problems",
    "ignored_files",
    "inspect_file",
    "label_conflicts",
    "label_problems",
    "near_duplicates",
    "name_group_hint",
    "name_groups",
    "name_stem",
    "near_pairs",
    "phash",
    "scan_files",
    "small_classes",
    "sniff",
    "spans_splits",
    "too_small_for_the_splits",
    "verdict_line",
    "write_fix_report",
]
