"""Duplicates: byte-identical files, and near-duplicates confirmed on thumbnails.

Near-duplicates are found in two steps: a 64-bit DCT perceptual hash (pHash) finds all
pairs within ``near_threshold`` bits without comparing all pairs (:func:`near_pairs`), and
a 16x16 grey thumbnail confirms each one. The confirmation matters for this domain: two
photos of the same fixture that differ only by a chip have nearly the same pHash (it sees
low frequencies only) but differ strongly in one thumbnail cell. A chip smaller than about
a third of a 1/16-image cell can still pass as a near-duplicate: the report says
"review", not "delete".

A group of copies is then judged by :func:`group_kinds`: in two splits (leakage), under
two labels (conflicting labels), or merely redundant (within class).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..sources import Sample
from .files import CONSTANT_STD
from .labels import has_conflicting_labels
from .leakage import spans_splits
from .listing import sample_entry
from .scan import THUMB_SIDE, FileInfo

# Max grey difference (0..255) at any pixel of the 16x16 thumbnails for a confirmed near-duplicate.
NEAR_PIXEL_TOL = 24


def group_kinds(members: Sequence[Sample]) -> list[str]:
    """How a group of identical (or near-identical) images hurts: leakage, conflict, or redundancy.

    Args:
        members: The samples that show the same image.

    Returns:
        ``["leakage"]``, ``["conflicting_labels"]``, both in that order, or
        ``["within_class"]`` when the copies are merely redundant.
    """
    kinds = []
    if spans_splits(members):
        kinds.append("leakage")
    if has_conflicting_labels(members):
        kinds.append("conflicting_labels")
    if not kinds:
        kinds.append("within_class")
    return kinds


def exact_groups(contents: Sequence[str | None]) -> list[list[int]]:
    """Indices of files with identical content, one list per group of two or more.

    Args:
        contents: A content hash per file (e.g. ``FileInfo.content`` or
            :func:`~.leakage.content_hashes`); ``None`` leaves a file out.

    Returns:
        The groups, each in index order, in order of their first member.
    """
    by_content: dict[str, list[int]] = defaultdict(list)
    for i, c in enumerate(contents):
        if c is not None:
            by_content[c].append(i)
    return [g for g in by_content.values() if len(g) > 1]


def exact_duplicate_rows(groups: list[list[int]], samples: list[Sample],
                         root: Path) -> list[dict[str, Any]]:
    """The report's rows for :func:`exact_groups`: ``{"kinds", "files"}`` per group."""
    rows = []
    for idx in groups:
        members = [samples[i] for i in idx]
        rows.append({"kinds": group_kinds(members),
                     "files": [sample_entry(m, root) for m in members]})
    return rows


def band_count(threshold: int) -> int:
    """Bands needed so that every pair within ``threshold`` bits shares one band exactly."""
    return max(4, threshold + 1)


