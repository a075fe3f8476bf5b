"""Where the labelled images come from: class folders, pre-split folders, or a CSV manifest.

Every source turns into one list of :class:`Sample`; everything after that (split, decode,
cache, training) is the same whatever the source was.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
SPLITS = ("train", "val", "test")


@dataclass
class Sample:
    """One labelled image. ``split`` is ``None`` until a split is given or made.

    ``group`` (a manifest's ``group`` column, e.g. one part photographed several times) keeps
    its images together: the split puts a whole group in one split. ``None``: its own group.
    """

    path: Path
    label: str
    split: str | None = None
    meta: dict[str, str] = field(default_factory=dict)
    group: str | None = None


def _images_in(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
    )


def _class_folders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def from_folder(root: Path) -> list[Sample]:
    """``root/<class>/*.png`` or ``root/(train|val|test)/<class>/*.png``."""
    subdirs = _class_folders(root)
    names = {p.name for p in subdirs}
    if names and names <= set(SPLITS) | {"masks"} and names & set(SPLITS):
        samples: list[Sample] = []
        for split in SPLITS:
            if not (root / split).is_dir():
                continue
            for cls_dir in _class_folders(root / split):
                samples += [Sample(p, cls_dir.name, split) for p in _images_in(cls_dir)]
        return samples
    samples = []
    for cls_dir in subdirs:
        if cls_dir.name == "masks":  # the synthetic set keeps damage masks beside the classes
            continue
        files = _images_in(cls_dir)
        if not files:
            raise DataError(
                f"class folder {cls_dir} holds no images ({', '.join(IMAGE_EXTENSIONS)}); "
                "add images or remove the folder"
            )
        samples += [Sample(p, cls_dir.name) for p in files]
    return samples


def from_csv(csv_path: Path) -> list[Sample]:
    """A manifest with columns ``path,label`` and optionally ``split`` and ``group``; other
    columns are kept as metadata. Paths are relative to the CSV file's folder."""
    with csv_path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        cols = reader.fieldnames or []
        missing = [c for c in ("path", "label") if c not in cols]
        if missing:
            raise DataError(
                f"{csv_path}: missing column(s) {', '.join(missing)}; found {', '.join(cols) or 'none'}; "
                "a manifest needs path,label and optionally split and group"
            )
        samples = []
        for lineno, row in enumerate(reader, start=2):
            rel = (row.get("path") or "").strip()
            label = (row.get("label") or "").strip()
            if not rel or not label:
                raise DataError(f"{csv_path}:{lineno}: empty path or label")
            p = (csv_path.parent / rel).resolve() if not Path(rel).is_absolute() else Path(rel)
            if not p.is_file():
                raise DataError(f"{csv_path}:{lineno}: image {rel!r} does not exist (looked at {p})")
            split = (row.get("split") or "").strip() or None if "split" in cols else None
            if split is not None and split not in SPLITS:
                raise DataError(
                    f"{csv_path}:{lineno}: unknown split {split!r}; allowed: {', '.join(SPLITS)}"
                )
            meta = {k: v for k, v in row.items() if k not in ("path", "label", "split", "group") and k}
            samples.append(Sample(p, label, split, meta, (row.get("group") or "").strip() or None))
        if "split" in cols and any(s.split is None for s in samples):
            raise DataError(f"{csv_path}: the split column is empty on some rows; fill it on every row or drop it")
    return samples


def discover(data: str | Path, min_classes: int = 2) -> list[Sample]:
    """Find the labelled images of a folder or CSV manifest and check the class layout.

    Raises:
        DataError: the path does not exist, holds no images, or has fewer than ``min_classes``
            classes (the doctor passes 1: it reports a single class instead of refusing it).
    """
    root = Path(data)
    if not root.exists():
        raise DataError(f"data path {root} does not exist; give a folder of class folders or a CSV manifest")
    if root.is_file():
        if root.suffix.lower() != ".csv":
            raise DataError(f"{root} is a file but not a .csv manifest")
        samples = from_csv(root)
    else:
        manifest = root / "manifest.csv"
        # A folder of class folders wins; a bare manifest.csv next to images is a fallback.
        samples = from_folder(root)
        if not samples and manifest.is_file():
            samples = from_csv(manifest)
    if not samples:
        raise DataError(
            f"no images found under {root}; expected {root}/<class>/*.png (or train/val/test/<class>/)"
        )
    classes = sorted({s.label for s in samples})
    if len(classes) < min_classes:
        raise DataError(
            f"only one class ({classes[0]!r}) found in {root}; a classifier needs at least two class folders"
        )
    return samples
