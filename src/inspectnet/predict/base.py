"""The torch engines' base: the shared rows and streaming loop (:mod:`inspectnet.station`,
torch-free), with torch tensors as inputs and the flip/rot90 views taken in torch.

Decoding runs on a thread pool ahead of the model, batches stream through, and a file that
cannot be read gets a row with its error instead of stopping the run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..data.decode import DecodeError, load_resized  # noqa: F401 - DecodeError: re-exported
from ..decision import Decision, calibrate
from ..errors import ModelError
from ..station import NOT_FINITE, BatchItem, RowPredictor  # noqa: F401 - re-exported


def verdict(probs: np.ndarray, classes: list[str], positive_index: int, threshold: float) -> str:
    """The threshold rule's decision: the positive class when its probability reaches the
    threshold, else the most probable other class (:class:`~inspectnet.decision.Decision`)."""
    return classes[int(Decision("threshold", positive_index, threshold).decide(probs)[0])]


class BasePredictor(RowPredictor):
    """What the torch and ONNX engines share: torch inputs, views in torch.

    Subclasses set ``engine`` and ``card`` and implement :meth:`_probs`; engines that can
    explain override :meth:`cams`.
    """

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

    def _load(self, path: Path) -> torch.Tensor:
        return load_resized(path, self.img_size)

    def resize(self, chw: np.ndarray, size: int) -> np.ndarray:
        """A decoded upload ``(3, H, W)`` uint8 resized as :meth:`_load` resizes files."""
        from ..data.decode import resize_uint8

        return resize_uint8(torch.from_numpy(np.ascontiguousarray(chw)), size).numpy()

    def _stack(self, images: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack(images)
