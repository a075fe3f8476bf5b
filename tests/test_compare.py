"""``compare`` end to end on a tiny synthetic insert set: one table, a run per approach, one split."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from inspectnet.cli import app
from inspectnet.synth import generate

KEYS = {"approach", "model", "accuracy", "balanced_accuracy", "f1_positive", "recall_positive", "roc_auc",
        "train_seconds", "run_dir"}


@pytest.fixture(scope="module")
def compared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cmp")
    data = generate(root / "data", n=48, seed=0, difficulty="easy", size=64, progress=False)
    res = CliRunner().invoke(app, ["compare", str(data), "--out", str(root / "runs"), "--scratch-epochs", "2",
                                   "--finetune-epochs", "1", "--img-size", "64", "--quiet"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert "inspectnet compare" in res.output and "finetune" in res.output
    return root / "runs"


def test_compare_writes_one_row_per_approach(compared: Path) -> None:
    rows = json.loads((compared / "compare.json").read_text())
    # Every registered approach, from the registry; the course's order first.
    assert [r["approach"] for r in rows] == ["scratch", "features", "finetune", "anomaly", "auto"]
    assert [r["model"] for r in rows] == ["seed-cnn", "efficientnet_lite0", "efficientnet_lite0",
                                          "patchcore-efficientnet_lite0", "efficientnet_lite0"]
    for r in rows:
        assert KEYS <= set(r)
        assert 0 <= r["accuracy"] <= 1 and r["train_seconds"] >= 0
        assert (Path(r["run_dir"]) / "model" / "model.json").is_file()
        # The synthetic set has damage masks, so each row says whether Grad-CAM finds the damage.
        assert r["pointing_game"] is None or 0 <= r["pointing_game"] <= 1
        assert r["pointing_game_layercam"] is None or 0 <= r["pointing_game_layercam"] <= 1
    md = (compared / "compare.md").read_text()
    assert md.count("\n| ") == 5 and "| finetune | efficientnet_lite0 |" in md
    assert (compared / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_every_approach_saw_the_same_split(compared: Path) -> None:
    def split(run: str) -> list[tuple[str, str]]:
        with (compared / run / "split.csv").open() as f:
            return sorted((r["path"], r["split"]) for r in csv.DictReader(f))

    assert split("scratch") == split("features") == split("finetune")


def test_a_finetune_fallback_is_said_under_the_table(compared: Path) -> None:
    from rich.console import Console

    from inspectnet.compare import rows_markdown, rows_table

    rows = json.loads((compared / "compare.json").read_text())
    for r in rows:
        r["note"] = None
    ft = next(r for r in rows if r["approach"] == "finetune")
    ft["note"] = "the features approach's model beat fine-tuning on validation; keeping it"
    md = rows_markdown(rows)
    assert md.count("\n| ") == len(rows) and md.rstrip().endswith(f"finetune: {ft['note']}")
    con = Console(width=200, record=True)
    con.print(rows_table(rows))
    assert ft["note"] in con.export_text()


def test_the_table_shows_accuracy_and_recall_with_their_wilson_intervals() -> None:
    from rich.console import Console

    from inspectnet.compare import rows_markdown, rows_table

    row = {"approach": "features", "model": "efficientnet_lite0", "params_trainable": 2562, "params_total": 3_400_000,
           "epochs": 0, "train_seconds": 3.0, "accuracy": 0.912, "accuracy_ci95": [0.88, 0.936],
           "balanced_accuracy": 0.9, "f1_positive": 0.9, "recall_positive": 0.95, "recall_positive_ci95": [0.9, 0.975],
           "roc_auc": 0.97, "run_dir": "r"}
    old = {**row, "approach": "scratch", "accuracy_ci95": None, "recall_positive_ci95": None}  # a run from before
    con = Console(width=250, record=True)
    con.print(rows_table([row, old]))
    text = con.export_text()
    assert "91.2% [88.0–93.6]" in text and "0.950 [0.900–0.975]" in text and "Wilson" in text
    md = rows_markdown([row, old])
    assert "| 91.2% [88.0–93.6] |" in md and "| 91.2% | 90.0% |" in md
