"""Metrics and the inspection threshold: the numbers every report and bundle carry."""

from __future__ import annotations

import numpy as np
import pytest

from inspectnet.evaluate.metrics import compute_metrics, metrics_at_threshold, pick_positive, threshold_for_recall


@pytest.mark.parametrize("target", [0.5, 0.9, 0.95, 0.99, 1.0])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_threshold_reaches_target_recall_on_its_own_data(target: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 300)
    # Overlapping scores, so the target is not reached for free.
    score = np.clip(rng.normal(0.35 + 0.3 * (y == 0), 0.2), 0, 1)
    t = threshold_for_recall(y, score, positive_index=0, target_recall=target)
    at = metrics_at_threshold(y, score, 0, t)
    assert at["recall_positive"] >= target
    # And it is the tightest such threshold up to the gap to the next score: raising it to
    # the next positive score would drop below the target (unless recall is already 1 there).
    pos = np.sort(score[y == 0])
    higher = pos[pos > t]
    if len(higher) and target < 1:
        assert metrics_at_threshold(y, score, 0, float(higher[0]) + 1e-12)["recall_positive"] < target


def test_metrics_schema_and_values() -> None:
    classes = ["damaged", "intact"]
    y = np.array([0, 0, 0, 1, 1, 1, 1, 1])
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.2, 0.8], [0.1, 0.9], [0.6, 0.4], [0.4, 0.6],
                      [0.2, 0.8]])
    m = compute_metrics(y, probs, classes, "damaged")
    assert m["accuracy"] == pytest.approx(6 / 8)
    assert m["recall_positive"] == pytest.approx(2 / 3)
    assert m["precision_positive"] == pytest.approx(2 / 3)
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 4 / 5) / 2)
    assert m["confusion_matrix"] == {"labels": classes, "matrix": [[2, 1], [1, 4]]}
    assert set(m["per_class"]) == set(classes)


def test_positive_class_rules() -> None:
    assert pick_positive(["damaged", "intact"]) == "damaged"
    assert pick_positive(["good", "Defective"]) == "Defective"
    assert pick_positive(["a", "b", "c"], {"a": 10, "b": 3, "c": 7}) == "b"
    from inspectnet.errors import ConfigError

    with pytest.raises(ConfigError, match="positive class 'x' is not one of the classes a, b"):
        pick_positive(["a", "b"], requested="x")


def test_metrics_json_is_strict_json_where_a_metric_is_undefined(tmp_path) -> None:
    import json

    from inspectnet.io import atomic_write_json

    classes = ["damaged", "intact"]
    y = np.array([1, 1, 1])  # no damaged part in this split: ROC-AUC and recall are undefined
    probs = np.array([[0.2, 0.8], [0.1, 0.9], [0.6, 0.4]])
    m = compute_metrics(y, probs, classes, "damaged")
    m["at_threshold"] = metrics_at_threshold(y, probs[:, 0], 0, 0.5)
    m["calibration_gap"] = float("nan")  # whatever a metric leaves undefined
    m["scores"] = np.array([0.5, np.inf])
    path = atomic_write_json(tmp_path / "metrics.json", m)
    back = json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"{c} is not JSON"))
    assert back["roc_auc"] is None and back["calibration_gap"] is None and back["scores"] == [0.5, None]
    assert back["accuracy"] == pytest.approx(2 / 3)


# ------------------------------------------------------------------ 95% Wilson intervals

@pytest.mark.parametrize(("k", "n", "lo", "hi"), [
    (8, 10, 0.4902, 0.9433),  # the textbook example
    (0, 10, 0.0, 0.2775),  # no success: the interval still has width
    (10, 10, 0.7225, 1.0),  # all right is not "100% sure"
    (50, 100, 0.4038, 0.5962),
    (1, 1, 0.2065, 1.0),
])
def test_wilson_interval_known_values(k: int, n: int, lo: float, hi: float) -> None:
    from inspectnet.evaluate.metrics import wilson_interval

    got = wilson_interval(k, n)
    assert got == pytest.approx((lo, hi), abs=1e-4)
    assert 0.0 <= got[0] <= k / n <= got[1] <= 1.0


def test_wilson_interval_of_nothing_is_none_not_nan() -> None:
    from inspectnet.evaluate.metrics import ci95, pct_ci, wilson_interval

    assert wilson_interval(0, 0) is None and ci95(0, 0) is None
    assert pct_ci(None, None) == "-" and pct_ci(float("nan"), None) == "-"
    assert pct_ci(0.912, [0.88, 0.936]) == "91.2% [88.0–93.6]"
    lo, hi = wilson_interval(8, 10, z=2.576)  # 99%: wider than 95%
    assert lo < 0.4902 and hi > 0.9433


def test_metrics_carry_intervals_on_accuracy_and_positive_recall() -> None:
    import json

    from inspectnet.cli import metrics_table
    from inspectnet.evaluate.metrics import wilson_interval
    from inspectnet.evaluate.run import full_metrics

    classes = ["damaged", "intact"]
    y = np.array([0] * 5 + [1] * 5)
    probs = np.array([[0.9, 0.1]] * 4 + [[0.2, 0.8]] + [[0.1, 0.9]] * 4 + [[0.7, 0.3]])
    m = full_metrics(y, probs, classes, "damaged", 0.5, "test")
    assert m["accuracy"] == 0.8 and m["accuracy_ci95"] == pytest.approx(wilson_interval(8, 10), abs=1e-6)
    assert m["recall_positive_ci95"] == pytest.approx(wilson_interval(4, 5), abs=1e-6)
    assert m["at_threshold"]["recall_positive_ci95"] == pytest.approx(wilson_interval(4, 5), abs=1e-6)
    json.dumps(m, allow_nan=False)  # plain lists, no NaN
    # a split without the positive class: no recall, so no interval (and no NaN)
    none = full_metrics(np.array([1, 1]), np.array([[0.2, 0.8], [0.6, 0.4]]), classes, "damaged", 0.5, "test")
    assert none["recall_positive_ci95"] is None and none["at_threshold"]["recall_positive_ci95"] is None
    assert none["accuracy_ci95"] == pytest.approx(wilson_interval(1, 2), abs=1e-6)

    from rich.console import Console

    con = Console(width=120, record=True)
    con.print(metrics_table(m, "t"))
    text = con.export_text()
    assert "0.8000  [0.490–0.943]" in text and "[lo–hi]: 95% Wilson interval" in text
