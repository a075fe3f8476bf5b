"""The torch engine: a loaded run's network on the CPU or a GPU; the one that can explain."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..bundle import LoadedModel, load_model
from .base import BasePredictor


class Predictor(BasePredictor):
    """A loaded run ready to classify images (torch engine).

    Args:
        run: Run folder (or its ``model/`` folder) or an already loaded model.
        device: ``cpu``, ``cuda`` or ``auto``.
    """

    engine = "torch"

    def __init__(self, run: str | Path | LoadedModel, device: str = "cpu") -> None:
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.model = run if isinstance(run, LoadedModel) else load_model(run, device=self.device)
        self.model.network.to(self.device).eval()
        self.card = self.model.card
        self.network = self.model.network.to(memory_format=torch.channels_last)

    @property
    def can_explain(self) -> bool:
        return True

    @torch.inference_mode()
    def _probs(self, images: torch.Tensor) -> np.ndarray:
        """Class probabilities ``(B, C)`` for uint8 images ``(B, 3, S, S)``, one view."""
        images = torch.as_tensor(images)
        x = images.to(self.device).float().div_(255).contiguous(memory_format=torch.channels_last)
        return self.network(x).float().softmax(1).cpu().numpy()

    def cams(self, images: torch.Tensor, target_class: int | None = None) -> np.ndarray:
        """Heatmaps ``(B, S, S)`` in [0, 1] for uint8 images ``(B, 3, S, S)``: LayerCAM on the
        stage before the last (Grad-CAM's 32 px cells are too coarse for a chipped corner).

        Args:
            images: uint8 ``(B, 3, S, S)``.
            target_class: Class index whose evidence to map; ``None`` = the positive class,
                because an inspector asks "where is the damage?" for every part, intact
                ones included (a flat map is then the answer).
        """
        from ..explain.gradcam import grad_cam_batch

        target = self.card.positive_index if target_class is None else target_class
        x = torch.as_tensor(images).to(self.device).float().div_(255)
        return grad_cam_batch(self.network, x, target, method="layercam")
