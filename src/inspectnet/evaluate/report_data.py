"""What the report is made of: the one record that gathering fills and rendering reads.

It lives apart from both so that ``report`` (gathering) imports ``report_html``
(rendering) and never the other way round.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["ReportData"]


@dataclass
class ReportData:
    """Everything the renderer needs; both entry points fill one of these."""

    run_dir: Path
    title: str
    classes: list[str]
    positive: str
    threshold: float
    target_recall: float | None
    metrics: dict[str, Any]
    split: str | None
    labels: np.ndarray
    probs: np.ndarray
    images: torch.Tensor
    paths: list[Path]
    network: torch.nn.Module
    counts: dict[str, dict[str, int]]
    thumbs: dict[str, torch.Tensor]
    thumbs_split: str
    history: list[dict[str, Any]]
    curves_png: bytes | None
    approach: str
    config: dict[str, Any]
    card: dict[str, Any]
    notes: list[str]
    localization: dict[str, Any] | None = None
    source: str = "train"
    masks: Path | None = None  # damage masks, outlined on the gallery's heatmaps
