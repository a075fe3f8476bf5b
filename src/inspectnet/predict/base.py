"""What every engine shares: the inspection verdict, the result rows and the streaming loop.

Decoding runs on a thread pool ahead of the model, batches stream through, and a file that
cannot be read gets a row with its error instead of stopping the run.
"""

from __future__ import annotations

import math

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..bundle import ModelCard
from ..data.decode import DecodeError, load_resized
from ..decision import Decision, calibrate, decision_of, review_reason
from ..errors import ConfigError, ModelError

#: The error of a row whose probabilities came out NaN or infinite.
NOT_FINITE = "model output is not finite (NaN or inf); the model or this image is broken"

#: One decoded input of a batch: ``(path, image, error, probabilities)``; the image and the
#: probabilities are None when the file could not be read, the error is None otherwise.
BatchItem = tuple[Path, torch.Tensor | None, str | None, np.ndarray | None]


def verdict(probs: np.ndarray, classes: list[str], positive_index: int, threshold: float) -> str:
    """The threshold rule's decision: the positive class when its probability reaches the
    threshold, else the most probable other class (:class:`~inspectnet.decision.Decision`)."""
    return classes[int(Decision("threshold", positive_index, threshold).decide(probs)[0])]


class BasePredictor:
    """What every engine shares: the card, the result rows and the streaming loop.

    Subclasses set ``engine`` and ``card`` and implement :meth:`predict_batch`; engines that
    can explain override :meth:`cams`.
    """

    engine = "base"
    card: ModelCard
    #: ``review`` when an image is this close to the decision boundary (``serve --review-margin``).
    review_margin: float = 0.1

    @property
    def img_size(self) -> int:
        return self.card.img_size

    @property
    def can_explain(self) -> bool:
        """Whether :meth:`cams` works with this engine (Grad-CAM needs gradients: torch)."""
        return False

    def predict_batch(self, images: torch.Tensor | np.ndarray) -> np.ndarray:
        """Class probabilities ``(B, C)`` for uint8 images ``(B, 3, S, S)``, averaged over the
        flip/rot90 views the run was trained and thresholded with (``card.tta_views``), then
        calibrated with the run's temperature: the decision rule only means what it meant on
        validation with the same views and the same calibration."""
        from ..data.augment import dihedral_views

        views = int(getattr(self.card, "tta_views", 1) or 1)
        images = torch.as_tensor(images)
        if views == 1:
            p = self._probs(images)
        else:
            p = sum(self._probs(v.contiguous()) for v in dihedral_views(images, views)) / views
        return calibrate(p, float(getattr(self.card, "temperature", 1.0)))

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

    @property
    def decision(self) -> Decision:
        """The run's decision rule (``model.json``)."""
        return decision_of(self.card)

    def result(self, path: str, probs: np.ndarray) -> dict[str, Any]:
        """The result row of one image: one decision (``verdict``; ``class`` is the same
        label, kept for scripts that read it), its probability, and ``review`` with the reason
        when the run's operating point decided otherwise than the most probable class, or the
        image lies within :attr:`review_margin` of the decision boundary. An
        error row when the network's output is not finite (NaN or inf never reaches a CSV or
        JSON row)."""
        c = self.card
        rule = self.decision
        if not np.isfinite(probs).all():
            return {**self.error_row(path, NOT_FINITE), f"p_{c.positive_class}": None, "probabilities": None,
                    "threshold": rule.threshold if rule.rule == "threshold" else None}
        decided = int(rule.decide(probs)[0])
        reason = review_reason(rule, probs, decided, c.classes, self.review_margin)
        return {
            "path": path,
            "verdict": c.classes[decided],
            "class": c.classes[decided],
            "probability": float(probs[decided]),
            f"p_{c.positive_class}": float(probs[c.positive_index]),
            "probabilities": {k: float(v) for k, v in zip(c.classes, probs)},
            "threshold": rule.threshold if rule.rule == "threshold" else None,
            "review": reason is not None,
            "review_reason": reason,
            **self._anomaly_score(probs),
            "error": None,
        }

    def _anomaly_score(self, probs: np.ndarray) -> dict[str, float]:
        """``anomaly_score`` for an anomaly detector's row (nothing for a classifier).

        Its positive logit is ``(score - center) / scale`` and calibration divides logits by
        the temperature, so the score is ``center + scale * T * logit(p)``; beyond
        p = 1 - 1e-7 (far past the threshold) float32 probabilities saturate and so does it.
        """
        c = self.card
        if c.anomaly_center is None or c.anomaly_scale is None:
            return {}
        p = min(max(float(probs[c.positive_index]), 1e-7), 1 - 1e-7)
        z = math.log(p / (1 - p)) * float(c.temperature)
        return {"anomaly_score": c.anomaly_center + c.anomaly_scale * z}

    @staticmethod
    def error_row(path: str, reason: str) -> dict[str, Any]:
        return {"path": path, "verdict": None, "class": None, "probability": None, "review": None,
                "review_reason": None, "error": reason}

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
