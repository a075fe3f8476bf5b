"""``inspectnet doctor``: what is wrong with a data set, before any training time is spent on it.

One cheap pass over the files (a thread pool, a progress bar) keeps per file only a few
numbers: a content hash, a 64-bit perceptual hash, size, mode, grey std. No decoded image
is kept, so memory grows by ~200 bytes per file, not by the pixels. JPEGs are decoded
through Pillow's ``draft()`` (DCT scaling, up to 8x fewer pixels); everything else is
decoded once in full, which is also what proves the file is not truncated.

From those numbers come the findings, ranked by the harm they do to the numbers a user
will read: a copy of a test image in train (leakage) and the same picture under two
labels (conflicting labels) first, because they make every metric a lie; unreadable
files next, because training stops on them; then duplicates, imbalance, tiny and blank
images, and files whose extension does not match their content.

Near-duplicates are found in two steps: a 64-bit DCT perceptual hash (pHash) finds all
pairs within ``near_threshold`` bits without comparing all pairs (:func:`near_pairs`), and
a 16x16 grey thumbnail confirms each one. The confirmation matters for this domain: two
photos of the same fixture that differ only by a chip have nearly the same pHash (it sees
low frequencies only) but differ strongly in one thumbnail cell. A chip smaller than about
a third of a 1/16-image cell can still pass as a near-duplicate: the report says
"review", not "delete".
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import warnings
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import DataError
from ..progress import progress_iter
from .decode import MAX_PIXELS
from .sources import IMAGE_EXTENSIONS, SPLITS, Sample, discover

MIN_SIDE = 32  # below this a 3x3 conv stack has almost nothing to look at
CONSTANT_STD = 2.0  # grey-level std under this is a blank frame (lens cap, empty tray, all-white)
IMBALANCE_WARN = 3.0  # majority/minority ratio from which accuracy stops meaning much
HASH_SIDE = 32  # pHash: DCT of a 32x32 grey downscale, top-left 8x8 coefficients
STD_SIDE = 256  # std is measured on at most this side: blank frames stay blank, noise stays noise
THUMB_SIDE = 16  # 256 bytes per image kept to confirm pHash matches (25 MB at 100k images)
NEAR_PIXEL_TOL = 24  # max grey difference (0..255) on the 16x16 thumbnails for a confirmed near-duplicate

# Magic bytes -> format name; the extensions each format may honestly carry.
_MAGIC: list[tuple[bytes, int, str]] = [
    (b"\x89PNG\r\n\x1a\n", 0, "PNG"),
    (b"\xff\xd8\xff", 0, "JPEG"),
    (b"GIF87a", 0, "GIF"),
    (b"GIF89a", 0, "GIF"),
    (b"II*\x00", 0, "TIFF"),
    (b"MM\x00*", 0, "TIFF"),
    (b"II+\x00", 0, "TIFF"),  # BigTIFF
    (b"BM", 0, "BMP"),
    (b"WEBP", 8, "WEBP"),
]
_EXT_FORMAT = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF",
               ".webp": "WEBP", ".gif": "GIF"}


def sniff(head: bytes) -> str | None:
    """The image format that a file's first bytes announce, or ``None``.

    Returns ``"TEXT"`` for content that is plain text (a CSV or HTML error page saved as .png
    is a common way to end up with an 'image' that is not one).
    """
    for magic, offset, name in _MAGIC:
        if head[offset : offset + len(magic)] == magic:
            if name == "WEBP" and not head.startswith(b"RIFF"):
                continue
            return name
    if head:
        try:
            text = head.decode("utf-8")
        except UnicodeDecodeError:
            return None
        if all(c.isprintable() or c in "\r\n\t" for c in text):
            return "TEXT"
    return None


# --------------------------------------------------------------------------- perceptual hash

def _dct_matrix(n: int) -> np.ndarray:
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    m = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    m[0] /= np.sqrt(2.0)
    return m.astype(np.float64)


_DCT = _dct_matrix(HASH_SIDE)
_BIT_WEIGHTS = (np.uint64(1) << np.arange(64, dtype=np.uint64)).astype(np.uint64)


def phash(grey32: np.ndarray) -> int:
    """64-bit DCT perceptual hash of a 32x32 grey image (the classic pHash).

    Bit k is set where the k-th of the 8x8 lowest-frequency DCT coefficients exceeds their
    median: resizing, re-encoding, mild blur and brightness changes keep the hash within a
    few bits, while a different part or a different damage spot changes many.
    """
    # Rounded so that coefficients that are zero in exact arithmetic (flat or ramp-like
    # images) compare equal instead of by float noise, which would flip bits at random.
    low = np.round((_DCT @ grey32.astype(np.float64) @ _DCT.T)[:8, :8].ravel(), 3)
    bits = low > np.median(low)
    return int((bits.astype(np.uint64) * _BIT_WEIGHTS).sum())


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


# --------------------------------------------------------------------------- one file

@dataclass
class FileInfo:
    """What the doctor keeps of one file: numbers, never pixels."""

    index: int
    content: str = ""  # blake2b of the bytes (hex); "" when unreadable
    phash: int = 0
    width: int = 0
    height: int = 0
    mode: str = ""
    format: str = ""  # what the content is (sniffed), whatever the extension says
    std: float = 0.0
    thumb: bytes = b""  # 16x16 grey, uint8
    error: str | None = None


def _grey_array(img: Image.Image) -> np.ndarray:
    """Grey float32 array of any Pillow mode, scaled to 0..255 like ``decode_image`` does."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(img, dtype=np.float32)
        if img.mode == "F":
            lo, hi = float(a.min()), float(a.max())
            return (a - lo) / (hi - lo + 1e-12) * 255.0
        hi = float(a.max()) if a.size else 1.0
        return a * (255.0 / (65535.0 if hi > 255 else max(hi, 1.0)))
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", img.size, (0, 0, 0, 255)), img)
    return np.asarray(img.convert("L"), dtype=np.float32)


