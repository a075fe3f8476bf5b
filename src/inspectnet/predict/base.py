"""What every engine shares: the inspection verdict, the result rows and the streaming loop.

Decoding runs on a thread pool ahead of the model, batches stream through, and a file that
cannot be read gets a row with its error instead of stopping the run.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..bundle import ModelCard
from ..data.decode import DecodeError, load_resized
from ..errors import ConfigError, ModelError

#: The error of a row whose probabilities came out NaN or infinite.
NOT_FINITE = "model output is not finite (NaN or inf); the model or this image is broken"

#: One decoded input of a batch: ``(path, image, error, probabilities)``; the image and the
#: probabilities are None when the file could not be read, the error is None otherwise.
BatchItem = tuple[Path, torch.Tensor | None, str | None, np.ndarray | None]


def verdict(probs: np.ndarray, classes: list[str], positive_index: int, threshold: float) -> str:
    """The inspection decision: the positive class when its probability reaches the
    threshold, else the most probable other class."""
    if probs[positive_index] >= threshold:
        return classes[positive_index]
    rest = probs.copy()
    rest[positive_index] = -1
    return classes[int(rest.argmax())]


class BasePredictor:
    """What every engine shares: the card, the result rows and the streaming loop.

    Subclasses set ``engine`` and ``card`` and implement :meth:`predict_batch`; engines that
    can explain override :meth:`cams`.
    """

    engine = "base"
    card: ModelCard

    @property
    def img_size(self) -> int:
        return self.card.img_size

    @property
    def can_explain(self) -> bool:
        """Whether :meth:`cams` works with this engine (Grad-CAM needs gradients: torch)."""
        return False

    def predict_batch(self, images: torch.Tensor | np.ndarray) -> np.ndarray:
        """Class probabilities ``(B, C)`` for uint8 images ``(B, 3, S, S)``, averaged over the
        flip/rot90 views the run was trained and thresholded with (``card.tta_views``): the
        decision threshold only means what it meant on validation with the same views."""
        from ..data.augment import dihedral_views

        views = int(getattr(self.card, "tta_views", 1) or 1)
        images = torch.as_tensor(images)
        if views == 1:
            return self._probs(images)
        return sum(self._probs(v.contiguous()) for v in dihedral_views(images, views)) / views

    def _probs(self, images: torch.Tensor) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def cams(self, images: torch.Tensor, target_class: int | None = None) -> np.ndarray:
        """Heatmaps ``(B, S, S)`` in [0, 1] for uint8 images ``(B, 3, S, S)``: LayerCAM on the
        stage before the last (Grad-CAM's 32 px cells are too coarse for a chipped corner).

        Raises:
            ModelError: this engine cannot compute gradients (ONNX Runtime).
        """
        raise ModelError(f"Grad-CAM needs the torch engine; this predictor uses {self.engine} "
                         "(use --engine torch, or drop --cam)")

    def result(self, path: str, probs: np.ndarray) -> dict[str, Any]:
        """The result row of one image; an error row when the network's output is not finite
        (NaN or inf never reaches a CSV or JSON row)."""
        c = self.card
        if not np.isfinite(probs).all():
            return {**self.error_row(path, NOT_FINITE), f"p_{c.positive_class}": None, "probabilities": None,
                    "threshold": c.threshold}
        return {
            "path": path,
            "class": c.classes[int(probs.argmax())],
            "verdict": verdict(probs, c.classes, c.positive_index, c.threshold),
            "probability": float(probs.max()),
            f"p_{c.positive_class}": float(probs[c.positive_index]),
            "probabilities": {k: float(v) for k, v in zip(c.classes, probs)},
            "threshold": c.threshold,
            "error": None,
        }

    @staticmethod
    def error_row(path: str, reason: str) -> dict[str, Any]:
        return {"path": path, "class": None, "verdict": None, "probability": None, "error": reason}

    def predict_batches(self, paths: list[Path], batch_size: int = 32, workers: int = 2,
                        ) -> Iterator[list[BatchItem]]:
        """Decoded batches with their probabilities: ``[(path, image, error, probs), ...]``.

        The lower-level form of :meth:`predict_paths` for callers that need the decoded
        image as well (Grad-CAM overlays). Decoding of the next batch overlaps with
        inference of this one. An image whose probabilities are not finite comes with the
        error :data:`NOT_FINITE` (and its probabilities, for callers that look).

        Raises:
            ConfigError: ``batch_size`` or ``workers`` below 1.
        """
        for name, v in (("batch_size", batch_size), ("workers", workers)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"{name}={v!r} must be an integer of at least 1", key=name)
        size = self.img_size

        def load(p: Path) -> tuple[Path, torch.Tensor | None, str | None]:
            try:
                return p, load_resized(p, size), None
            except DecodeError as e:
                return p, None, str(e)

        chunks = [paths[i : i + batch_size] for i in range(0, len(paths), batch_size)]
        with ThreadPoolExecutor(max_workers=workers) as pool:
            # Submit the next batch's files before running this one: decoding (I/O and
            # Pillow, which release the GIL) overlaps with inference.
            ahead = [pool.submit(load, p) for p in chunks[0]] if chunks else []
            for k in range(len(chunks)):
                current = ahead
                ahead = [pool.submit(load, p) for p in chunks[k + 1]] if k + 1 < len(chunks) else []
                chunk = [f.result() for f in current]
                good = [t for _, t, _ in chunk if t is not None]
                probs = iter(self.predict_batch(torch.stack(good)) if good else ())
                items = [(p, t, e, next(probs) if t is not None else None) for p, t, e in chunk]
                yield [(p, t, NOT_FINITE if q is not None and not np.isfinite(q).all() else e, q)
                       for p, t, e, q in items]

    def predict_paths(self, paths: list[Path], batch_size: int = 32,
                      workers: int = 2) -> Iterator[dict[str, Any]]:
        """Stream results in input order; decoding overlaps with inference."""
        for batch in self.predict_batches(paths, batch_size=batch_size, workers=workers):
            for p, _, err, probs in batch:
                yield self.error_row(str(p), err) if probs is None else self.result(str(p), probs)