def near_pairs(hashes: np.ndarray, threshold: int,
               skip: np.ndarray | None = None) -> list[tuple[int, int, int]]:
    """All pairs ``(i, j, distance)`` with ``i < j`` and Hamming distance ``<= threshold``.

    Banding instead of all-pairs: the 64 bits are cut into ``B = max(4, threshold + 1)``
    contiguous bands (16 bits each for B=4; 13/13/13/13/12 for B=5, the default
    threshold 4). If two hashes differ in at most ``B - 1`` bits, pigeonhole says at least
    one band holds none of the differences, so the pair lands in the same bucket of that
    band. With ``B = threshold + 1`` the search is therefore **exact** for the threshold
    asked: no pair within it is missed, and every candidate is checked by its true
    distance, so none beyond it is reported. The cost is the bucket sizes: random 13-bit
    bands collide for about n^2 / 2^14 pairs per band (600k at n = 100k), but photos of
    similar parts on the same tray cluster, and a large threshold (narrow bands) makes
    buckets grow fast; buckets are compared with vectorised XOR + popcount in chunks.

    Args:
        hashes: ``(n,)`` uint64 pHashes.
        threshold: maximum Hamming distance to report.
        skip: optional boolean mask of entries to leave out (unreadable, blank images).

    Returns:
        The pairs, sorted.
    """
    n = len(hashes)
    if n < 2:
        return []
    ids = np.arange(n) if skip is None else np.flatnonzero(~skip)
    h = hashes[ids].astype(np.uint64)
    bands = band_count(threshold)
    widths = [64 // bands + (1 if b < 64 % bands else 0) for b in range(bands)]
    found: dict[tuple[int, int], int] = {}
    shift = 0
    for w in widths:
        key = (h >> np.uint64(shift)) & np.uint64((1 << w) - 1)
        shift += w
        order = np.argsort(key, kind="stable")
        k_sorted = key[order]
        starts = np.flatnonzero(np.r_[True, k_sorted[1:] != k_sorted[:-1]])
        ends = np.r_[starts[1:], len(order)]
        for s, e in zip(starts, ends):
            if e - s < 2:
                continue
            _bucket_pairs(h, ids, order[s:e], threshold, found)
    return sorted((i, j, dist) for (i, j), dist in found.items())


def _bucket_pairs(h: np.ndarray, ids: np.ndarray, members: np.ndarray, threshold: int,
                  found: dict[tuple[int, int], int]) -> None:
    """Add to ``found`` the pairs of one band bucket within ``threshold`` bits."""
    hm = h[members]
    # Rows in chunks keep a huge bucket (thousands of look-alike tray shots) in bounded memory.
    for r0 in range(0, len(members) - 1, 512):
        rows = np.arange(r0, min(r0 + 512, len(members) - 1))
        d = np.bitwise_count(hm[rows, None] ^ hm[None, :])
        ri, cj = np.nonzero((d <= threshold) & (np.arange(len(members))[None, :] > rows[:, None]))
        for a, b in zip(ri, cj):
            i, j = int(ids[members[rows[a]]]), int(ids[members[b]])
            if i > j:
                i, j = j, i
            found[(i, j)] = int(d[a, b])


@dataclass
class Fingerprints:
    """All the near-duplicate search keeps of the files: pHash and thumbnail per sample."""

    hashes: np.ndarray  # (n,) uint64
    thumbs: np.ndarray  # (n, THUMB_SIDE**2) uint8
    skip: np.ndarray  # (n,) bool: unreadable or blank, left out of the search

    @classmethod
    def of(cls, infos: list[FileInfo]) -> Fingerprints:
        """The fingerprints of one :class:`~.scan.FileInfo` per sample, indexed like them.

        Blank frames all hash alike; they are skipped here (and reported as constant images)
        rather than reported as one big web of near-duplicates.
        """
        n = len(infos)
        hashes = np.zeros(n, dtype=np.uint64)
        thumbs = np.zeros((n, THUMB_SIDE * THUMB_SIDE), dtype=np.uint8)
        skip = np.ones(n, dtype=bool)
        for fi in infos:
            if fi.error is None:
                hashes[fi.index] = np.uint64(fi.phash)
                thumbs[fi.index] = np.frombuffer(fi.thumb, dtype=np.uint8)
                skip[fi.index] = fi.std < CONSTANT_STD
        return cls(hashes, thumbs, skip)


def near_duplicates(fp: Fingerprints, threshold: int, pixel_tol: int = NEAR_PIXEL_TOL,
                    groups: list[list[int]] | None = None) -> list[tuple[int, int, int, int]]:
    """Confirmed near-duplicate pairs: pHash within ``threshold``, thumbnails within ``pixel_tol``.

    pHash sees the low frequencies only: two photos of the same fixture that differ by a
    small chip hash alike. The 16x16 thumbnails confirm a match: the chip shows there as a
    large local difference, a resized or re-encoded copy does not.

    Args:
        fp: The files' fingerprints.
        threshold: Hamming distance (of 64 bits) up to which a pair is a candidate.
        pixel_tol: Largest thumbnail difference (0..255) at any pixel of a confirmed pair.
        groups: Exact-duplicate groups (:func:`exact_groups`): pairs within one group are
            byte-identical copies, already reported as such, and left out.

    Returns:
        ``(i, j, distance, pixel_diff)`` per confirmed pair, ``i < j``, sorted.
    """
    same_group = {i: gid for gid, idx in enumerate(groups or []) for i in idx}
    out = []
    for i, j, d in near_pairs(fp.hashes, threshold, fp.skip):
        if i in same_group and same_group.get(j) == same_group[i]:
            continue
        diff = int(np.abs(fp.thumbs[i].astype(np.int16) - fp.thumbs[j]).max())
        if diff > pixel_tol:
            continue
        out.append((i, j, d, diff))
    return out


def near_duplicate_rows(pairs: list[tuple[int, int, int, int]], samples: list[Sample],
                        root: Path) -> list[dict[str, Any]]:
    """The report's rows for :func:`near_duplicates`: kinds, distance, pixel_diff, a, b."""
    rows = []
    for i, j, d, diff in pairs:
        a, b = samples[i], samples[j]
        rows.append({"kinds": group_kinds([a, b]), "distance": d, "pixel_diff": diff,
                     "a": sample_entry(a, root), "b": sample_entry(b, root)})
    return rows