def inspect_file(path: Path, index: int = 0) -> FileInfo:
    """Read one file once: content hash, magic sniff, header, cheap decode, pHash, std.

    Never raises for a bad file: the reason goes into ``FileInfo.error``.
    """
    info = FileInfo(index)
    try:
        data = path.read_bytes()
    except OSError as e:
        info.error = f"cannot read file: {e.strerror or e}"
        return info
    if not data:
        info.error = "file is empty (0 bytes)"
        return info
    info.content = hashlib.blake2b(data, digest_size=16).hexdigest()
    sniffed = sniff(data[:32])
    info.format = sniffed or ""
    if sniffed == "TEXT":
        preview = data[:40].decode("utf-8", "replace").splitlines()[0] if data.strip() else ""
        info.error = f"not an image file: the content is text ({preview!r})"
        return info
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                info.width, info.height = img.size
                info.mode = img.mode
                info.format = img.format or info.format
                if info.width * info.height > MAX_PIXELS:
                    info.error = (f"image is {info.width}x{info.height} = {info.width * info.height / 1e6:.0f} MP, "
                                  f"over the {MAX_PIXELS / 1e6:.0f} MP limit")
                    return info
                if img.format == "JPEG":
                    # DCT-domain downscale: decodes every block (so truncation still shows) at 1/2..1/8 size.
                    img.draft(img.mode if img.mode in ("L", "RGB") else None, (STD_SIDE, STD_SIDE))
                if getattr(img, "n_frames", 1) > 1:
                    img.seek(0)
                img.load()
                if max(img.size) >= 2 * STD_SIDE and img.mode in ("L", "RGB", "RGBA", "LA", "I", "F"):
                    img = img.reduce(max(img.size) // STD_SIDE)  # box average: cheap, keeps blank blank
                grey = _grey_array(img)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        info.error = f"image too large (decompression-bomb limit): {e}"
        return info
    except Image.UnidentifiedImageError:
        what = f"{sniffed} signature but " if sniffed else ""
        info.error = f"not an image file ({what}no decoder recognises its content)"
        return info
    except (OSError, SyntaxError, ValueError) as e:
        info.error = f"corrupt or truncated image: {e}"
        return info
    info.std = float(grey.std())
    grey_img = Image.fromarray(np.ascontiguousarray(grey, dtype=np.float32))
    small = grey_img.resize((HASH_SIDE, HASH_SIDE), Image.Resampling.BOX)
    info.phash = phash(np.asarray(small))
    thumb = small.resize((THUMB_SIDE, THUMB_SIDE), Image.Resampling.BOX)
    info.thumb = np.clip(np.asarray(thumb) + 0.5, 0, 255).astype(np.uint8).tobytes()
    return info


def extension_mismatch(path: Path, fmt: str) -> str | None:
    """A sentence when the extension promises another format than the content is."""
    want = _EXT_FORMAT.get(path.suffix.lower())
    if not fmt or fmt == "TEXT" or want is None:
        return None
    if fmt == "MPO":  # multi-picture JPEG (phone cameras) is a JPEG
        fmt = "JPEG"
    if fmt != want:
        return f"extension {path.suffix} but the content is {fmt}"
    return None


# --------------------------------------------------------------------------- near duplicates

def band_count(threshold: int) -> int:
    """Bands needed so that every pair within ``threshold`` bits shares one band exactly."""
    return max(4, threshold + 1)


def near_pairs(hashes: np.ndarray, threshold: int, skip: np.ndarray | None = None) -> list[tuple[int, int, int]]:
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
            members = order[s:e]
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
    return sorted((i, j, dist) for (i, j), dist in found.items())


# --------------------------------------------------------------------------- report

def _rel(p: Path, root: Path) -> str:
    try:
        return str(p.relative_to(root))
    except ValueError:
        return str(p)


@dataclass
class Report:
    """The doctor's findings; ``to_dict()`` is the JSON written by ``--json``."""

    root: str
    n_files: int
    n_readable: int
    classes: dict[str, int]
    splits: dict[str, dict[str, int]]
    imbalance_ratio: float | None
    sizes: dict[str, Any]
    modes: dict[str, int]
    unreadable: list[dict[str, str]] = field(default_factory=list)
    extension_mismatch: list[dict[str, str]] = field(default_factory=list)
    ignored_files: list[str] = field(default_factory=list)
    exact_duplicates: list[dict[str, Any]] = field(default_factory=list)
    near_duplicates: list[dict[str, Any]] = field(default_factory=list)
    small_images: list[dict[str, Any]] = field(default_factory=list)
    constant_images: list[dict[str, Any]] = field(default_factory=list)
    problems: list[dict[str, Any]] = field(default_factory=list)  # ordered by harm, worst first
    verdict: str = "OK"
    near_threshold: int = 4
    hash_bands: int = 5
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ok"] = self.ok
        return d


def _entry(s: Sample, root: Path) -> dict[str, Any]:
    return {"path": _rel(s.path, root), "label": s.label, "split": s.split}


def _kinds(members: list[Sample]) -> list[str]:
    """How a group of identical (or near-identical) images hurts: leakage, conflict, or redundancy."""
    kinds = []
    splits = {m.split for m in members if m.split is not None}
    if len(splits) > 1:
        kinds.append("leakage")
    if len({m.label for m in members}) > 1:
        kinds.append("conflicting_labels")
    if not kinds:
        kinds.append("within_class")
    return kinds


def collect_samples(data: str | Path) -> tuple[Path, list[Sample]]:
    """Like :func:`~inspectnet.data.sources.discover` but tolerant of one class: the doctor reports it."""
    root = Path(data)
    samples = discover(root, min_classes=1)
    return (root.parent if root.is_file() else root), samples


def _ignored_files(root: Path, samples: list[Sample]) -> list[str]:
    """Files in a folder data set that training will silently not read (e.g. .gif, .heic)."""
    if not root.is_dir():
        return []
    used = {s.path.resolve() for s in samples}
    out = []
    for p in root.rglob("*"):
        if not p.is_file() or p.name.startswith(".") or p.suffix.lower() in (".csv", ".json", ".txt", ".md", ".yaml"):
            continue
        if any(part == "masks" or part.startswith(".") for part in p.relative_to(root).parts[:-1]):
            continue
        if p.suffix.lower() not in IMAGE_EXTENSIONS and p.resolve() not in used:
            out.append(_rel(p, root))
    return sorted(out)


def diagnose(data: str | Path, near_threshold: int = 4, progress: bool = True, workers: int | None = None,
             near_pixel_tol: int = NEAR_PIXEL_TOL) -> Report:
    """Inspect a data set (folder of class folders, pre-split folder, or CSV manifest).

    Args:
        data: The data set, as ``inspectnet train`` takes it.
        near_threshold: Hamming distance (of 64 pHash bits) up to which two images are
            near-duplicate candidates. Measured (bench/doctor_speed.py): copies resized 1.5x
            and re-saved as JPEG q88 land within 4 bits 95% of the time and within 6 bits
            always; the search is exact for whatever threshold is given (see
            :func:`near_pairs`), only slower as it grows.
        progress: Show a progress bar.
        near_pixel_tol: A pHash match is confirmed only when the 16x16 grey thumbnails differ
            by at most this much (0..255) at every pixel; 255 turns the check off.
        workers: Threads (default: 2x the cores, at most 8; decoding releases the GIL).

    Returns:
        A :class:`Report`; ``report.problems`` is empty when nothing is wrong.

    Raises:
        DataError: the data cannot even be listed (missing path, broken CSV, empty class folder).
    """
    import time

    if near_threshold < 0 or near_threshold > 32:
        raise DataError(f"near-threshold {near_threshold} is out of range; allowed: 0..32 bits of 64")
    t0 = time.perf_counter()
    root, samples = collect_samples(data)
    n = len(samples)
    workers = workers or min(8, 2 * (os.cpu_count() or 1))
    infos: list[FileInfo] = [FileInfo(i) for i in range(n)]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(lambda i: inspect_file(samples[i].path, i), range(n), chunksize=16)
        for fi in progress_iter(results, total=n, desc="doctor", enabled=progress):
            infos[fi.index] = fi

    ok = [fi for fi in infos if fi.error is None]
    classes = dict(sorted(Counter(s.label for s in samples).items()))
    splits: dict[str, dict[str, int]] = {}
    for sp in SPLITS:
        c = Counter(s.label for s in samples if s.split == sp)
        if c:
            splits[sp] = dict(sorted(c.items()))
    ratio = max(classes.values()) / min(classes.values()) if len(classes) > 1 else None

    widths = np.array([fi.width for fi in ok]) if ok else np.zeros(0)
    heights = np.array([fi.height for fi in ok]) if ok else np.zeros(0)
    size_counts = Counter(f"{fi.width}x{fi.height}" for fi in ok)
    sizes = {
        "distinct": len(size_counts),
        "most_common": dict(size_counts.most_common(5)),
        "width": _span(widths), "height": _span(heights),
    }
    modes = dict(Counter(fi.mode for fi in ok).most_common())

    rep = Report(root=str(root), n_files=n, n_readable=len(ok), classes=classes, splits=splits,
                 imbalance_ratio=round(ratio, 3) if ratio is not None else None, sizes=sizes, modes=modes,
                 near_threshold=near_threshold, hash_bands=band_count(near_threshold))
    rep.unreadable = [{"path": _rel(samples[fi.index].path, root), "reason": fi.error or ""}
                      for fi in infos if fi.error is not None]
    for fi in infos:
        msg = extension_mismatch(samples[fi.index].path, fi.format) if fi.error is None else None
        if msg:
            rep.extension_mismatch.append({"path": _rel(samples[fi.index].path, root), "reason": msg})
    rep.ignored_files = _ignored_files(root if Path(data).is_dir() else Path("/nonexistent"), samples)
    rep.small_images = [{**_entry(samples[fi.index], root), "size": f"{fi.width}x{fi.height}"}
                        for fi in ok if min(fi.width, fi.height) < MIN_SIDE]
    rep.constant_images = [{**_entry(samples[fi.index], root), "std": round(fi.std, 3)}
                           for fi in ok if fi.std < CONSTANT_STD]

    # Exact duplicates: same bytes.
    by_content: dict[str, list[int]] = defaultdict(list)
    for fi in ok:
        by_content[fi.content].append(fi.index)
    same_group = {}
    for gid, idx in enumerate(g for g in by_content.values() if len(g) > 1):
        members = [samples[i] for i in idx]
        rep.exact_duplicates.append({"kinds": _kinds(members), "files": [_entry(m, root) for m in members]})
        for i in idx:
            same_group[i] = gid

    # Near duplicates: pHash within the threshold, other than byte-identical copies. Blank
    # frames all hash alike; they are reported as constant images, not as a duplicate web.
    # pHash sees the low frequencies only: two photos of the same fixture that differ by a
    # small chip hash alike. The 16x16 thumbnails confirm a match: the chip shows there as a
    # large local difference, a resized or re-encoded copy does not.
    hashes = np.zeros(n, dtype=np.uint64)
    thumbs = np.zeros((n, THUMB_SIDE * THUMB_SIDE), dtype=np.uint8)
    skip = np.ones(n, dtype=bool)
    for fi in ok:
        hashes[fi.index] = np.uint64(fi.phash)
        thumbs[fi.index] = np.frombuffer(fi.thumb, dtype=np.uint8)
        skip[fi.index] = fi.std < CONSTANT_STD
    del infos, ok  # from here on only hashes and thumbnails
    for i, j, d in near_pairs(hashes, near_threshold, skip):
        if i in same_group and same_group.get(j) == same_group[i]:
            continue
        diff = int(np.abs(thumbs[i].astype(np.int16) - thumbs[j]).max())
        if diff > near_pixel_tol:
            continue
        a, b = samples[i], samples[j]
        rep.near_duplicates.append({"kinds": _kinds([a, b]), "distance": d, "pixel_diff": diff,
                                    "a": _entry(a, root), "b": _entry(b, root)})

    rep.problems = _rank_problems(rep, any(s.split is not None for s in samples))
    rep.verdict = verdict_line(rep)
    rep.seconds = round(time.perf_counter() - t0, 3)
    return rep


def _span(a: np.ndarray) -> dict[str, int]:
    if not len(a):
        return {}
    return {"min": int(a.min()), "median": int(np.median(a)), "max": int(a.max())}


# Order of harm: what makes the reported numbers false, then what stops training, then what
# wastes data or misleads the model.
HARM_ORDER = ("leakage", "conflicting_labels", "unreadable", "single_class", "duplicates", "near_duplicates",
              "imbalance", "constant_images", "small_images", "extension_mismatch", "ignored_files")


def _rank_problems(rep: Report, has_split: bool) -> list[dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}

    def add(kind: str, count: int, message: str) -> None:
        if count:
            found[kind] = {"kind": kind, "count": count, "message": message}

    leak_exact = sum("leakage" in g["kinds"] for g in rep.exact_duplicates)
    leak_near = sum("leakage" in p["kinds"] for p in rep.near_duplicates)
    add("leakage", leak_exact + leak_near,
        f"leakage: {leak_exact} identical and {leak_near} near-identical image group(s) sit in more than one split "
        "(test scores would be inflated)")
    conf_exact = sum("conflicting_labels" in g["kinds"] for g in rep.exact_duplicates)
    conf_near = sum("conflicting_labels" in p["kinds"] for p in rep.near_duplicates)
    add("conflicting_labels", conf_exact + conf_near,
        f"conflicting labels: {conf_exact} identical and {conf_near} near-identical image group(s) carry "
        "different labels")
    add("unreadable", len(rep.unreadable), f"{len(rep.unreadable)} unreadable file(s) (training stops on them)")
    if len(rep.classes) < 2:
        add("single_class", 1, f"only one class ({', '.join(rep.classes)}); a classifier needs at least two")
    within = [g for g in rep.exact_duplicates if g["kinds"] == ["within_class"]]
    extra = sum(len(g["files"]) - 1 for g in within)
    hint = "" if has_split else " (the random split may put copies in train and test)"
    add("duplicates", len(within), f"{len(within)} group(s) of identical files in the same class "
                                   f"({extra} redundant copies){hint}")
    near_within = sum(p["kinds"] == ["within_class"] for p in rep.near_duplicates)
    add("near_duplicates", near_within,
        f"{near_within} near-duplicate pair(s) in the same class{hint}")
    if rep.imbalance_ratio is not None and rep.imbalance_ratio >= IMBALANCE_WARN:
        add("imbalance", 1, f"class imbalance {rep.imbalance_ratio:.1f}:1 "
                            "(read balanced accuracy and recall, not accuracy)")
    add("constant_images", len(rep.constant_images),
        f"{len(rep.constant_images)} almost constant image(s) (grey std < {CONSTANT_STD:g})")
    add("small_images", len(rep.small_images), f"{len(rep.small_images)} image(s) smaller than {MIN_SIDE} px")
    add("extension_mismatch", len(rep.extension_mismatch),
        f"{len(rep.extension_mismatch)} file(s) whose extension does not match their content")
    add("ignored_files", len(rep.ignored_files),
        f"{len(rep.ignored_files)} file(s) with extensions training does not read "
        f"({', '.join(sorted({Path(p).suffix.lower() or '(none)' for p in rep.ignored_files}))})")
    return [found[k] for k in HARM_ORDER if k in found]


def verdict_line(rep: Report) -> str:
    if not rep.problems:
        return f"OK: {rep.n_files} images, {len(rep.classes)} classes, no problems found"
    return "PROBLEMS: " + "; ".join(p["message"] for p in rep.problems)


def _examples(rep: Report, kind: str, limit: int = 3) -> list[str]:
    """A few concrete files for a finding, so the table says where to look."""
    def pair(p: dict[str, Any]) -> str:
        a, b = p["a"], p["b"]
        return f"{a['path']} ({a['split'] or a['label']}) ~ {b['path']} ({b['split'] or b['label']})"

    def group(g: dict[str, Any]) -> str:
        return " = ".join(f"{f['path']} ({f['split'] or f['label']})" for f in g["files"][:3])

    if kind in ("leakage", "conflicting_labels"):
        ex = [group(g) for g in rep.exact_duplicates if kind in g["kinds"]]
        ex += [pair(p) for p in rep.near_duplicates if kind in p["kinds"]]
    elif kind == "duplicates":
        ex = [group(g) for g in rep.exact_duplicates if g["kinds"] == ["within_class"]]
    elif kind == "near_duplicates":
        ex = [pair(p) for p in rep.near_duplicates if p["kinds"] == ["within_class"]]
    elif kind in ("unreadable", "extension_mismatch"):
        ex = [f"{u['path']}: {u['reason']}" for u in getattr(rep, kind)]
    elif kind == "constant_images":
        ex = [f"{c['path']} (std {c['std']})" for c in rep.constant_images]
    elif kind == "small_images":
        ex = [f"{c['path']} ({c['size']})" for c in rep.small_images]
    elif kind == "ignored_files":
        ex = list(rep.ignored_files)
    else:
        ex = []
    return ex[:limit] + ([f"... {len(ex) - limit} more"] if len(ex) > limit else [])


def doctor_tables(rep: Report) -> list[Any]:
    """Rich tables for the terminal: the data set at a glance, then the findings worst first."""
    from rich.table import Table

    t = Table(title=f"inspectnet doctor · {rep.root}", show_header=False)
    t.add_column("", style="bold")
    t.add_column("")
    t.add_row("files", f"{rep.n_files} ({rep.n_readable} readable)")
    t.add_row("classes", ", ".join(f"{c}={k}" for c, k in rep.classes.items())
              + (f"  (imbalance {rep.imbalance_ratio:.2f}:1)" if rep.imbalance_ratio else ""))
    for sp, c in rep.splits.items():
        t.add_row(f"  {sp}", ", ".join(f"{k}={v}" for k, v in c.items()))
    sz = rep.sizes
    if sz.get("width"):
        t.add_row("sizes", f"{sz['distinct']} distinct; width {sz['width']['min']}-{sz['width']['max']}, "
                           f"height {sz['height']['min']}-{sz['height']['max']}; most common "
                           + ", ".join(f"{k} ({v})" for k, v in sz["most_common"].items()))
    t.add_row("modes", ", ".join(f"{m} ({k})" for m, k in rep.modes.items()) or "-")
    t.add_row("near-duplicates",
              f"pHash Hamming <= {rep.near_threshold} ({rep.hash_bands} bands), confirmed on thumbnails")
    tables = [t]
    if rep.problems:
        f = Table(title="findings, worst first")
        f.add_column("#", justify="right")
        f.add_column("problem", style="red")
        f.add_column("count", justify="right")
        f.add_column("examples", overflow="fold")
        for i, p in enumerate(rep.problems, 1):
            f.add_row(str(i), p["kind"].replace("_", " "), str(p["count"]), "\n".join(_examples(rep, p["kind"])))
        tables.append(f)
    return tables


def write_fix_report(rep: Report, path: str | Path) -> Path:
    """A CSV of one line per file to act on: ``path,issue,detail,action``.

    For duplicate groups the first file (sorted by split order then path) is kept and the
    others are listed, so the list can be fed straight to a clean-up script after review.
    """
    from ..io import atomic_write_text

    order = {s: i for i, s in enumerate(SPLITS)}
    rows: list[list[str]] = []
    for u in rep.unreadable:
        rows.append([u["path"], "unreadable", u["reason"], "replace with a good copy or remove"])
    for g in rep.exact_duplicates:
        files = sorted(g["files"], key=lambda f: (order.get(f["split"], 9), f["path"]))
        keep = files[0]
        for f in files[1:]:
            if "conflicting_labels" in g["kinds"]:
                action = f"decide the true label (here {f['label']!r}, {keep['path']} says {keep['label']!r}); keep one"
            elif "leakage" in g["kinds"]:
                action = f"remove: identical to {keep['path']} in split {keep['split']}"
            else:
                action = f"remove: identical to {keep['path']}"
            rows.append([f["path"], "+".join(g["kinds"]), f"identical to {keep['path']}", action])
    for p in rep.near_duplicates:
        a, b = p["a"], p["b"]
        if "conflicting_labels" in p["kinds"]:
            action = f"check the labels ({a['label']!r} vs {b['label']!r})"
        elif "leakage" in p["kinds"]:
            action = f"move into the same split as {a['path']} ({a['split']}) or remove"
        else:
            action = "review: likely the same part photographed twice"
        rows.append([b["path"], "near_duplicate:" + "+".join(p["kinds"]),
                     f"pHash distance {p['distance']} to {a['path']}", action])
    for m in rep.extension_mismatch:
        rows.append([m["path"], "extension_mismatch", m["reason"], "rename to the right extension"])
    for c in rep.constant_images:
        rows.append([c["path"], "constant_image", f"grey std {c['std']}", "check: blank frame?"])
    for s in rep.small_images:
        rows.append([s["path"], "small_image", s["size"], "check: thumbnail or crop?"])
    for f in rep.ignored_files:
        rows.append([f, "ignored_file", "extension not read by training", "convert to PNG/JPEG or remove"])
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["path", "issue", "detail", "action"])
    w.writerows(rows)
    return atomic_write_text(path, buf.getvalue())


