"""Which files the doctor looks at, and how the report names them (relative to the data root)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..sources import Sample, discover


def collect_samples(data: str | Path) -> tuple[Path, list[Sample]]:
    """Like :func:`~inspectnet.data.sources.discover`, but one class is fine: the doctor reports it.

    Args:
        data: A folder of class folders, a pre-split folder, or a CSV manifest.

    Returns:
        The root that report paths are relative to (the manifest's folder for a CSV), and
        the samples.

    Raises:
        DataError: the data cannot be listed.
    """
    root = Path(data)
    samples = discover(root, min_classes=1)
    return (root.parent if root.is_file() else root), samples


def rel_path(p: Path, root: Path) -> str:
    """``p`` relative to ``root`` when it lies below it, else ``p`` as given."""
    try:
        return str(p.relative_to(root))
    except ValueError:
        return str(p)


def sample_entry(s: Sample, root: Path) -> dict[str, Any]:
    """One sample as the report lists it: path (relative to ``root``), label, split."""
    return {"path": rel_path(s.path, root), "label": s.label, "split": s.split}
