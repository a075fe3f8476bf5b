"""Exact resume: a run killed (SIGKILL) or stopped (Ctrl-C, mid-epoch) and continued with
``--resume`` ends with the same weights, byte for byte, and the same metrics as a run that
was never interrupted (issue #19, item 7).

The interrupted run is a subprocess; the uninterrupted one and the resume run in this
process (an interpreter start with torch and Lightning costs more than the training), all
on one thread, so that every run sums in the same order. The signal comes from inside the
subprocess, at a chosen batch of a chosen epoch, so that the test does not depend on
timing: SIGKILL lands mid-epoch after an epoch-end checkpoint; SIGINT lands mid-epoch and
leaves a mid-epoch checkpoint to replay from.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from inspectnet.cli import app

from conftest import make_toy_set

ROOT = Path(__file__).resolve().parents[2]

# Runs the CLI with a signal sent to itself at the start of batch B of epoch E (0-based).
_DRIVER = """
import os, signal, sys
from inspectnet.train.module import ClassifierModule
name, epoch, batch = os.environ["INSPECTNET_TEST_SIGNAL_AT"].split(":")
start = ClassifierModule.on_train_batch_start
def at(self, b, i):
    if self.trainer.current_epoch == int(epoch) and i == int(batch):
        os.kill(os.getpid(), getattr(signal, name))
    return start(self, b, i)
ClassifierModule.on_train_batch_start = at
from inspectnet.cli import main
main()
"""


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # 12 per class: 16 training images, 4 batches of 4 an epoch.
    return make_toy_set(tmp_path_factory.mktemp("resume") / "data", n_per_class=12, size=32)


def _stopped_run(args: list[str], signal_at: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT / "src"), INSPECTNET_TEST_SIGNAL_AT=signal_at)
    for k in ("RANK", "LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_JOB_ID"):
        env.pop(k, None)  # a test run inside a SLURM job or torchrun must not look like a rank
    return subprocess.run([sys.executable, "-c", _DRIVER, "train", *args], env=env, capture_output=True, text=True,
                          timeout=180)


def _train_here(args: list[str]) -> None:
    torch.set_num_threads(1)  # the subprocess's OMP_NUM_THREADS (restored after the test, conftest)
    res = CliRunner().invoke(app, ["train", *args])
    assert res.exit_code == 0, res.output


def _args(data: Path, run: Path, approach: str) -> list[str]:
    args = [str(data), "--approach", approach, "--model", "seed-cnn", "--out", str(run), "--img-size", "32",
            "--device", "cpu", "--epochs", "4", "--batch-size", "4", "--seed", "5", "--quiet"]
    return args + (["--weights", "none"] if approach == "finetune" else [])  # the five steps, at toy cost


def _last_weights(run: Path, stage: str) -> str:
    """A digest of the network as the last epoch left it (the bundle holds the best epoch's,
    or finetune's head-only weights when the joint stage lost: those could hide a difference)."""
    state = torch.load(run / "checkpoints" / f"{stage}-last.ckpt", weights_only=True)["state_dict"]
    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode() + state[k].cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _outcome(run: Path, stage: str) -> tuple[str, str, dict[str, Any], list[dict[str, str]]]:
    digest = hashlib.sha256((run / "model" / "weights.safetensors").read_bytes()).hexdigest()
    metrics = json.loads((run / "metrics.json").read_text())
    for k in ("train_seconds", "total_seconds"):
        metrics.pop(k, None)
    with open(run / "history.csv") as f:
        history = list(csv.DictReader(f))
    return digest, _last_weights(run, stage), metrics, history


@pytest.mark.parametrize(
    ("approach", "signal_at", "code", "mid_epoch_ckpt"),
    [("scratch", "SIGKILL:2:1", -signal.SIGKILL, False), ("finetune", "SIGINT:1:1", 130, True)],
    ids=["sigkill-scratch", "sigint-mid-epoch-finetune"],
)
def test_resume_ends_on_the_weights_of_an_uninterrupted_run(data: Path, tmp_path: Path, approach: str,
                                                            signal_at: str, code: int, mid_epoch_ckpt: bool) -> None:
    _train_here(_args(data, tmp_path / "ref", approach))
    run = tmp_path / "run"
    stopped = _stopped_run(_args(data, run, approach), signal_at)
    assert stopped.returncode == code, stopped.stderr[-3000:]
    assert not (run / "metrics.json").exists()
    ckpt = torch.load(run / "checkpoints" / f"{approach}-last.ckpt", weights_only=True)
    state = ckpt["exact_resume"]
    # SIGKILL at epoch 2 batch 1: epoch 1's end checkpoint (4 of 4 batches); SIGINT at epoch 1
    # batch 1: saved after that batch, 2 of 4 done, the rest of the epoch to replay.
    assert (state["epoch"], state["batches_done"]) == ((1, 2) if mid_epoch_ckpt else (1, 4))

    _train_here(["--resume", str(run), "--quiet"])
    want, got = _outcome(tmp_path / "ref", approach), _outcome(run, approach)
    assert got[0] == want[0], "weights.safetensors differs from the uninterrupted run's"
    assert got[1] == want[1], "the last epoch's weights differ from the uninterrupted run's"
    assert got[2] == want[2], "metrics.json differs from the uninterrupted run's"
    assert got[3] == want[3], "history.csv differs from the uninterrupted run's"
