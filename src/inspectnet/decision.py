"""Learning apart from deciding: calibrated probabilities, then one decision rule per run.

Training fits an unweighted loss, so the network's probabilities estimate the classes'
frequencies; this module turns them into one decision per image, the same everywhere
(``evaluate``, ``predict``, ``serve``, the report):

* **calibration**: a temperature ``T`` fitted on validation (out-of-fold predictions for the
  heads chosen by cross-validation) by minimising the log-loss, applied as
  ``p <- normalise(p ** (1 / T))`` to the view-averaged probabilities. For one view this is
  exactly ``softmax(logits / T)``; with views it is the temperature of the ensemble's
  log-probabilities. It never changes the argmax, only how sure the model says it is.
* **the decision rule**, chosen at training by ``objective`` and stored in ``model.json``:

  ========== =========== ================================================================
  objective  rule        decides
  ========== =========== ================================================================
  accuracy   argmax      the most probable class (the default)
  balanced   threshold   binary: the positive class when p(positive) reaches the threshold
                         that maximises balanced accuracy on validation
             cost        more classes: argmax of p / prior (the Bayes rule for balanced
                         accuracy, priors from the training counts)
  recall     threshold   the positive class at the threshold that reaches ``target_recall``
                         on validation (the inspection operating point)
  cost       cost        the class of least expected cost under the user's cost matrix
                         (``cost[true][decided]``)
  ========== =========== ================================================================

Where the rule decides otherwise than the argmax, the result says so (``review``) instead of
carrying two labels. numpy only: the torch-free runtime uses it too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

OBJECTIVES = ("accuracy", "balanced", "recall", "cost")
RULES = ("argmax", "threshold", "cost")


# ------------------------------------------------------------------ calibration ---------
def calibrate(probs: np.ndarray, temperature: float) -> np.ndarray:
    """``normalise(p ** (1 / T))`` row by row; ``T == 1`` returns ``probs`` unchanged."""
    probs = np.asarray(probs)
    if temperature == 1.0 or probs.size == 0:
        return probs
    logp = np.log(np.clip(probs.astype(np.float64), 1e-12, 1.0)) / float(temperature)
    logp -= logp.max(axis=-1, keepdims=True)
    p = np.exp(logp)
    return (p / p.sum(axis=-1, keepdims=True)).astype(probs.dtype, copy=False)


def _nll(probs: np.ndarray, y: np.ndarray, temperature: float) -> float:
    p = calibrate(probs.astype(np.float64), temperature)
    return float(-np.log(np.clip(p[np.arange(len(y)), y], 1e-12, 1.0)).mean())


def fit_temperature(probs: np.ndarray, y: np.ndarray, lo: float = 0.05, hi: float = 20.0) -> float:
    """The temperature that minimises the log-loss of ``probs`` on labels ``y``.

    A golden-section search over ``log T`` in ``[lo, hi]`` (the log-loss is unimodal in it);
    1.0 when there is nothing to fit (fewer than 2 classes present or under 10 images).
    """
    probs, y = np.asarray(probs, dtype=np.float64), np.asarray(y, dtype=np.int64)
    if len(y) < 10 or len(np.unique(y)) < 2 or not np.isfinite(probs).all():
        return 1.0
    a, b = np.log(lo), np.log(hi)
    g = (np.sqrt(5) - 1) / 2
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = _nll(probs, y, np.exp(c)), _nll(probs, y, np.exp(d))
    for _ in range(60):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = _nll(probs, y, np.exp(c))
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = _nll(probs, y, np.exp(d))
    t = float(np.exp((a + b) / 2))
    # Keep 1.0 unless the fit really helps: no change is better than a change within noise.
    return t if _nll(probs, y, t) < _nll(probs, y, 1.0) - 1e-6 else 1.0


def ece(probs: np.ndarray, y: np.ndarray, bins: int = 15) -> float | None:
    """Expected calibration error of the top-class confidence (equal-width bins)."""
    probs, y = np.asarray(probs, dtype=np.float64), np.asarray(y)
    if len(y) == 0:
        return None
    conf, pred = probs.max(1), probs.argmax(1)
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        m = which == b
        if m.any():
            total += m.mean() * abs(float((pred[m] == y[m]).mean()) - float(conf[m].mean()))
    return float(total)


# ------------------------------------------------------------------ the decision --------
@dataclass
class Decision:
    """How a run turns probabilities into one class (stored in ``model.json``)."""

    rule: str = "argmax"  # argmax | threshold | cost
    positive_index: int = 0
    threshold: float | None = None  # the ``threshold`` rule's cut on p(positive)
    cost: list[list[float]] | None = None  # the ``cost`` rule's matrix, cost[true][decided]

    def decide(self, probs: np.ndarray) -> np.ndarray:
        """The decided class index of every row of ``(N, C)`` probabilities."""
        probs = np.atleast_2d(np.asarray(probs, dtype=np.float64))
        if self.rule == "threshold":
            t = 0.5 if self.threshold is None else self.threshold
            rest = probs.copy()
            rest[:, self.positive_index] = -1
            return np.where(probs[:, self.positive_index] >= t, self.positive_index, rest.argmax(1))
        if self.rule == "cost" and self.cost is not None:
            return (probs @ np.asarray(self.cost, dtype=np.float64)).argmin(1)
        return probs.argmax(1)

    def describe(self, classes: list[str]) -> str:
        """One line for tables and the report: how the class is decided."""
        if self.rule == "threshold":
            return f"{classes[self.positive_index]} when p({classes[self.positive_index]}) >= {self.threshold:.3f}"
        if self.rule == "cost":
            return "least expected cost (cost matrix)"
        return "most probable class"

    def review_reason(self, probs: np.ndarray, decided: int, classes: list[str]) -> str | None:
        """Why a human should look: the rule decided otherwise than the most probable class."""
        top = int(np.argmax(probs))
        if top == decided:
            return None
        return (f"most probable is {classes[top]} (p={float(probs[top]):.3f}); the run's operating point "
                f"({self.describe(classes)}) decides {classes[decided]}")


def review_reason(decision: Decision, probs: np.ndarray, decided: int, classes: list[str],
                  margin: float = 0.1) -> str | None:
    """Why a human should look at this image, or None: the rule overrode the most probable
    class, or the image sits within ``margin`` of the decision boundary (of the threshold,
    or between the two most probable classes)."""
    reason = decision.review_reason(probs, decided, classes)
    if reason is not None or margin <= 0:
        return reason
    if decision.rule == "threshold":
        p_pos, t = float(probs[decision.positive_index]), decision.threshold
        if abs(p_pos - t) < margin:
            return f"p({classes[decision.positive_index]})={p_pos:.3f} is within {margin:g} of the threshold {t:.3f}"
        return None
    top2 = np.sort(np.asarray(probs, dtype=np.float64))[-2:]
    if (top2[1] - top2[0]) / 2 < margin:
        return f"the two most probable classes are within {2 * margin:g} of each other ({top2[1]:.3f} vs {top2[0]:.3f})"
    return None


def balanced_threshold(y: np.ndarray, score: np.ndarray, positive_index: int) -> float:
    """The cut on ``score`` (p(positive)) that maximises balanced accuracy on this data:
    the midpoint, in logit space, between the two scores where it is reached."""
    y, score = np.asarray(y), np.asarray(score, dtype=np.float64)
    pos = y == positive_index
    if pos.all() or not pos.any():
        return 0.5
    order = np.argsort(-score, kind="stable")
    s, p = score[order], pos[order]
    tpr = np.cumsum(p) / p.sum()  # flagging the top k+1
    fpr = np.cumsum(~p) / (~p).sum()
    distinct = np.r_[s[1:] < s[:-1], True]  # a cut can only fall between different scores
    j = np.where(distinct, tpr - fpr, -np.inf)
    k = int(np.argmax(j))
    upper = s[k]
    lower = s[k + 1] if k + 1 < len(s) else 0.0
    lo, up = np.clip([lower, upper], 1e-9, 1 - 1e-9)
    mid = 1 / (1 + np.exp(-(np.log(lo / (1 - lo)) + np.log(up / (1 - up))) / 2))
    return float(min(mid, upper))


def choose_decision(objective: str, probs: np.ndarray, y: np.ndarray, positive_index: int,
                    recall_threshold: float, priors: np.ndarray | None = None,
                    cost: list[list[float]] | None = None) -> Decision:
    """The run's rule for ``objective``, fitted on calibrated validation probabilities.

    Args:
        objective: One of :data:`OBJECTIVES`.
        probs: ``(N, C)`` calibrated validation probabilities (may be empty).
        y: ``(N,)`` validation labels.
        positive_index: The positive class.
        recall_threshold: The threshold at ``target_recall`` (``recall`` uses it).
        priors: Training class frequencies (``balanced`` with more than two classes).
        cost: The user's cost matrix (``cost``).
    """
    n_classes = probs.shape[1] if probs.ndim == 2 and probs.size else len(priors if priors is not None else [0, 0])
    if objective == "recall":
        return Decision("threshold", positive_index, float(recall_threshold))
    if objective == "cost":
        return Decision("cost", positive_index, None, [list(map(float, r)) for r in cost or []])
    if objective == "balanced":
        if n_classes == 2:
            t = balanced_threshold(y, probs[:, positive_index], positive_index) if len(y) else 0.5
            return Decision("threshold", positive_index, t)
        pr = np.asarray(priors if priors is not None else np.ones(n_classes), dtype=np.float64)
        pr = np.clip(pr / pr.sum(), 1e-6, None)
        matrix = [[0.0 if i == j else float(1 / pr[i]) for j in range(n_classes)] for i in range(n_classes)]
        return Decision("cost", positive_index, None, matrix)
    return Decision("argmax", positive_index)


def decision_of(card: Any) -> Decision:
    """The :class:`Decision` a model card records; cards from before it was recorded decide
    by their threshold, as they did."""
    rule = getattr(card, "decision", "threshold") or "threshold"
    t = getattr(card, "decision_threshold", None)
    return Decision(rule, card.positive_index, card.threshold if t is None else t, getattr(card, "cost_matrix", None))


def cost_matrix_problems(cost: Any, classes: list[str]) -> list[str]:
    """What is wrong with a cost matrix for these classes (empty when it is usable)."""
    n = len(classes)
    order = ", ".join(classes)
    if not isinstance(cost, list) or len(cost) != n or any(not isinstance(r, list) or len(r) != n for r in cost):
        return [f"cost_matrix must be {n}x{n} (rows: the true class, columns: the decided class, "
                f"in the order {order}); got {cost!r}"]
    flat = [v for r in cost for v in r]
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v) or v < 0 for v in flat):
        return [f"cost_matrix entries must be finite numbers >= 0; got {cost!r}"]
    if len({tuple(r) for r in cost}) == 1 and len(set(cost[0])) == 1:
        return [f"cost_matrix {cost!r} costs every decision the same; it cannot decide anything"]
    return []


def parse_cost_matrix(text: str) -> list[list[float]]:
    """``"0,1;5,0"`` (rows by ``;``, entries by ``,``) as a nested list; ValueError on junk."""
    rows = [r for r in text.replace(" ", "").split(";") if r]
    return [[float(v) for v in r.split(",")] for r in rows]


def decision_metrics(y: np.ndarray, probs: np.ndarray, decision: Decision, classes: list[str]) -> dict[str, Any]:
    """The numbers of the decisions themselves (what ``predict`` will answer): accuracy,
    balanced accuracy, the positive class's recall and precision, how often the rule
    overrode the argmax, and the confusion matrix (rows: true, columns: decided)."""
    y = np.asarray(y, dtype=np.int64)
    n_classes = len(classes)
    decided = decision.decide(probs) if len(y) else np.zeros(0, dtype=np.int64)
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (y, decided), 1)
    rows = cm.sum(1)
    pos = decision.positive_index
    flagged = cm[:, pos].sum()
    return {
        "rule": decision.rule, "described": decision.describe(classes),
        "accuracy": float(np.trace(cm) / len(y)) if len(y) else None,
        "balanced_accuracy": float(np.mean(np.diag(cm)[rows > 0] / rows[rows > 0])) if len(y) else None,
        "recall_positive": float(cm[pos, pos] / rows[pos]) if rows[pos] else None,
        "precision_positive": float(cm[pos, pos] / flagged) if flagged else None,
        "overrides_argmax": int((decided != np.asarray(probs).argmax(1)).sum()) if len(y) else 0,
        "confusion_matrix": {"labels": list(classes), "matrix": cm.tolist()},
    }
