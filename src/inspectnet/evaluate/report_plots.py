"""Figures and numbers for the HTML report: ROC/PR, reliability, threshold sweep, thumbnails.

Every figure is rendered with matplotlib's Agg backend straight to PNG bytes, so the
report can embed it as a ``data:`` URI and never touches the display or the run folder.
Figures are small (about 100 dpi) because report writing must stay fast on two cores.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import matplotlib.ticker
import numpy as np

from .plots import plt  # Agg is selected there, before pyplot is imported

__all__ = [
    "calibration_bins",
    "expected_calibration_error",
    "fig_to_png",
    "history_png",
    "png_data_uri",
    "reliability_png",
    "roc_pr_png",
    "threshold_sweep",
    "threshold_png",
    "tile_png",
]

BLUE, ORANGE, GREY, RED = "#2563eb", "#ea580c", "#6b7280", "#dc2626"


def png_data_uri(png: bytes) -> str:
    """``data:image/png;base64,...`` for an ``<img src>``: the report stays one file."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def fig_to_png(fig: Any, dpi: int = 100) -> bytes:
    """PNG bytes of a matplotlib figure, which is closed (figures would pile up otherwise)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()


def tile_png(img_hwc: np.ndarray, size: int | None = None) -> bytes:
    """PNG bytes of a uint8 ``(H, W, 3)`` image, optionally resized to ``size`` x ``size``."""
    from PIL import Image

    im = Image.fromarray(np.ascontiguousarray(img_hwc))
    if size is not None and im.size != (size, size):
        im = im.resize((size, size), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    im.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


# ---------------------------------------------------------------- calibration


def calibration_bins(y_true: np.ndarray, probs: np.ndarray,
                     n_bins: int = 10) -> dict[str, np.ndarray]:
    """Top-label reliability bins: confidence = max probability, correct = argmax is the label.

    Bins are equal-width on [0, 1] (left-closed, the last one closed on both sides), as in
    Guo et al., "On Calibration of Modern Neural Networks" (ICML 2017).

    Returns:
        ``count``, ``confidence`` (mean in bin, NaN when empty), ``accuracy`` (NaN when
        empty) and ``edges`` (``n_bins + 1``).
    """
    y = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or len(p) != len(y):
        raise ValueError(f"probs must be (N, C) with N = len(y_true) = {len(y)}; "
                         f"got shape {p.shape}")
    conf = p.max(1) if len(p) else np.zeros(0)
    correct = (p.argmax(1) == y).astype(np.float64) if len(p) else np.zeros(0)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.digitize(conf, edges[1:-1], right=False), 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(idx, weights=conf, minlength=n_bins) / count
        acc = np.bincount(idx, weights=correct, minlength=n_bins) / count
    return {"count": count, "confidence": mean_conf, "accuracy": acc, "edges": edges}


def expected_calibration_error(y_true: np.ndarray, probs: np.ndarray, n_bins: int = 10) -> float:
    """ECE: the count-weighted mean gap between accuracy and confidence over the bins.

    ``sum_b (n_b / N) * |accuracy_b - confidence_b|`` with top-label confidence and
    ``n_bins`` equal-width bins. 0 is perfectly calibrated; a model that always says 0.9
    and is right half the time scores 0.4. NaN for no data.
    """
    b = calibration_bins(y_true, probs, n_bins)
    n = b["count"].sum()
    if n == 0:
        return float("nan")
    full = b["count"] > 0
    gaps = np.abs(b["accuracy"][full] - b["confidence"][full])
    return float((b["count"][full] / n * gaps).sum())


def reliability_png(y_true: np.ndarray, probs: np.ndarray, n_bins: int = 10) -> tuple[bytes, float]:
    """Reliability diagram (accuracy vs confidence per bin, with the diagonal) and the ECE."""
    b = calibration_bins(y_true, probs, n_bins)
    ece = expected_calibration_error(y_true, probs, n_bins)
    centers = (b["edges"][:-1] + b["edges"][1:]) / 2
    width = 1.0 / n_bins
    full = b["count"] > 0
    fig, (ax, axh) = plt.subplots(2, 1, figsize=(4.6, 4.8), sharex=True,
                                  gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], "--", color=GREY, lw=1, label="perfect calibration")
    ax.bar(centers[full], b["accuracy"][full], width=width * 0.92, color=BLUE, alpha=0.8,
           label="accuracy in bin")
    # The gap between what the model claims and what it achieves, bin by bin.
    ax.bar(centers[full], b["confidence"][full] - b["accuracy"][full], bottom=b["accuracy"][full],
           width=width * 0.92, color=RED, alpha=0.25, hatch="//", edgecolor=RED, lw=0,
           label="gap to confidence")
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("accuracy")
    ax.set_title(f"reliability (top-label, {n_bins} bins) · ECE = {ece:.3f}", fontsize=10)
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    axh.bar(centers, b["count"], width=width * 0.92, color=GREY)
    axh.set_xlim(0, 1)
    axh.set_xlabel("confidence (highest class probability)")
    axh.set_ylabel("images")
    fig.tight_layout()
    return fig_to_png(fig), ece


# ---------------------------------------------------------------- ranking curves


def roc_pr_png(y_true: np.ndarray, score: np.ndarray, positive_index: int, threshold: float,
               positive: str) -> bytes | None:
    """ROC and precision-recall curves of the positive-class probability, operating point marked.

    Returns None when the split holds only one of positive / negative (no curve exists).
    """
    from sklearn import metrics as skm

    is_pos = (np.asarray(y_true) == positive_index).astype(int)
    score = np.asarray(score, dtype=np.float64)
    if not 0 < is_pos.sum() < len(is_pos):
        return None
    fpr, tpr, _ = skm.roc_curve(is_pos, score)
    prec, rec, _ = skm.precision_recall_curve(is_pos, score)
    auc = skm.roc_auc_score(is_pos, score)
    ap = skm.average_precision_score(is_pos, score)
    flag = score >= threshold
    tp, fp = int((flag & (is_pos == 1)).sum()), int((flag & (is_pos == 0)).sum())
    op_tpr, op_fpr = tp / is_pos.sum(), fp / (len(is_pos) - is_pos.sum())
    op_prec = tp / (tp + fp) if tp + fp else 1.0

    fig, (a, b) = plt.subplots(1, 2, figsize=(9.6, 4.0))
    a.plot(fpr, tpr, color=BLUE, lw=2, label=f"ROC (AUC {auc:.3f})")
    a.plot([0, 1], [0, 1], "--", color=GREY, lw=1, label="chance")
    a.plot([op_fpr], [op_tpr], "o", color=ORANGE, ms=8, label=f"threshold {threshold:.3g}")
    a.set_xlabel("false-alarm rate (FPR)")
    a.set_ylabel(f"recall of {positive} (TPR)")
    a.set_title(f"ROC · positive class: {positive}", fontsize=10)
    b.step(rec, prec, where="post", color=BLUE, lw=2, label=f"PR (AP {ap:.3f})")
    b.axhline(is_pos.mean(), ls="--", color=GREY, lw=1, label=f"prevalence {is_pos.mean():.2f}")
    b.plot([op_tpr], [op_prec], "o", color=ORANGE, ms=8, label=f"threshold {threshold:.3g}")
    b.set_xlabel(f"recall of {positive}")
    b.set_ylabel("precision")
    b.set_title("precision-recall", fontsize=10)
    for ax in (a, b):
        ax.set_xlim(-0.02, 1.02)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right" if ax is a else "lower left", fontsize=8)
    fig.tight_layout()
    return fig_to_png(fig)


# ---------------------------------------------------------------- threshold


def threshold_sweep(y_true: np.ndarray, score: np.ndarray, positive_index: int,
                    thresholds: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Recall of the positive class and false-alarm rate when flagging ``score >= t``, per t."""
    y = np.asarray(y_true)
    s = np.asarray(score, dtype=np.float64)
    if thresholds is None:
        # Logit-spaced grid: the interesting thresholds for high recall sit close to 0.
        z = np.linspace(-9, 9, 361)
        thresholds = 1 / (1 + np.exp(-z))
    is_pos = y == positive_index
    flag = s[None, :] >= thresholds[:, None]
    n_pos, n_neg = is_pos.sum(), (~is_pos).sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = (flag & is_pos).sum(1) / n_pos if n_pos else np.full(len(thresholds), np.nan)
        far = (flag & ~is_pos).sum(1) / n_neg if n_neg else np.full(len(thresholds), np.nan)
    return {"threshold": thresholds, "recall": recall, "false_alarm_rate": far}


