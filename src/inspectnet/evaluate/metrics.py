"""Classification metrics for any number of classes >= 2, with a positive class.

With more than two classes the positive-class numbers (precision, recall, F1, ROC-AUC,
PR-AUC) are one-vs-rest. The flat keys are the schema documented in the README.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from sklearn import metrics as skm

POSITIVE_NAMES = ("damaged", "defective", "defect", "bad", "ng", "nok", "anomaly")


def pick_positive(classes: list[str], counts: dict[str, int] | None = None,
                  requested: str | None = None) -> str:
    """The class that inspection is about.

    Args:
        classes: Class names.
        counts: Images per class, to fall back on the minority class.
        requested: The class the user named, if any.

    Returns:
        ``requested``, else a class named like damage (``damaged``, ``defective``, ...),
        else the minority class (by ``counts``), else the last class.

    Raises:
        ConfigError: ``requested`` is not one of ``classes``.
    """
    from ..errors import ConfigError

    if requested is not None:
        if requested not in classes:
            raise ConfigError(f"positive class {requested!r} is not one of the classes "
                              f"{', '.join(classes)}")
        return requested
    for name in POSITIVE_NAMES:
        for c in classes:
            if c.lower() == name:
                return c
    if counts:
        return min(classes, key=lambda c: (counts.get(c, 0), c))
    return classes[-1]


def compute_metrics(
    y_true: np.ndarray, probs: np.ndarray, classes: list[str], positive: str, split: str = "test"
) -> dict[str, Any]:
    """Metrics of argmax predictions plus ranking metrics of the positive-class probability.

    Args:
        y_true: ``(N,)`` integer labels.
        probs: ``(N, C)`` class probabilities.
        classes: Class names in index order.
        positive: Name of the positive class.
        split: Name recorded under ``split``.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    pos = classes.index(positive)
    y_pred = probs.argmax(1)
    labels = list(range(len(classes)))
    p, r, f, support = skm.precision_recall_fscore_support(y_true, y_pred, labels=labels,
                                                           zero_division=0)
    cm = skm.confusion_matrix(y_true, y_pred, labels=labels)
    is_pos = (y_true == pos).astype(int)
    score = probs[:, pos]
    both = 0 < is_pos.sum() < len(is_pos)
    out: dict[str, Any] = {
        "split": split,
        "n": int(len(y_true)),
        "classes": list(classes),
        "positive_class": positive,
        "accuracy": float((y_pred == y_true).mean()) if len(y_true) else float("nan"),
        "balanced_accuracy": float(_balanced_accuracy(cm)),
        "macro_f1": float(np.mean(f)),
        "precision_positive": float(p[pos]),
        "recall_positive": float(r[pos]),
        "f1_positive": float(f[pos]),
        "roc_auc": float(skm.roc_auc_score(is_pos, score)) if both else None,
        "pr_auc": float(skm.average_precision_score(is_pos, score)) if both else None,
        "log_loss": (float(skm.log_loss(y_true, _renorm(probs), labels=labels))
                     if len(y_true) else None),
        "per_class": {
            c: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]),
                "support": int(support[i])}
            for i, c in enumerate(classes)
        },
        "confusion_matrix": {"labels": list(classes), "matrix": cm.tolist()},
        # 95% Wilson intervals: how far the two headline numbers may sit from the truth
        "accuracy_ci95": ci95(int(np.trace(cm)), int(cm.sum())),
        "recall_positive_ci95": ci95(int(cm[pos, pos]), int(cm[pos].sum())),
    }
    return out


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float] | None:
    """The Wilson score interval of a proportion ``k / n`` (95% for the default ``z``).

    Unlike the normal approximation it stays inside [0, 1] and is not empty at ``k = 0`` or
    ``k = n``: 10 of 10 right still leaves the true rate anywhere above 72%.

    Args:
        k: Successes (correct predictions, positives found).
        n: Trials.
        z: Standard normal quantile (1.96 for 95%).

    Returns:
        ``(lo, hi)``; ``None`` when ``n`` is 0 (nothing measured, no interval).
    """
    if n <= 0:
        return None
    p, z2 = k / n, z * z
    denom = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    lo = 0.0 if k <= 0 else max(0.0, centre - half)
    hi = 1.0 if k >= n else min(1.0, centre + half)
    return lo, hi


