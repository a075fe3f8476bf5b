"""The doctor's two entry points: the full diagnosis, and the cheap checks ``train`` runs first."""

from __future__ import annotations

import time
from pathlib import Path

from ...errors import DataError
from ..sources import Sample
from .duplicates import (
    NEAR_PIXEL_TOL,
    Fingerprints,
    band_count,
    exact_duplicate_rows,
    exact_groups,
    near_duplicate_rows,
    near_duplicates,
)
from .files import (
    constant_images,
    header_problems,
    ignored_files,
    mismatched_extensions,
    mode_counts,
    size_summary,
    small_images,
    unreadable_files,
)
from .groups import groups_across_splits, name_group_hint, name_groups, name_stem
from .labels import class_counts, imbalance_ratio, label_problems, split_class_counts
from .listing import collect_samples, rel_path
from .report import Report, rank_problems, verdict_line
from .scan import scan_files


def diagnose(data: str | Path, near_threshold: int = 4, progress: bool = True,
             workers: int | None = None, near_pixel_tol: int = NEAR_PIXEL_TOL) -> Report:
    """Inspect a data set (folder of class folders, pre-split folder, or CSV manifest).

    Args:
        data: The data set, as ``inspectnet train`` takes it.
        near_threshold: Hamming distance (of 64 pHash bits) up to which two images are
            near-duplicate candidates. Measured (bench/doctor_speed.py): copies resized 1.5x
            and re-saved as JPEG q88 land within 4 bits 95% of the time and within 6 bits
            always; the search is exact for whatever threshold is given (see
            :func:`~.duplicates.near_pairs`), only slower as it grows.
        progress: Show a progress bar.
        near_pixel_tol: A pHash match is confirmed only when the 16x16 grey thumbnails differ
            by at most this much (0..255) at every pixel; 255 turns the check off.
        workers: Threads (default: 2x the cores, at most 8; decoding releases the GIL).

    Returns:
        A :class:`~.report.Report`; ``report.problems`` is empty when nothing is wrong.

    Raises:
        DataError: the data cannot even be listed (missing path, broken CSV, empty class folder).
    """
    if near_threshold < 0 or near_threshold > 32:
        raise DataError(f"near-threshold {near_threshold} is out of range; "
                        "allowed: 0..32 bits of 64")
    t0 = time.perf_counter()
    root, samples = collect_samples(data)
    infos = scan_files(samples, workers=workers, progress=progress)
    classes = class_counts(samples)
    ratio = imbalance_ratio(classes)
    rep = Report(root=str(root), n_files=len(samples),
                 n_readable=sum(fi.error is None for fi in infos), classes=classes,
                 splits=split_class_counts(samples),
                 imbalance_ratio=round(ratio, 3) if ratio is not None else None,
                 sizes=size_summary(infos), modes=mode_counts(infos),
                 near_threshold=near_threshold, hash_bands=band_count(near_threshold))
    rep.unreadable = unreadable_files(infos, samples, root)
    rep.extension_mismatch = mismatched_extensions(infos, samples, root)
    # Only a folder can hold files that training skips; a manifest names what it uses.
    folder = root if Path(data).is_dir() else Path("/nonexistent")
    rep.ignored_files = ignored_files(folder, samples)
    rep.small_images = small_images(infos, samples, root)
    rep.constant_images = constant_images(infos, samples, root)
    groups = exact_groups([fi.content if fi.error is None else None for fi in infos])
    rep.exact_duplicates = exact_duplicate_rows(groups, samples, root)
    fingerprints = Fingerprints.of(infos)
    del infos  # from here on only hashes and thumbnails (265 bytes a file)
    pairs = near_duplicates(fingerprints, near_threshold, near_pixel_tol, groups)
    rep.near_duplicates = near_duplicate_rows(pairs, samples, root)
    _groups(rep, samples, root)
    rep.problems = rank_problems(rep, any(s.split is not None for s in samples))
    rep.verdict = verdict_line(rep)
    rep.seconds = round(time.perf_counter() - t0, 3)
    return rep


def _groups(rep: Report, samples: list[Sample], root: Path) -> None:
    """A group column's groups that straddle splits; or file names that suggest groups."""
    rep.group_leakage = [{"group": g, "splits": sp} for g, sp in groups_across_splits(samples)]
    rep.name_group_hint = name_group_hint(samples)
    if rep.name_group_hint:
        rep.name_groups = [{"stem": next(filter(None, (name_stem(s.path) for s in g))),
                            "files": [rel_path(s.path, root) for s in g]} for g in name_groups(samples)]


def cheap_checks(samples: list[Sample]) -> list[str]:
    """Problems found without decoding a single image (file sizes and 32 header bytes only).

    For ``train`` to print before the decode: single or tiny classes, imbalance, a split that
    misses a class, empty files, text saved as an image, extensions that lie about the content,
    file names that suggest groups of photos of one part when no ``group`` column is given.

    Args:
        samples: The data set.

    Returns:
        One sentence per problem, label problems first; empty when none.
    """
    hint = name_group_hint(samples)
    return label_problems(samples) + header_problems(samples) + ([hint] if hint else [])
