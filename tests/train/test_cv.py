"""``inspectnet train --cv K``: K runs of the whole recipe, every image tested once, groups kept whole."""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path

import pytest
from conftest import make_toy_set
from typer.testing import CliRunner

from inspectnet.cli import app


def _grouped_manifest(root: Path) -> Path:
    """The toy set as a manifest; images i and i+1 of a class are "one part" (a group)."""
    data = make_toy_set(root / "data", n_per_class=12, size=32)
    rows = ["path,label,group"]
    for p in sorted(data.rglob("*.png")):
        label, i = p.parent.name, int(p.stem.rsplit("_", 1)[1])
        rows.append(f"{p.relative_to(data)},{label},{label}-{i // 2}")
    (data / "manifest.csv").write_text("\n".join(rows) + "\n")
    return data / "manifest.csv"


def test_cv_trains_one_run_per_fold_and_reports_mean_std_and_pooled_intervals(tmp_path: Path) -> None:
    manifest = _grouped_manifest(tmp_path)
    out = tmp_path / "cv"
    args = ["train", str(manifest), "--cv", "2", "--approach", "features", "--model", "efficientnet_lite0",
            "--img-size", "32", "--tta-views", "1", "--cv-folds", "0", "--out", str(out), "-q"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert "mean ± std" in res.output and "pooled" in res.output and "cv.json" in res.output

    cv = json.loads((out / "cv.json").read_text())
    assert cv["k"] == 2 and [r["fold"] for r in cv["folds"]] == [1, 2] and cv["positive_class"] == "damaged"
    for r in cv["folds"]:
        assert (Path(r["run_dir"]) / "model" / "model.json").is_file() and r["n"] == 12
    for key in ("accuracy", "balanced_accuracy", "recall_positive", "roc_auc"):
        vals = [r[key] for r in cv["folds"]]
        assert cv["summary"][key]["mean"] == pytest.approx(sum(vals) / 2)
        assert cv["summary"][key]["std"] == pytest.approx(abs(vals[0] - vals[1]) / 2 ** 0.5)
    pooled = cv["pooled"]
    assert pooled["n"] == 24 and pooled["positives"] == 12
    lo, hi = pooled["accuracy_ci95"]
    assert lo <= pooled["accuracy"] <= hi and lo < hi

    # Every image tested exactly once; a group never split, across the folds or inside one.
    tested: dict[str, int] = defaultdict(int)
    for i in (1, 2):
        with (out / f"fold-{i}" / "split.csv").open() as f:
            rows = list(csv.DictReader(f))
        by_group: dict[str, set[str]] = defaultdict(set)
        for row in rows:
            by_group[row["group"]].add(row["split"])
            tested[row["path"]] += row["split"] == "test"
        assert all(len(s) == 1 for s in by_group.values())
        assert {row["split"] for row in rows} == {"train", "val", "test"}
    assert len(tested) == 24 and set(tested.values()) == {1}

    res = CliRunner().invoke(app, args)  # a finished cross-validation is not replaced unasked
    assert res.exit_code == 2 and "--overwrite" in res.output


def test_cv_refuses_more_folds_than_a_class_has_groups(tmp_path: Path) -> None:
    manifest = _grouped_manifest(tmp_path)  # 6 groups a class
    res = CliRunner().invoke(app, ["train", str(manifest), "--cv", "7", "--out", str(tmp_path / "cv"), "-q"])
    assert res.exit_code == 1 and "fewer than 7" in res.output
    res = CliRunner().invoke(app, ["train", str(manifest), "--cv", "1", "--out", str(tmp_path / "cv"), "-q"])
    assert res.exit_code == 2 and "2 to 20 folds" in res.output
