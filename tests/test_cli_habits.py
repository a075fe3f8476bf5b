"""The conventions users expect of a CLI: --version, python -m, completion, choices in the
help, --device auto, and --json documents on stdout for scripts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import inspectnet
from inspectnet.cli import app

from conftest import make_toy_set

runner = CliRunner()
WIDE = {"COLUMNS": "500"}


def _ok(args: list[str], **kwargs) -> object:
    res = runner.invoke(app, args, **kwargs)
    assert res.exit_code == 0, res.output + repr(res.exception)
    return res


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """One epoch of the course CNN at 32 px, trained through `train --json`."""
    root = tmp_path_factory.mktemp("habits")
    data = make_toy_set(root / "data", n_per_class=16, size=32, seed=5)
    res = _ok(["train", str(data), "--approach", "scratch", "--model", "seed-cnn", "--img-size", "32",
               "--epochs", "1", "--patience", "0", "--device", "cpu", "--out", str(root / "run"), "--json"])
    return root / "run", json.loads(res.stdout)


def test_version_and_python_dash_m() -> None:
    assert _ok(["--version"]).stdout.strip() == f"inspectnet {inspectnet.__version__}"
    proc = subprocess.run([sys.executable, "-m", "inspectnet", "--version"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"inspectnet {inspectnet.__version__}"


def test_choices_from_the_registries_are_in_the_help() -> None:
    from inspectnet.models import list_models
    from inspectnet.train.approach import list_approaches

    text = _ok(["train", "--help"], env=WIDE).output
    assert "<" + "|".join(list_approaches()) + ">" in text
    assert "Registered: " + ", ".join(list_models()) in text
    assert "<adam|adamw|sgd>" in text and "<auto|cpu|cuda>" in text
    text = _ok(["predict", "--help"], env=WIDE).output
    assert "<auto|torch|onnx" in text and "<table|json|csv>" in text and "<auto|cpu|cuda|cuda:N>" in text
    assert "<test|val|train|all>" in _ok(["evaluate", "--help"], env=WIDE).output


def test_inference_commands_default_to_device_auto() -> None:
    from typer.main import get_command

    commands = get_command(app).commands
    for name in ("train", "evaluate", "predict", "explain", "serve"):
        [device] = [p for p in commands[name].params if p.name == "device"]
        assert device.default in ("auto", None), name  # train: None = the config's "auto"


def test_shell_completion_offers_the_choices() -> None:
    res = _ok([], prog_name="inspectnet", env={"_INSPECTNET_COMPLETE": "complete_bash",
                                               "COMP_WORDS": "inspectnet train --approach f", "COMP_CWORD": "3"})
    assert res.stdout.split() == ["features", "finetune"]
    res = _ok([], prog_name="inspectnet", env={"_INSPECTNET_COMPLETE": "complete_bash",
                                               "COMP_WORDS": "inspectnet predict run --device c", "COMP_CWORD": "4"})
    assert res.stdout.split() == ["cpu", "cuda"]


def test_a_bad_device_is_a_usage_error_naming_the_allowed_ones(tiny_run: tuple[Path, dict]) -> None:
    run, _ = tiny_run
    res = runner.invoke(app, ["predict", str(run), str(run), "--device", "gpu"], env=WIDE)
    assert res.exit_code == 2
    assert "device='gpu' is not allowed; choose one of auto, cpu, cuda or cuda:N" in res.output


def test_train_json(tiny_run: tuple[Path, dict]) -> None:
    run, doc = tiny_run
    assert doc["run_dir"] == str(run) and doc["approach"] == "scratch" and doc["model"] == "seed-cnn"
    assert doc["metrics"]["split"] == "test" and 0 <= doc["metrics"]["accuracy"] <= 1
    assert isinstance(doc["notes"], list) and doc["train_seconds"] >= 0


def test_evaluate_json(tiny_run: tuple[Path, dict]) -> None:
    run, trained = tiny_run
    res = _ok(["evaluate", str(run), "--no-report", "--json", "--out", str(run / "eval.json")])
    doc = json.loads(res.stdout)  # the table went to stderr: stdout is the document alone
    assert doc["split"] == "test" and doc["report"] is None and doc["localization"] is None
    assert doc["metrics"]["accuracy"] == pytest.approx(trained["metrics"]["accuracy"])
    assert "accuracy" in res.stderr


def test_models_json() -> None:
    from inspectnet.models import list_models

    doc = json.loads(_ok(["models", "--json"]).stdout)
    assert [r["name"] for r in doc] == list_models()
    assert {"name", "input", "pretrained", "about"} <= set(doc[0])


def test_compare_json(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # The comparison itself trains every approach (minutes); here the CLI's side of it.
    row = {"model": "seed-cnn", "params_trainable": 10, "params_total": 10, "epochs": 1, "train_seconds": 1.0,
           "balanced_accuracy": 0.9, "f1_positive": 0.9, "recall_positive": 0.9, "roc_auc": 0.9}
    rows = [{**row, "approach": "scratch", "accuracy": 0.9, "run_dir": str(tmp_path / "scratch")},
            {**row, "approach": "features", "accuracy": float("nan"), "run_dir": str(tmp_path / "features")}]

    def fake_compare(data, **kwargs):
        print("training...")  # a library's own print must not reach the JSON on stdout
        return rows

    monkeypatch.setattr("inspectnet.compare.compare", fake_compare)
    res = _ok(["compare", str(tmp_path), "--out", str(tmp_path), "--json"])
    doc = json.loads(res.stdout)
    assert [r["approach"] for r in doc] == ["scratch", "features"] and doc[1]["accuracy"] is None
    assert "training..." in res.stderr


def test_the_cli_and_its_help_import_no_torch() -> None:
    # Every command, --help included, used to wait for torch and timm (2-5 s, 850 MB).
    code = ("import sys, inspectnet, inspectnet.cli; "
            "print(sorted(m for m in ('torch', 'timm', 'lightning') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
    res = subprocess.run([sys.executable, "-m", "inspectnet", "--help"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "train" in res.stdout
