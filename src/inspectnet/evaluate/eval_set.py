"""The evaluation data layer: which images a saved run is scored on, decoded once.

``evaluate``, the HTML report and the localisation scores all score the same images under
the same split rules; they get them from here, so none of them depends on another.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DataError

__all__ = ["EvalSet", "eval_samples", "load_eval_set", "thumbs_from"]


@dataclass
class EvalSet:
    """Decoded images of the evaluated split, with thumbnails of each class for the report."""

    split: str
    images: torch.Tensor  # (N, 3, S, S) uint8
    labels: np.ndarray  # (N,) int64
    paths: list[Path]
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    thumbs: dict[str, torch.Tensor] = field(default_factory=dict)  # class -> (k, 3, S, S) uint8
    thumbs_split: str = "train"
    data: str = ""


def eval_samples(run: str | Path, classes: list[str], data: str | Path | None = None,
                 split: str = "test") -> tuple[list[Any], list[Any], str]:
    """The images ``evaluate`` (and the report) score: the run's own split, or another data set.

    Unsplit external data, or ``split="all"``, is scored whole.

    Args:
        run: Run folder (its ``split.csv`` is used when ``data`` is None).
        classes: The model's classes; every label must be one of them.
        data: Other data (folder or CSV), or None.
        split: ``test``, ``val``, ``train`` or ``all``.

    Returns:
        (all samples, the chosen ones, the split name used).

    Raises:
        DataError: no ``split.csv`` and no ``data``, or labels that are not the model's classes.
    """
    from ..data.sources import discover, from_csv
    from ..data.split import stratified_split

    run = Path(run)
    if data is None:
        split_csv = run / "split.csv"
        if not split_csv.is_file():
            raise DataError(f"{split_csv} is missing; pass --data to evaluate on a data set")
        samples = from_csv(split_csv)
    else:
        samples = discover(data)
        if split == "all" or any(s.split is None for s in samples):
            for s in samples:
                s.split = "test"
            split = "all" if split == "all" else "test"
        samples = stratified_split(samples)
    eval_split = "test" if split == "all" else split
    unknown = sorted({s.label for s in samples} - set(classes))
    if unknown:
        raise DataError(f"label(s) {', '.join(unknown)} are not classes of this model "
                        f"({', '.join(classes)})")
    return samples, [s for s in samples if s.split == eval_split], eval_split


def load_eval_set(run: str | Path, card: Any, data: str | Path | None = None, split: str = "test",
                  progress: bool = False, thumbs_per_class: int = 0,
                  positives_only: bool = False) -> EvalSet:
    """Decode the images ``evaluate`` would score (same split rules), plus class thumbnails.

    Args:
        run: Run folder.
        card: The model card (``classes``, ``positive_class``, ``img_size``).
        data: Other data (folder or CSV); None uses the run's ``split.csv``.
        split: ``test``, ``val``, ``train`` or ``all``.
        progress: Show a decoding progress bar.
        thumbs_per_class: Thumbnails to decode per class (0: none), from the train split
            when the samples have one.
        positives_only: Keep only the positive class's images (what localisation scores).

    Returns:
        The decoded :class:`EvalSet`.

    Raises:
        DataError: no ``split.csv`` and no ``data``, unknown labels, or an empty split.
    """
    from ..data.cache import build_cache
    from ..data.split import counts_table

    run = Path(run)
    samples, chosen, eval_split = eval_samples(run, card.classes, data, split)
    if positives_only:
        chosen = [s for s in chosen if s.label == card.positive_class]
    if not chosen:
        raise DataError(f"no images in split {eval_split!r}")
    thumb_split = "train" if any(s.split == "train" for s in samples) else eval_split
    extra = []
    if thumbs_per_class and thumb_split != eval_split:
        for c in card.classes:
            extra += [s for s in samples
                      if s.split == thumb_split and s.label == c][:thumbs_per_class]
    # Thumbnails are decoded in the same pass as the scored images: one cache build.
    cache, _ = build_cache(chosen + extra, card.classes, card.img_size, progress=progress,
                           skip_bad=True)
    if eval_split not in cache:
        raise DataError(f"no readable images in split {eval_split!r}")
    c = cache[eval_split]
    thumbs = (thumbs_from(cache.get(thumb_split), card.classes, thumbs_per_class)
              if thumbs_per_class else {})
    return EvalSet(split=eval_split, images=c.images, labels=c.labels.numpy(), paths=list(c.paths),
                   counts=counts_table(samples), thumbs=thumbs, thumbs_split=thumb_split,
                   data=str(data) if data is not None else str(run / "split.csv"))


def thumbs_from(c: Any, classes: list[str], k: int) -> dict[str, torch.Tensor]:
    """The first ``k`` images of each class of a cached split.

    Args:
        c: A ``CachedImages`` (``images``, ``labels``), or None.
        classes: Class names in index order.
        k: Images per class.

    Returns:
        ``{class: (<=k, 3, S, S) uint8}`` for the classes that have images; empty for None.
    """
    if c is None:
        return {}
    out = {}
    labels = c.labels.numpy() if torch.is_tensor(c.labels) else np.asarray(c.labels)
    for i, name in enumerate(classes):
        rows = np.flatnonzero(labels == i)[:k]
        if len(rows):
            out[name] = c.images[torch.as_tensor(rows)]
    return out