# --------------------------------------------------------------------------- for training

def cheap_checks(samples: list[Sample]) -> list[str]:
    """Problems found without decoding a single image (file sizes and 32 header bytes only).

    For ``train`` to print before the decode: single or tiny classes, imbalance, a split that
    misses a class, empty files, text saved as an image, extensions that lie about the content.
    """
    problems: list[str] = []
    counts = Counter(s.label for s in samples)
    if len(counts) < 2:
        problems.append(f"only one class ({', '.join(counts)}); a classifier needs at least two")
    elif max(counts.values()) / max(min(counts.values()), 1) >= IMBALANCE_WARN:
        problems.append(f"class imbalance {max(counts.values()) / min(counts.values()):.1f}:1 ({dict(counts)}); "
                        "read balanced accuracy and recall, not accuracy")
    tiny = sorted(c for c, k in counts.items() if k < 10)
    if tiny:
        problems.append(f"class(es) {', '.join(tiny)} have fewer than 10 images; the metrics will be noise")
    present = {s.split for s in samples if s.split is not None}
    for sp in [x for x in SPLITS if x in present]:
        missing = sorted(set(counts) - {s.label for s in samples if s.split == sp})
        if missing:
            problems.append(f"split {sp} has no images of class(es) {', '.join(missing)}")
    empty, text, lying = [], [], []
    for s in samples:
        try:
            with s.path.open("rb") as f:
                head = f.read(32)
        except OSError:
            continue  # a missing file is for the decoder to report, with its path
        if not head:
            empty.append(s.path)
            continue
        fmt = sniff(head)
        if fmt == "TEXT":
            text.append(s.path)
        elif fmt and extension_mismatch(s.path, fmt):
            lying.append(s.path)
    for paths, what in ((empty, "empty (0 bytes)"), (text, "text, not images"),
                        (lying, "images whose extension does not match their content")):
        if paths:
            shown = ", ".join(str(p) for p in paths[:5]) + (f" and {len(paths) - 5} more" if len(paths) > 5 else "")
            problems.append(f"{len(paths)} file(s) are {what}: {shown}")
    return problems


def content_hashes(paths: list[Path], workers: int | None = None) -> list[str | None]:
    """blake2b of each file's bytes (``None`` for files that cannot be read), on a thread pool."""

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


def check_leakage(samples: list[Sample], allow: bool = False) -> list[list[Sample]]:
    """Refuse a split where the same file content sits in more than one split.

    A byte-identical copy of a test image in train makes the test score a memory test. This
    reads every file once (the OS cache then serves the decode that follows) and compares
    content hashes; near-duplicates need decoding and are left to ``inspectnet doctor``.

    Returns:
        The leaked groups (each a list of samples in two or more splits); empty when clean.

    Raises:
        DataError: naming the leaked files, unless ``allow``.
    """
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
            f"{len(leaked)} image(s) appear in more than one split (identical file content); the test score would "
            "be inflated. Remove the copies, or allow it knowingly (--allow-leakage). Leaked:\n  " + "\n  ".join(lines)
        )
    return leaked
