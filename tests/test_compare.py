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
    assert [r["approach"] for r in rows] == ["scratch", "features", "finetune", "auto"]
    assert [r["model"] for r in rows] == ["seed-cnn"] + ["efficientnet_lite0"] * 3
    for r in rows:
        assert KEYS <= set(r)
        assert 0 <= r["accuracy"] <= 1 and r["train_seconds"] >= 0
        assert (Path(r["run_dir"]) / "model" / "model.json").is_file()
        # The synthetic set has damage masks, so each row says whether Grad-CAM finds the damage.
        assert r["pointing_game"] is None or 0 <= r["pointing_game"] <= 1
        assert r["pointing_game_layercam"] is None or 0 <= r["pointing_game_layercam"] <= 1
    md = (compared / "compare.md").read_text()
    assert md.count("\n| ") == 4 and "| finetune | efficientnet_lite0 |" in md
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
