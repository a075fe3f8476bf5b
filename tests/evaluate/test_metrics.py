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
