"""ONNX export, the ONNX Runtime predictor, and `inspectnet predict` at scale
(--engine, --output, --resume, --shard, --cam)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from conftest_serve import lite_run, seed_run, toy_images  # noqa: F401 - fixtures
from inspectnet.bundle import load_model
from inspectnet.cli import app
from inspectnet.errors import ConfigError, ModelError
from inspectnet.export import export_onnx
from inspectnet.predict import (
    OnnxPredictor,
    Predictor,
    expand_inputs,
    make_predictor,
    parse_shard,
    resolve_engine,
    shard_paths,
)

runner = CliRunner()


def _images(factory: pytest.TempPathFactory) -> list[Path]:
    return expand_inputs([toy_images(factory)])


@pytest.mark.parametrize("run_fixture", ["seed_run", "lite_run"])
def test_onnx_logits_match_torch(run_fixture: str, request: pytest.FixtureRequest,
                                 tmp_path_factory: pytest.TempPathFactory) -> None:
    run = request.getfixturevalue(run_fixture)
    card = json.loads((run / "model" / "model.json").read_text())
    assert card["onnx"]["file"] == "model.onnx" and card["onnx"]["opset"] == 17
    assert card["onnx"]["input"]["name"] == "image"
    assert (run / "model" / "model.onnx").is_file()

    torch_pred = Predictor(run)
    onnx_pred = OnnxPredictor(run)
    s = torch_pred.img_size
    from inspectnet.data.decode import load_resized

    imgs = torch.stack([load_resized(p, s) for p in _images(tmp_path_factory)[:32]])
    assert imgs.shape[0] == 32
    x = imgs.float() / 255
    with torch.no_grad():
        ref = load_model(run).network(x).numpy()
    got = onnx_pred.logits(x.numpy())  # dynamic batch: 32 although exported with 2
    assert got.shape == ref.shape
    # 1e-4, relative to the logit's size once it exceeds 1: float32 sums over a deep net
    # (ORT folds BatchNorm into the convs) drift by ~1e-5 per unit of logit.
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)
    p_onnx, p_torch = onnx_pred.predict_batch(imgs), torch_pred.predict_batch(imgs)
    assert np.abs(p_onnx - p_torch).max() < 1e-5


def test_engines_agree_and_auto_prefers_onnx(seed_run: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    paths = _images(tmp_path_factory)[:20]
    auto = make_predictor(seed_run)
    torch_pred = make_predictor(seed_run, engine="torch")
    assert (auto.engine, torch_pred.engine) == ("onnx", "torch")
    a = list(auto.predict_paths(paths, batch_size=7))
    b = list(torch_pred.predict_paths(paths, batch_size=7))
    assert [r["path"] for r in a] == [str(p) for p in paths]
    for ra, rb in zip(a, b):
        assert ra["verdict"] == rb["verdict"] and ra["class"] == rb["class"]
        assert abs(ra["probability"] - rb["probability"]) < 1e-4
    assert auto.card.img_size == auto.img_size == torch_pred.img_size


def test_onnx_engine_refuses_gradcam(seed_run: Path) -> None:
    pred = OnnxPredictor(seed_run)
    assert not pred.can_explain
    with pytest.raises(ModelError, match="Grad-CAM needs the torch engine"):
        pred.cams(torch.zeros(1, 3, 48, 48, dtype=torch.uint8))
    cams = Predictor(seed_run).cams(torch.zeros(2, 3, 48, 48, dtype=torch.uint8))
    assert cams.shape == (2, 48, 48) and cams.min() >= 0 and cams.max() <= 1


def test_stale_or_missing_onnx(seed_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(seed_run, run)
    mj = run / "model" / "model.json"
    raw = json.loads(mj.read_text())
    raw["onnx"]["weights_sha256"] = "0" * 64  # as if the run were retrained after the export
    mj.write_text(json.dumps(raw))
    assert resolve_engine(run) == "torch"
    with pytest.raises(ModelError, match="exported from other weights"):
        OnnxPredictor(run)
    (run / "model" / "model.onnx").unlink()
    with pytest.raises(ModelError, match="model.onnx is missing; run `inspectnet export"):
        make_predictor(run, engine="onnx")
    with pytest.raises(ConfigError, match="--engine 'gpu': choose one of auto, torch, onnx"):
        make_predictor(run, engine="gpu")


def test_export_cli(seed_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(seed_run, run, ignore=shutil.ignore_patterns("model.onnx"))
    r = runner.invoke(app, ["export", str(run), "--format", "onnx"])
    assert r.exit_code == 0, r.output
    assert "model.onnx" in r.output and (run / "model" / "model.onnx").is_file()
    r = runner.invoke(app, ["export", str(run), "--format", "tflite"])
    assert r.exit_code != 0 and "only onnx" in r.output
    r = runner.invoke(app, ["export", str(tmp_path / "nope")])
    assert r.exit_code == 2 and "not a run folder" in r.output


def test_shard_spec() -> None:
    assert parse_shard("2/3") == (2, 3) and parse_shard(None) is None
    for bad in ("0/3", "4/3", "a/b", "3", "1/0"):
        with pytest.raises(ConfigError, match="--shard"):
            parse_shard(bad)
    paths = [Path(f"{c}.png") for c in "edcba"]
    assert shard_paths(paths, None) == paths  # no shard: order as given
    parts = [shard_paths(paths, (i, 2)) for i in (1, 2)]
    assert parts == [[Path("a.png"), Path("c.png"), Path("e.png")], [Path("b.png"), Path("d.png")]]


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_predict_output_resume_and_shards(seed_run: Path, tmp_path_factory: pytest.TempPathFactory,
                                          tmp_path: Path) -> None:
    data = toy_images(tmp_path_factory)
    n_all = len(_images(tmp_path_factory))
    (tmp_path / "bad.png").write_bytes(b"not a png")  # one unreadable file: a row with its error
    inputs = [str(data), str(tmp_path / "bad.png")]

    full = tmp_path / "full.csv"
    r = runner.invoke(app, ["predict", str(seed_run), *inputs, "--skip-bad", "--output", str(full)])
    assert r.exit_code == 0, r.output
    rows = _csv_rows(full)
    assert len(rows) == n_all + 1 and "onnx engine" in r.output
    assert list(rows[0]) == ["path", "verdict", "probability", "p_damaged", "review_reason", "error"]
    bad = [x for x in rows if x["path"].endswith("bad.png")]
    assert bad and "not an image" in bad[0]["error"]

    # An existing file is never clobbered silently.
    r = runner.invoke(app, ["predict", str(seed_run), *inputs, "--skip-bad", "--output", str(full)])
    assert r.exit_code == 2 and "--resume" in r.output

    # Interrupted run: 5 complete rows and half of the 6th on disk.
    part = tmp_path / "part.csv"
    lines = full.read_text().splitlines(keepends=True)
    part.write_text("".join(lines[:6]) + lines[6][:10])
    r = runner.invoke(app, ["predict", str(seed_run), *inputs, "--skip-bad", "--output", str(part), "--resume"])
    assert r.exit_code == 0, r.output
    assert "5 already in the file" in r.output
    resumed = _csv_rows(part)
    assert sorted(x["path"] for x in resumed) == sorted(x["path"] for x in rows)
    by_path = {x["path"]: x for x in rows}
    assert all(x["verdict"] == by_path[x["path"]]["verdict"] for x in resumed)

    # Three shards: disjoint, and together exactly the whole input (JSON lines this time).
    seen: list[str] = []
    for i in (1, 2, 3):
        out = tmp_path / f"shard{i}.jsonl"
        r = runner.invoke(app, ["predict", str(seed_run), *inputs, "--skip-bad", "--shard", f"{i}/3", "--output", str(out)])
        assert r.exit_code == 0, r.output
        got = [json.loads(line)["path"] for line in out.read_text().splitlines()]
        assert abs(len(got) - (n_all + 1) / 3) < 1
        seen += got
    assert len(seen) == len(set(seen)) == n_all + 1
    assert set(seen) == set(by_path)


def test_predict_stdout_formats_engines_and_cam(seed_run: Path, tmp_path_factory: pytest.TempPathFactory,
                                                tmp_path: Path) -> None:
    imgs = [str(p) for p in _images(tmp_path_factory)[:3]]
    r = runner.invoke(app, ["predict", str(seed_run), *imgs, "--format", "json", "--engine", "torch"])
    assert r.exit_code == 0, r.output
    torch_rows = [json.loads(line) for line in r.stdout.splitlines()]
    r = runner.invoke(app, ["predict", str(seed_run), *imgs, "--format", "json", "--engine", "onnx"])
    onnx_rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [x["verdict"] for x in torch_rows] == [x["verdict"] for x in onnx_rows]
    r = runner.invoke(app, ["predict", str(seed_run), *imgs, "--format", "csv"])
    assert r.exit_code == 0 and r.stdout.splitlines()[0].startswith("path,verdict,probability")
    assert len(r.stdout.splitlines()) == 4
    r = runner.invoke(app, ["predict", str(seed_run), *imgs])
    assert r.exit_code == 0 and "3 inspected" in r.stdout

    cams = tmp_path / "cams"
    r = runner.invoke(app, ["predict", str(seed_run), *imgs, "--cam", str(cams), "--format", "json"])
    assert r.exit_code == 0, r.output
    written = sorted(cams.glob("*.png"))
    assert len(written) == 3
    assert all(Path(json.loads(line)["cam"]).is_file() for line in r.stdout.splitlines())
    r = runner.invoke(app, ["predict", str(seed_run), *imgs, "--cam", str(cams), "--engine", "onnx"])
    assert r.exit_code == 2 and "--cam needs the torch engine" in r.output
    r = runner.invoke(app, ["predict", str(seed_run), *imgs, "--resume"])
    assert r.exit_code != 0 and "--resume needs --output" in r.output


def test_predictors_average_the_views_the_threshold_was_chosen_with(seed_run: Path) -> None:
    """A run thresholded on 8-view probabilities must be served with 8-view probabilities,
    by either engine, or the threshold means something else in production."""
    from inspectnet.data.augment import dihedral_views
    from inspectnet.predict import make_predictor

    torch.manual_seed(0)
    x = torch.randint(0, 256, (3, 3, 48, 48), dtype=torch.uint8)
    for engine in ("torch", "onnx"):
        pred = make_predictor(seed_run, engine=engine)
        pred.card.tta_views = 1
        single = pred.predict_batch(x)
        pred.card.tta_views = 8
        averaged = pred.predict_batch(x)
        expected = sum(pred._probs(v.contiguous()) for v in dihedral_views(x, 8)) / 8
        np.testing.assert_allclose(averaged, expected, atol=1e-6)
        assert not np.allclose(averaged, single, atol=1e-4)


# ---------------------------------------------------------------- int8


def test_int8_export_reports_parity_and_refuses_an_accuracy_drop(lite_run: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import inspectnet.quantize as q

    run = tmp_path / "run"
    shutil.copytree(lite_run, run)
    # Any loss at all is "too much" here: the run must keep its fp32 model and say why.
    monkeypatch.setattr(q, "MAX_DROP", -1.0)
    r = CliRunner().invoke(app, ["export", str(run), "--format", "onnx", "--int8"])
    assert r.exit_code == 1 and "keeping the fp32 model" in r.output and "--force" in r.output, r.output
    report = json.loads((run / "model" / "int8_report.json").read_text())
    assert report["adopted"] is False and report["calibration_images"] > 0
    for k in ("agreement", "accuracy_fp32", "accuracy_int8", "images_per_s_fp32", "images_per_s_int8"):
        assert 0 <= report[k] and np.isfinite(report[k]), k
    assert json.loads((run / "model" / "model.json").read_text())["onnx"]["file"] == "model.onnx"
    # --force adopts it: predict then runs the int8 graph like any other.
    r = CliRunner().invoke(app, ["export", str(run), "--format", "onnx", "--int8", "--force"])
    assert r.exit_code == 0 and "int8 vs fp32" in r.output, r.output
    card = json.loads((run / "model" / "model.json").read_text())
    assert card["onnx"]["file"] == "model.int8.onnx" and card["onnx"]["quantized"] == "int8"
    pred = make_predictor(run, engine="onnx")
    assert pred.path.name == "model.int8.onnx"
    x = torch.randint(0, 255, (4, 3, pred.img_size, pred.img_size), dtype=torch.uint8)
    p = pred.predict_batch(x)
    assert np.isfinite(p).all() and np.allclose(p.sum(1), 1, atol=1e-5)
    # A plain export points the run back to fp32.
    assert CliRunner().invoke(app, ["export", str(run), "--format", "onnx"]).exit_code == 0
    assert make_predictor(run, engine="onnx").path.name == "model.onnx"
