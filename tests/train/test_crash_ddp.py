"""Trustworthy at any size: Ctrl-C/SIGTERM and resume, DDP on CPU, the on-disk image cache."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from inspectnet.bundle import load_model
from inspectnet.cli import app
from inspectnet.data.cache import build_cache
from inspectnet.data.sources import discover
from inspectnet.data.split import stratified_split

from conftest import make_toy_set

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def small_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_toy_set(tmp_path_factory.mktemp("crash") / "data", n_per_class=24, size=32)


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT / "src"))
    for k in ("RANK", "LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_JOB_ID"):
        env.pop(k, None)  # a test run inside a SLURM job or torchrun must not look like a rank
    return env


def _cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "inspectnet.cli", "train", *args]


def _train_args(data: Path, run: Path, *extra: str) -> list[str]:
    # The seed CNN from scratch (the default before features was): a Lightning stage to stop and resume.
    return [str(data), "--approach", "scratch", "--model", "seed-cnn", "--out", str(run), "--img-size", "32",
            "--device", "cpu", "--patience", "0", "--quiet", *extra]


def _bundle_absent_or_loadable(run: Path) -> None:
    model = run / "model"
    if model.exists() and any(model.iterdir()):
        load_model(run)  # raises ModelError on a half-written bundle
    assert not list(run.rglob("*.tmp")), "a temporary file of an atomic write was left behind"


@pytest.mark.parametrize(
    ("sig", "code", "approach", "stage"),
    [(signal.SIGTERM, 143, "scratch", "scratch"), (signal.SIGINT, 130, "finetune", "finetune")],
    ids=["sigterm-scratch", "sigint-finetune"],
)
def test_interrupt_saves_a_checkpoint_and_resume_finishes(small_set: Path, tmp_path: Path, sig: int, code: int,
                                                          approach: str, stage: str) -> None:
    run = tmp_path / "run"
    epochs = 20
    args = _train_args(small_set, run, "--epochs", str(epochs), "--approach", approach)
    if approach == "finetune":
        args += ["--model", "seed-cnn", "--weights", "none"]  # the five steps, at toy cost
    proc = subprocess.Popen(_cmd(*args), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ckpt = run / "checkpoints" / f"{stage}-last.ckpt"
    deadline = time.monotonic() + 90
    while not ckpt.is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, f"training ended before it could be interrupted: {proc.communicate()}"
    assert ckpt.is_file(), "no checkpoint after the first epoch"
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, (out, err)
    assert "Traceback" not in err, err
    assert f"inspectnet train --resume {run}" in err, err
    assert "training interrupted" in err
    assert ckpt.is_file()
    assert not (run / "metrics.json").exists()
    _bundle_absent_or_loadable(run)

    # In-process (the same CLI; spares a second interpreter start with torch and Lightning).
    res = CliRunner().invoke(app, ["train", "--resume", str(run), "--quiet"])
    assert res.exit_code == 0, res.output
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs_run"] == epochs
    assert 0.0 <= metrics["accuracy"] <= 1.0
    lm = load_model(run)
    assert lm.card.approach == approach
    with open(run / "history.csv") as f:
        joint = [int(r["epoch"]) for r in csv.DictReader(f) if r["stage"] == stage]
    assert joint == list(range(1, epochs + 1)), "history.csv lost or repeated epochs across the resume"
    assert not (run / "cache").exists()


def test_config_refuses_ddp_for_the_features_approach() -> None:
    from inspectnet.config import TrainConfig
    from inspectnet.errors import ConfigError

    with pytest.raises(ConfigError, match=r"approach=features runs in one process.*devices=2"):
        TrainConfig(approach="features", devices=2, strategy="ddp").validate()


@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                    reason="torch.distributed with the gloo backend is not available on this platform")
def test_ddp_on_two_cpu_processes_writes_one_complete_run(small_set: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    res = subprocess.run(_cmd(*_train_args(small_set, run, "--epochs", "2", "--devices", "2", "--strategy", "ddp")),
                         env=_env(), capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"], "a rank wrote outside the run folder"
    names = {p.name for p in run.iterdir()}
    assert {"config.yaml", "split.csv", "metrics.json", "history.csv", "model", "checkpoints"} <= names
    assert "cache" not in names
    assert not list(run.rglob("*.tmp"))
    m = json.loads((run / "metrics.json").read_text())
    with open(run / "split.csv") as f:
        n_test = sum(r["split"] == "test" for r in csv.DictReader(f))
    assert m["split"] == "test" and m["n"] == n_test
    assert 0.0 <= m["accuracy"] <= 1.0 and 0.0 <= m["balanced_accuracy"] <= 1.0
    assert m["epochs_run"] == 2
    with open(run / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2]  # one writer: no duplicated rows
    for r in rows:
        assert 0.0 <= float(r["val_acc"]) <= 1.0 and float(r["val_loss"]) > 0
    load_model(run)


def test_cache_spills_to_a_memmap_with_identical_images_and_training(small_set: Path, tmp_path: Path) -> None:
    from inspectnet.train.run import train

    samples = stratified_split(discover(small_set), 0.15, 0.15, 0)
    classes = ["damaged", "intact"]
    ram, _ = build_cache(samples, classes, 32, progress=False)
    spill = tmp_path / "c" / "images.u8"
    disk, _ = build_cache(samples, classes, 32, progress=False, spill_path=spill, cache_mb=0)
    assert spill.is_file() and spill.stat().st_size == len(samples) * 3 * 32 * 32
    for split in ("train", "val", "test"):
        assert ram[split].spill_path is None and disk[split].spill_path == spill
        assert torch.equal(ram[split].images, disk[split].images)
        assert torch.equal(ram[split].labels, disk[split].labels)
        assert ram[split].paths == disk[split].paths
    del disk

    kw = dict(img_size=32, epochs=1, patience=0, device="cpu", quiet=True, seed=3)
    a = train(small_set, out=tmp_path / "ram", **kw)
    b = train(small_set, out=tmp_path / "disk", cache_mb=0, **kw)
    assert not (tmp_path / "disk" / "cache").exists(), "the memmap file outlived training"
    wa = load_file(str(a.run_dir / "model" / "weights.safetensors"))
    wb = load_file(str(b.run_dir / "model" / "weights.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert a.metrics["accuracy"] == b.metrics["accuracy"]
