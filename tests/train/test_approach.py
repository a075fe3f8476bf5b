"""The Approach contract: a new approach is one class and its registration, nothing else."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from inspectnet.cli import app
from inspectnet.errors import ConfigError
from inspectnet.train import approach as ap

runner = CliRunner()
README = Path(__file__).resolve().parents[2] / "README.md"


class Toy(ap.Approach):
    """A head on the seed CNN's random features: the smallest approach that trains."""

    name = "toy"
    description = "a logistic-regression head on a random seed CNN"
    calls: list[ap.Context] = []

    def defaults(self, cfg: Any, info: Any) -> dict[str, Any]:
        return {"weights": "none", "pool": "avg", "precision": "32", "lr": 0.5}

    def fit(self, ctx: ap.Context) -> ap.Fitted:
        from inspectnet.train.heads import cached_features, head_on_features, head_params

        Toy.calls.append(ctx)
        info = head_on_features(ctx, ctx.network, cached_features(ctx, ctx.network))
        return ap.Fitted(ctx.network, [{"stage": "head", "epoch": 1, "val_loss": info["val_loss"]}],
                         ["toy head fitted"], params_trainable=head_params(ctx.network))


@pytest.fixture
def toy(monkeypatch: pytest.MonkeyPatch) -> type[Toy]:
    ap.list_approaches()  # the built-in ones first, into the registry we then copy
    monkeypatch.setattr(ap, "_APPROACHES", dict(ap._APPROACHES))
    Toy.calls = []
    return ap.register_approach(Toy)


def test_a_registered_toy_approach_trains_from_the_cli(toy_data: Path, tmp_path: Path, toy: type[Toy]) -> None:
    out = tmp_path / "run"
    res = runner.invoke(app, ["train", str(toy_data), "--approach", "toy", "--model", "seed-cnn", "--img-size", "32",
                              "--out", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    (ctx,) = Toy.calls
    assert set(ctx.cache) == {"train", "val", "test"} and ctx.network is not None
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["approach"] == "toy" and cfg["lr"] == 0.5 and cfg["weights"] == "none"  # its defaults, recorded
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["approach"] == "toy" and metrics["notes"] == ["toy head fitted"]
    assert metrics["n"] > 0 and (out / "model" / "weights.safetensors").is_file() and (out / "report.html").is_file()
    assert "toy" in ap.list_approaches()


def test_an_unknown_approach_names_the_registered_ones(toy: type[Toy]) -> None:
    with pytest.raises(ConfigError, match=r"approach='nope' is not allowed; choose one of scratch, features, "
                                          r"finetune, anomaly, auto, toy"):
        ap.get_approach("nope")


def test_an_approach_needs_a_name_and_a_description() -> None:
    class Nameless(Toy):
        name = ""

    with pytest.raises(TypeError, match="needs a name"):
        ap.register_approach(Nameless)


def test_the_cli_help_and_the_readme_list_every_built_in_approach() -> None:
    res = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "400"})
    text = README.read_text()
    for name in ap.list_approaches():
        desc = ap.get_approach(name).description
        assert name in res.output
        assert re.search(rf"^\| `{name}` \| {re.escape(desc)} \|", text, re.M), f"README lacks the {name} row"


def test_the_facade_functions_are_callable_whatever_was_imported_first() -> None:
    # Subpackages bind to the package's attributes of the same name on import; the facade
    # must still hand out callables (before the fix it gave modules, or a RecursionError).
    code = ("import inspectnet.train.run, inspectnet.evaluate.run, inspectnet.predict.stream\n"
            "from inspectnet import train, evaluate, predict, Predictor, TrainConfig, load_model\n"
            "assert all(callable(f) for f in (train, evaluate, predict, Predictor, TrainConfig, load_model))\n"
            "import inspectnet.train.run as r; assert r.train.__name__ == 'train'\n")
    subprocess.run([sys.executable, "-c", code], check=True)
    subprocess.run([sys.executable, "-c", "from inspectnet import predict, evaluate, train; assert callable(predict)"],
                   check=True)
