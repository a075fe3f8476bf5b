"""Predict with a trained run: files, folders and globs in, one result per image out.

Decoding runs on a thread pool ahead of the model, batches stream through, and a file that
cannot be read gets a row with its error instead of stopping the run.
"""

from __future__ import annotations

import glob
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .bundle import LoadedModel, ModelCard, load_model
from .data.decode import DecodeError, load_resized
from .data.sources import IMAGE_EXTENSIONS
from .errors import DataError, ModelError


def expand_inputs(items: Iterable[str | Path]) -> list[Path]:
    """Files as given, folders recursively (image extensions only), globs expanded; sorted
    within each item, duplicates dropped, order of the items kept."""
    out: list[Path] = []
    seen: set[Path] = set()
    for item in items:
        s = str(item)
        p = Path(s)
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in IMAGE_EXTENSIONS)
        elif p.is_file():
            found = [p]
        elif any(ch in s for ch in "*?["):
            found = sorted(Path(q) for q in glob.glob(s, recursive=True) if Path(q).is_file())
        else:
            raise DataError(f"{s} is not a file, folder or glob that matches anything")
        for q in found:
            if q not in seen:
                seen.add(q)
                out.append(q)
    if not out:
        raise DataError("no images found in the given inputs")
    return out


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
        from .data.augment import dihedral_views

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
        c = self.card
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
                        ) -> Iterator[list[tuple[Path, torch.Tensor | None, str | None, np.ndarray | None]]]:
        """Decoded batches with their probabilities: ``[(path, image, error, probs), ...]``.

        The lower-level form of :meth:`predict_paths` for callers that need the decoded
        image as well (Grad-CAM overlays). Decoding of the next batch overlaps with
        inference of this one.
        """
        size = self.img_size

        def load(p: Path) -> tuple[Path, torch.Tensor | None, str | None]:
            try:
                return p, load_resized(p, size), None
            except DecodeError as e:
                return p, None, str(e)

        batch_size = max(int(batch_size), 1)
        chunks = [paths[i : i + batch_size] for i in range(0, len(paths), batch_size)]
        with ThreadPoolExecutor(max_workers=max(workers, 1)) as pool:
            # Submit the next batch's files before running this one: decoding (I/O and
            # Pillow, which release the GIL) overlaps with inference.
            ahead = [pool.submit(load, p) for p in chunks[0]] if chunks else []
            for k in range(len(chunks)):
                current = ahead
                ahead = [pool.submit(load, p) for p in chunks[k + 1]] if k + 1 < len(chunks) else []
                chunk = [f.result() for f in current]
                good = [t for _, t, _ in chunk if t is not None]
                probs = iter(self.predict_batch(torch.stack(good)) if good else ())
                yield [(p, t, e, next(probs) if t is not None else None) for p, t, e in chunk]

    def predict_paths(self, paths: list[Path], batch_size: int = 32, workers: int = 2) -> Iterator[dict[str, Any]]:
        """Stream results in input order; decoding overlaps with inference."""
        for batch in self.predict_batches(paths, batch_size=batch_size, workers=workers):
            for p, _, err, probs in batch:
                yield self.error_row(str(p), err) if probs is None else self.result(str(p), probs)


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
        from .explain.gradcam import grad_cam_batch

        target = self.card.positive_index if target_class is None else target_class
        x = torch.as_tensor(images).to(self.device).float().div_(255)
        return grad_cam_batch(self.network, x, target, method="layercam")


def predict_paths(run: str | Path, inputs: Iterable[str | Path], batch_size: int = 32,
                  device: str = "cpu", engine: str = "auto") -> list[dict[str, Any]]:
    """Python API: classify files/folders/globs with a trained run; a list of result dicts.

    ``engine`` is ``auto`` (ONNX Runtime when the run has an up-to-date ``model.onnx`` and
    the device is the CPU, else torch), ``torch`` or ``onnx``.
    """
    from .export import make_predictor

    pred = make_predictor(run, engine=engine, device=device)
    return list(pred.predict_paths(expand_inputs(inputs), batch_size=batch_size))