def threshold_png(y_true: np.ndarray, score: np.ndarray, positive_index: int, threshold: float,
                  target_recall: float, positive: str, split: str) -> bytes:
    """Recall and false-alarm rate against the threshold (logit axis), the chosen one marked."""
    sw = threshold_sweep(y_true, score, positive_index)
    fig, ax = plt.subplots(figsize=(9.6, 3.6))
    ax.plot(sw["threshold"], sw["recall"], color=BLUE, lw=2, label=f"recall of {positive}")
    ax.plot(sw["threshold"], sw["false_alarm_rate"], color=RED, lw=2, label="false-alarm rate")
    ax.axhline(target_recall, ls=":", color=BLUE, lw=1, label=f"target recall {target_recall:g}")
    ax.axvline(threshold, color=ORANGE, lw=2, label=f"chosen on validation: {threshold:.3g}")
    ax.set_xscale("logit")
    ax.set_xlim(sw["threshold"][0], sw["threshold"][-1])
    ticks = [1e-3, 0.01, 0.05, 0.2, 0.5, 0.8, 0.95, 0.99, 0.999]
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel(f"threshold on p({positive}) (logit scale)")
    ax.set_ylabel("rate")
    ax.set_title(f"what each threshold would cost on the {split} split", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
    fig.tight_layout()
    return fig_to_png(fig)


# ---------------------------------------------------------------- history


def history_png(history: list[dict[str, Any]]) -> bytes | None:
    """Training curves as PNG bytes via ``plots.plot_history``; None when there are no epochs."""
    import tempfile
    from pathlib import Path

    from .plots import plot_history

    with tempfile.TemporaryDirectory() as d:
        p = plot_history(history, Path(d) / "curves.png")
        return p.read_bytes() if p is not None else None
