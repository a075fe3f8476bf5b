"""``auto``: features first, then fine-tuning within the budget; validation keeps the better."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from inspectnet.train.run import train


def test_auto_keeps_the_better_model_on_validation_and_says_which(toy_data: Path, tmp_path: Path) -> None:
    res = train(toy_data, out=tmp_path / "auto", approach="auto", model="efficientnet_lite0", img_size=32, epochs=1,
                quiet=True)
    notes = " ".join(res.metrics["notes"])
    assert "5-fold cross-validation on" in notes  # the features model, fitted first
    assert ("fine-tuned model beat the features approach's model" in notes) != (res.metrics["fallback"] is not None)
    cfg = yaml.safe_load((tmp_path / "auto" / "config.yaml").read_text())
    assert cfg["approach"] == "auto" and cfg["cv_folds"] == 5
    if res.metrics["fallback"]:  # the features model: its head on train+val, threshold out of fold
        assert cfg["pool"] != "avg" and res.metrics["validation"]["split"].startswith("cv5")
    assert res.metrics["accuracy"] > 0.75  # the toy set is easy; chance is 0.5


def test_features_chooses_its_head_by_cross_validation_and_refits_on_train_and_val(toy_data: Path,
                                                                                   tmp_path: Path) -> None:
    res = train(toy_data, out=tmp_path / "f", approach="features", model="efficientnet_lite0", img_size=32,
                quiet=True)
    m = json.loads((tmp_path / "f" / "metrics.json").read_text())
    n_fit = m["counts"]["train"]["damaged"] + m["counts"]["train"]["intact"] + m["counts"]["val"]["damaged"] + \
        m["counts"]["val"]["intact"]
    assert m["validation"]["split"].startswith("cv5") and m["validation"]["n"] == n_fit
    assert "5-fold cross-validation" in m["notes"][0]
    assert res.metrics["accuracy"] > 0.75
    # cv_folds=0: the head as before, its L2 chosen on the validation split alone.
    old = train(toy_data, out=tmp_path / "v", approach="features", model="efficientnet_lite0", img_size=32,
                cv_folds=0, quiet=True)
    assert old.metrics["validation"]["split"] == "val" and "chosen on validation" in old.metrics["notes"][0]


def test_auto_keeps_the_features_model_when_nothing_was_fine_tuned(toy_data: Path, tmp_path: Path,
                                                                    monkeypatch) -> None:
    """When joint fine-tuning falls back to the head-only weights, both candidates are heads on the
    frozen base; the one whose L2 was chosen on the validation images must not win on them."""
    from inspectnet.train import loop

    real_fit = loop.lightning_fit

    def no_better(ctx, network, stage):  # joint fine-tuning that never beats the head
        res = real_fit(ctx, network, stage)
        res.best_val_loss = float("inf")
        return res

    monkeypatch.setattr(loop, "lightning_fit", no_better)
    res = train(toy_data, out=tmp_path / "auto", approach="auto", model="efficientnet_lite0", img_size=32, epochs=1,
                quiet=True)
    notes = " ".join(res.metrics["notes"])
    assert "joint fine-tuning did not beat the head-only model" in notes
    assert "keeping the features approach's" in res.metrics["fallback"]
    assert res.metrics["validation"]["split"].startswith("cv5")  # the features model, fitted on train+val
