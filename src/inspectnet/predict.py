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

from .bundle import LoadedModel, load_model
from .data.decode import DecodeError, load_resized
from .data.sources import IMAGE_EXTENSIONS
from .errors import DataError


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


class Predictor:
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
    def img_size(self) -> int:
        return self.card.img_size

    @torch.inference_mode()
    def predict_batch(self, images: torch.Tensor) -> np.ndarray:
        """Class probabilities ``(B, C)`` for uint8 images ``(B, 3, S, S)``."""
        x = images.to(self.device).float().div_(255).contiguous(memory_format=torch.channels_last)
        return self.network(x).float().softmax(1).cpu().numpy()

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

    def predict_paths(self, paths: list[Path], batch_size: int = 32, workers: int = 2) -> Iterator[dict[str, Any]]:
        """Stream results in input order; decoding overlaps with inference."""
        size = self.img_size

        def load(p: Path) -> tuple[Path, torch.Tensor | None, str | None]:
            try:
                return p, load_resized(p, size), None
            except DecodeError as e:
                return p, None, str(e)

        with ThreadPoolExecutor(max_workers=max(workers, 1)) as pool:
            for start in range(0, len(paths), batch_size):
                chunk = list(pool.map(load, paths[start : start + batch_size]))
                good = [(p, t) for p, t, e in chunk if t is not None]
                probs = self.predict_batch(torch.stack([t for _, t in good])) if good else np.zeros((0,))
                it = iter(probs)
                for p, t, err in chunk:
                    if t is None:
                        yield {"path": str(p), "class": None, "verdict": None, "probability": None, "error": err}
                    else:
                        yield self.result(str(p), next(it))


def predict_paths(run: str | Path, inputs: Iterable[str | Path], batch_size: int = 32,
                  device: str = "cpu") -> list[dict[str, Any]]:
    """Python API: classify files/folders/globs with a trained run; a list of result dicts."""
    pred = Predictor(run, device=device)
    return list(pred.predict_paths(expand_inputs(inputs), batch_size=batch_size))
