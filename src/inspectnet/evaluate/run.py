"""Evaluate a network on cached images, or a saved run on any data: ``metrics.json``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.augment import dihedral_views
from ..decision import Decision, calibrate, decision_metrics, decision_of, ece
from ..errors import DataError
from ..io import atomic_write_json
from .eval_set import eval_samples
from .metrics import compute_metrics, metrics_at_threshold

# ``eval_samples`` lives in ``eval_set``; it stays importable from here, where it used to be.
__all__ = ["eval_samples", "evaluate", "full_metrics", "predict_probs", "run_views"]


@torch.inference_mode()
def predict_probs(network: torch.nn.Module, images: torch.Tensor, batch_size: int = 64,
                  views: int = 1, device: torch.device | str = "cpu") -> np.ndarray:
    """Softmax probabilities of uint8 ``(N, 3, S, S)`` images, averaged over ``views``.

    Args:
        network: The classifier; its train/eval mode is restored afterwards.
        images: uint8 ``(N, 3, S, S)`` images.
        batch_size: Images per forward pass.
        views: Flip/rot90 views averaged per image (1: the image as is).
        device: Where the network lives.

    Returns:
        ``(N, C)`` probabilities; ``(0, 0)`` for no images.
    """
    was = network.training
    network.eval()
    out = []
    for s in range(0, len(images), batch_size):
        x = (images[s : s + batch_size].to(device).float().div_(255)
             .contiguous(memory_format=torch.channels_last))
        p = sum(network(v).float().softmax(1) for v in dihedral_views(x, views)) / views
        out.append(p.cpu())
    network.train(was)
    if not out:
        return np.zeros((0, 0))
    return torch.cat(out).numpy()


def run_views(run: str | Path) -> int:
    """The flip/rot90 views a run was trained and measured with (its ``config.yaml``).

    ``evaluate`` uses them so that it reproduces the numbers ``train`` wrote.

    Args:
        run: Run folder.

    Returns:
        ``tta_views`` of the run's config; 1 when there is none or it cannot be read.
    """
    from ..config import TrainConfig

    cfg_path = Path(run) / "config.yaml"
    try:
        return TrainConfig.load(cfg_path).tta_views if cfg_path.is_file() else 1
    except Exception:  # noqa: BLE001 - an unreadable config only costs the views
        return 1


def full_metrics(y: np.ndarray, probs: np.ndarray, classes: list[str], positive: str,
                 threshold: float, split: str, decision: Decision | None = None) -> dict[str, Any]:
    """Argmax metrics under their names, the inspection operating point under ``at_threshold``.

    Args:
        y: ``(N,)`` integer labels.
        probs: ``(N, C)`` class probabilities.
        classes: Class names in index order.
        positive: Name of the positive class.
        threshold: Flag when p(positive) >= threshold.
        split: Name recorded under ``split``.
        decision: The run's decision rule: its own numbers go under ``decided``.

    Returns:
        The :func:`~inspectnet.evaluate.metrics.compute_metrics` dict plus ``at_threshold``
        (and ``decided``).
    """
    m = compute_metrics(y, probs, classes, positive, split=split)
    pos = classes.index(positive)
    m["at_threshold"] = metrics_at_threshold(y, probs[:, pos], pos, threshold)
    if decision is not None:
        m["decided"] = decision_metrics(y, probs, decision, classes)
    return m


def evaluate(run: str | Path, data: str | Path | None = None, split: str = "test",
             batch_size: int = 64, device: str = "cpu", out: str | Path | None = None,
             progress: bool = True) -> dict[str, Any]:
    """Evaluate a trained run on its own split (default) or on another data set.

    Args:
        run: Run folder.
        data: Folder or CSV; ``None`` uses the run's ``split.csv``.
        split: Which split to evaluate (``test``, ``val``, ``train``, or ``all`` for every
            image of ``data``).
        batch_size: Images per forward pass.
        device: Torch device.
        out: Where to write the metrics JSON; default ``RUN/metrics.json`` for the run's own
            test split, else ``RUN/metrics_<split>.json``.
        progress: Show a decoding progress bar.

    Returns:
        The metrics dict (also written to JSON), with ``_written_to``.

    Raises:
        DataError: no ``split.csv`` and no ``data``, unknown labels, or an empty split.
    """
    from ..bundle import load_model
    from ..data.cache import build_cache

    run = Path(run)
    lm = load_model(run, device=device)
    card = lm.card
    views = run_views(run)
    _, chosen, eval_split = eval_samples(run, card.classes, data, split)
    if not chosen:
        raise DataError(f"no images in split {eval_split!r}")
    cache, _ = build_cache(chosen, card.classes, card.img_size, progress=progress)
    c = cache[eval_split]
    raw = predict_probs(lm.network, c.images, batch_size=batch_size, device=device, views=views)
    probs = calibrate(raw, card.temperature)
    y = c.labels.numpy()
    m = full_metrics(y, probs, card.classes, card.positive_class, card.threshold, eval_split, decision_of(card))
    m["calibration"] = {"temperature": card.temperature, "split": eval_split, "ece_before": ece(raw, y),
                        "ece_after": ece(probs, y)}
    own_test = data is None and split == "test"
    target = Path(out) if out else run / ("metrics.json" if own_test else f"metrics_{split}.json")
    if own_test and (run / "metrics.json").is_file():
        import json

        # Keep what train recorded (validation numbers, timings), refresh the test numbers.
        prev = json.loads((run / "metrics.json").read_text())
        prev.update(m)
        m = prev
    atomic_write_json(target, m)
    m["_written_to"] = str(target)
    return m