def ci95(k: int, n: int) -> list[float] | None:
    """:func:`wilson_interval` as the JSON value of a ``*_ci95`` key: ``[lo, hi]`` or ``None``."""
    ci = wilson_interval(k, n)
    return [round(ci[0], 6), round(ci[1], 6)] if ci is not None else None


def pct_ci(value: float | None, ci: list[float] | tuple[float, float] | None, digits: int = 1) -> str:
    """``91.2% [88.0–93.6]``: a proportion and its interval for tables; ``-`` when undefined."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    text = f"{100 * value:.{digits}f}%"
    if ci:
        text += f" [{100 * ci[0]:.{digits}f}–{100 * ci[1]:.{digits}f}]"
    return text


def _balanced_accuracy(cm: np.ndarray) -> float:
    # Mean recall over the classes present; sklearn warns on absent ones, we just skip them.
    rows = cm.sum(1)
    present = rows > 0
    if not present.any():
        return float("nan")
    return float(np.mean(np.diag(cm)[present] / rows[present]))


def threshold_for_recall(y_true: np.ndarray, score: np.ndarray, positive_index: int,
                         target_recall: float) -> float:
    """A threshold on the positive probability whose recall on this data reaches the target.

    Any threshold between the k-th highest positive score (k = ceil(target * n_pos)) and the
    next lower score of the data keeps the same recall here; we take the midpoint in logit
    space, which leaves a margin on both sides for new images. Flagging ``score >= threshold``
    reaches the target recall on the data it was chosen on, by construction. With no
    positives 0.5 is returned.
    """
    score = np.asarray(score, dtype=np.float64)
    pos_scores = np.sort(score[np.asarray(y_true) == positive_index])
    if len(pos_scores) == 0:
        return 0.5
    k = int(np.ceil(target_recall * len(pos_scores) - 1e-9))
    k = min(max(k, 1), len(pos_scores))
    upper = float(pos_scores[len(pos_scores) - k])
    below = score[score < upper]
    lower = float(below.max()) if len(below) else 0.0

    def logit(p: float) -> float:
        p = min(max(p, 1e-12), 1 - 1e-12)
        return float(np.log(p / (1 - p)))

    mid = 1 / (1 + np.exp(-(logit(upper) + logit(lower)) / 2)) if lower > 0 else upper / 2
    # Guard against rounding: the threshold must not rise above the k-th positive score.
    return float(min(mid, upper))


def metrics_at_threshold(y_true: np.ndarray, score: np.ndarray, positive_index: int,
                         threshold: float) -> dict[str, Any]:
    """Inspection operating point: flag when the positive probability >= threshold."""
    y_true = np.asarray(y_true)
    flag = np.asarray(score) >= threshold
    is_pos = y_true == positive_index
    tp = int((flag & is_pos).sum())
    fp = int((flag & ~is_pos).sum())
    fn = int((~flag & is_pos).sum())
    tn = int((~flag & ~is_pos).sum())
    return {
        "threshold": float(threshold),
        "recall_positive": tp / (tp + fn) if tp + fn else None,
        "precision_positive": tp / (tp + fp) if tp + fp else None,
        "false_alarm_rate": fp / (fp + tn) if fp + tn else None,
        "false_alarms": fp,
        "missed": fn,
        "flagged": tp + fp,
        "n": int(len(y_true)),
        "recall_positive_ci95": ci95(tp, tp + fn),
    }


def _renorm(probs: np.ndarray) -> np.ndarray:
    p = np.clip(probs, 1e-7, 1)
    return p / p.sum(1, keepdims=True)
