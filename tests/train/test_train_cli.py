"""End to end through the CLI: each approach trains on a generated set and beats chance on
held-out images by a stated margin; evaluate and predict read the run folder alone."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from inspectnet import load_model
from inspectnet.cli import app
from inspectnet.config import TrainConfig
from inspectnet.errors import ConfigError

from conftest import make_toy_set

runner = CliRunner()
# Chance is 50% on the balanced toy set; every approach must clear it by 30 points on test.
MARGIN = 0.30


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_toy_set(tmp_path_factory.mktemp("e2e") / "data", n_per_class=60, size=48, seed=3)


def _train(args: list[str]) -> None:
    res = runner.invoke(app, ["train", *args, "--quiet"])
    assert res.exit_code == 0, res.output + repr(res.exception)


@pytest.fixture(scope="module")
def runs(data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    _train([str(data), "--approach", "scratch", "--model", "seed-cnn", "--img-size", "48", "--epochs", "25",
            "--lr", "3e-3", "--patience", "0", "--out", str(root / "scratch")])
    _train([str(data), "--approach", "features", "--model", "efficientnet_lite0", "--img-size", "64",
            "--out", str(root / "features")])
    _train([str(data), "--approach", "finetune", "--model", "efficientnet_lite0", "--img-size", "64",
            "--epochs", "2", "--out", str(root / "finetune")])
    return {k: root / k for k in ("scratch", "features", "finetune")}


@pytest.mark.parametrize("approach", ["scratch", "features", "finetune"])
def test_each_approach_beats_chance_on_test(runs: dict[str, Path], approach: str) -> None:
    m = json.loads((runs[approach] / "metrics.json").read_text())
    assert m["split"] == "test" and m["n"] == 18
    assert m["accuracy"] >= 0.5 + MARGIN, m
    assert m["balanced_accuracy"] >= 0.5 + MARGIN
    for key in ("macro_f1", "precision_positive", "recall_positive", "f1_positive", "roc_auc", "pr_auc",
                "per_class", "confusion_matrix", "at_threshold"):
        assert key in m
    assert m["confusion_matrix"]["labels"] == ["damaged", "intact"]
    assert np.array(m["confusion_matrix"]["matrix"]).sum() == 18


@pytest.mark.parametrize("approach", ["scratch", "features", "finetune"])
def test_run_folder_is_self_describing(runs: dict[str, Path], approach: str) -> None:
    run = runs[approach]
    for f in ("config.yaml", "split.csv", "metrics.json", "model/weights.safetensors", "model/model.json"):
        assert (run / f).is_file(), f
    card = json.loads((run / "model" / "model.json").read_text())
    assert card["classes"] == ["damaged", "intact"] and card["positive_class"] == "damaged"
    assert 0 < card["threshold"] < 1
    cfg = TrainConfig.load(run / "config.yaml")
    assert cfg.approach == approach and cfg.img_size == card["img_size"]
    assert cfg.precision in ("32", "bf16")  # "auto" is resolved, so the file says what ran
    if approach == "finetune":
        assert cfg.unfreeze == 5  # Lite0: stem and the stride-2/4 stages stay frozen
    assert not list(run.rglob("*.pkl"))


def test_finetune_never_ends_worse_than_features_on_validation(runs: dict[str, Path]) -> None:
    # Same data, split, size and views: finetune measures the features approach's model on
    # validation and keeps it when fine-tuning cannot beat it, and says which way it went.
    feat = json.loads((runs["features"] / "metrics.json").read_text())
    fine = json.loads((runs["finetune"] / "metrics.json").read_text())
    assert fine["validation"]["log_loss"] <= feat["validation"]["log_loss"] + 1e-3, (fine["notes"], feat["notes"])
    assert any("features approach's model" in n for n in fine["notes"]), fine["notes"]
    card = json.loads((runs["finetune"] / "model" / "model.json").read_text())
    assert TrainConfig.load(runs["finetune"] / "config.yaml").pool == card["pool"]
    if card["pool"] != "avg":  # ended on the features model: compare shows why under its table
        assert "features approach's model" in fine["fallback"]


def test_bundle_round_trips_bit_exactly(runs: dict[str, Path]) -> None:
    for run in runs.values():
        a, b = load_model(run), load_model(run)
        x = torch.rand(4, 3, a.card.img_size, a.card.img_size)
        with torch.no_grad():
            assert torch.equal(a.network(x), b.network(x))
        for (ka, va), (kb, vb) in zip(a.network.state_dict().items(), b.network.state_dict().items()):
            assert ka == kb and torch.equal(va, vb)


def test_evaluate_reproduces_train_metrics(runs: dict[str, Path]) -> None:
    run = runs["features"]
    before = json.loads((run / "metrics.json").read_text())
    res = runner.invoke(app, ["evaluate", str(run)])
    assert res.exit_code == 0, res.output
    after = json.loads((run / "metrics.json").read_text())
    assert after["accuracy"] == pytest.approx(before["accuracy"])
    assert after["roc_auc"] == pytest.approx(before["roc_auc"])


@pytest.mark.parametrize("fmt", ["table", "json", "csv"])
def test_predict_files_folders_globs(runs: dict[str, Path], data: Path, fmt: str) -> None:
    res = runner.invoke(app, ["predict", str(runs["features"]), str(data / "damaged" / "damaged_000.png"),
                              str(data / "intact"), str(data / "damaged" / "damaged_01*.png"), "--format", fmt])
    assert res.exit_code == 0, res.output
    if fmt == "json":
        rows = [json.loads(line) for line in res.output.splitlines() if line.startswith("{")]
        assert len(rows) == 1 + 60 + 10
        verdicts = [r["verdict"] for r in rows]
        assert verdicts[0] == "damaged"
        assert sum(v == "intact" for v in verdicts[1:61]) >= 50  # the intact folder
    elif fmt == "csv":
        assert res.stdout.splitlines()[0].startswith("path,verdict,probability,p_damaged,review_reason,error")
        assert len(res.stdout.strip().splitlines()) == 72  # stderr has the summary line
    else:
        assert "71 inspected" in res.output


def test_config_round_trip_and_unknown_key(tmp_path: Path, runs: dict[str, Path]) -> None:
    cfg = TrainConfig.load(runs["scratch"] / "config.yaml")
    cfg.save(tmp_path / "c.yaml")
    assert TrainConfig.load(tmp_path / "c.yaml") == cfg
    d = yaml.safe_load((tmp_path / "c.yaml").read_text())
    d["learning_rate"] = 0.1
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(d))
    with pytest.raises(ConfigError, match="unknown config key.*learning_rate"):
        TrainConfig.load(tmp_path / "bad.yaml")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--approach", "magic"], "approach='magic' is not allowed; choose one of scratch, features, finetune"),
        (["--model", "no_such_net"], "unknown model 'no_such_net'"),
        (["--optimizer", "rmsprop"], "optimizer='rmsprop' is not allowed"),
        (["--precision", "fp16"], "precision='fp16' is not allowed; choose one of auto, 32, bf16"),
    ],
)
def test_bad_options_are_one_line_errors(data: Path, tmp_path: Path, args: list[str], message: str) -> None:
    res = runner.invoke(app, ["train", str(data), "--out", str(tmp_path / "r"), "--quiet", *args])
    assert res.exit_code == 2
    assert message in res.output and "Traceback" not in res.output


def test_summary_prints_keras_style_table() -> None:
    res = runner.invoke(app, ["summary", "--model", "seed-cnn", "--img-size", "180"])
    assert res.exit_code == 0
    assert "backbone.features.0" in res.output and "(1, 16, 180, 180)" in res.output
    assert "Total params: 3,988,898" in res.output
    # The scratch approach's default head: global average + max pooling instead of Flatten.
    res = runner.invoke(app, ["summary", "--model", "seed-cnn", "--img-size", "128", "--pool", "catavgmax"])
    assert res.exit_code == 0 and "(1, 128, 1, 1)" in res.output and "Total params: 40,354" in res.output


def test_missing_data_path_is_clear(tmp_path: Path) -> None:
    res = runner.invoke(app, ["train", str(tmp_path / "nope"), "--quiet"])
    assert res.exit_code == 2 and "does not exist" in res.output


def test_features_pool_auto_falls_back_where_the_backbone_has_no_block_list(tmp_path: Path) -> None:
    from inspectnet.train.run import train

    data = make_toy_set(tmp_path / "data", n_per_class=10, size=32)
    lite = train(data, out=tmp_path / "lite", approach="features", model="efficientnet_lite0", img_size=32,
                 weights="none", quiet=True)
    res = train(data, out=tmp_path / "resnet", approach="features", model="resnet18", img_size=32,
                weights="none", quiet=True)
    # Lite0 has a block list to tap; ResNet has none, so auto settles on average+max of its last map.
    assert lite.config.pool == "catavgmax-mid" and res.config.pool == "catavgmax"
    assert yaml.safe_load((tmp_path / "resnet" / "config.yaml").read_text())["pool"] == "catavgmax"
    assert load_model(tmp_path / "resnet").card.pool == "catavgmax"


def test_finetune_joint_stage_trains_only_the_top_blocks_and_the_head(data: Path, tmp_path: Path, monkeypatch) -> None:
    # The head stage also fits the features model from the same extraction; the fine-tuned
    # network must still enter step 5 with its stem and stride-2/4 stages frozen.
    from inspectnet.train import loop
    from inspectnet.train.run import train

    seen: list[set[str]] = []
    orig = loop.lightning_fit

    def spy(ctx, network, *a, **kw):  # noqa: ANN001, ANN002, ANN003
        seen.append({n for n, p in network.named_parameters() if p.requires_grad})
        return orig(ctx, network, *a, **kw)

    monkeypatch.setattr(loop, "lightning_fit", spy)
    train(data, out=tmp_path / "ft", approach="finetune", model="efficientnet_lite0", img_size=64, epochs=1,
          quiet=True)
    (trainable,) = seen
    assert not any(n.startswith(("backbone.conv_stem", "backbone.bn1", "backbone.blocks.0.", "backbone.blocks.1."))
                   for n in trainable), sorted(trainable)[:5]
    assert any(n.startswith("backbone.blocks.6.") for n in trainable)
    assert any(n.startswith("backbone.classifier") for n in trainable)


def test_overwrite_keeps_the_old_run_whole_until_the_new_one_is_complete(toy_data: Path, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from inspectnet import train
    from inspectnet.train import finish

    out = tmp_path / "run"
    args = dict(approach="features", img_size=48, tta_views=1, cv_folds=0, out=out, quiet=True)
    train(toy_data, **args)
    with pytest.raises(ConfigError, match="already holds a run.*--overwrite"):
        train(toy_data, **args)
    old = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}

    def crash(*a: object, **k: object) -> None:
        raise RuntimeError("power cut while writing the bundle")

    monkeypatch.setattr(finish, "save_bundle", crash)
    with pytest.raises(RuntimeError, match="power cut"):
        train(toy_data, overwrite=True, **{**args, "seed": 1})
    # The replaced run is all there, byte for byte, beside the new run's partial files.
    kept = {p.relative_to(out / "previous-run"): p.read_bytes() for p in (out / "previous-run").rglob("*") if p.is_file()}
    assert kept == old and not (out / "model" / "model.json").exists()
    monkeypatch.undo()
    res = train(toy_data, overwrite=True, **{**args, "seed": 1})
    assert not (out / "previous-run").exists() and res.config.seed == 1
    assert json.loads((out / "model" / "model.json").read_text())["weights_sha256"] != \
        json.loads(old[Path("model/model.json")])["weights_sha256"]


def _event_tags(path: Path) -> dict[str, int]:
    """Scalar tags in a TensorBoard event file and how many values each has (TFRecord frames)."""
    import struct

    from tensorboardX.proto import event_pb2

    tags: dict[str, int] = {}
    data = path.read_bytes()
    pos = 0
    while pos + 12 <= len(data):
        (n,) = struct.unpack("<Q", data[pos : pos + 8])
        ev = event_pb2.Event.FromString(data[pos + 12 : pos + 12 + n])
        for v in ev.summary.value:
            tags[v.tag] = tags.get(v.tag, 0) + 1
        pos += 12 + n + 4
    return tags


@pytest.mark.parametrize("logger", ["csv", "tensorboard"])
def test_logger_holds_every_epochs_metrics(toy_data: Path, tmp_path: Path, logger: str) -> None:
    import csv

    out = tmp_path / "run"
    res = runner.invoke(app, ["train", str(toy_data), "--approach", "scratch", "--model", "seed-cnn", "--img-size", "32",
                              "--epochs", "2", "--patience", "0", "--out", str(out), "--quiet", "--logger", logger])
    assert res.exit_code == 0, res.output
    assert (out / "history.csv").is_file()  # whatever the logger
    if logger == "csv":
        rows = list(csv.DictReader((out / "logs" / "scratch" / "version_0" / "metrics.csv").open()))
        epochs = {r["epoch"] for r in rows if r.get("val_loss")}
        assert epochs == {"0", "1"} and all(float(r["val_loss"]) > 0 for r in rows if r.get("val_loss"))
    else:
        (events,) = (out / "logs" / "scratch" / "version_0").glob("events.out.tfevents.*")
        tags = _event_tags(events)
        assert tags.get("val_loss") == 2 and tags.get("train_acc") == 2, tags
    assert yaml.safe_load((out / "config.yaml").read_text())["logger"] == logger


def test_an_unknown_logger_is_a_usage_error(toy_data: Path, tmp_path: Path) -> None:
    res = runner.invoke(app, ["train", str(toy_data), "--logger", "wandb", "--out", str(tmp_path / "r")])
    assert res.exit_code == 2 and "logger='wandb' is not allowed; choose one of csv, tensorboard, mlflow, none" in res.output
