"""``train()``, top to bottom: sources -> split and checks -> cache -> approach.fit ->
evaluate -> bundle -> report. Each stage is one call; the approaches live in ``approaches/``."""

from __future__ import annotations

import contextlib
import signal
import time
from pathlib import Path
from typing import Any

from ..config import TrainConfig
from ..errors import TrainingInterrupted
from . import finish, prepare
from .approach import Live
from .finish import TrainResult
from .interrupt import Interrupts, interrupted_message


def train(data: str | Path | None = None, *, config: TrainConfig | None = None, out: str | Path | None = None,
          quiet: bool = False, resume: bool = False, **overrides: Any) -> TrainResult:
    """Train one approach end to end and write the run folder.

    Ctrl-C or SIGTERM while training saves ``RUN/checkpoints/<stage>-last.ckpt`` and raises
    :class:`TrainingInterrupted`; ``resume=True`` (``inspectnet train --resume RUN``) then
    continues to the configured number of epochs. In a DDP job every rank runs this; only
    rank 0 writes the run folder (the others return ``is_global_zero=False``, no metrics).

    Args:
        data: Folder of class folders, pre-split folder, or CSV manifest.
        config: A base config (e.g. ``TrainConfig.load("config.yaml")``); keyword overrides win.
        out: Run folder (default ``runs/<approach>-<model>``).
        quiet: No progress bars or messages.
        resume: Continue the Lightning stage from ``out/checkpoints`` when present.
        **overrides: Any ``TrainConfig`` field, e.g. ``approach="finetune", epochs=8``.

    Returns:
        TrainResult: the run folder, test metrics (validation's without a test split), card.

    Raises:
        DataError / ConfigError / ModelError with a one-line reason.
        TrainingInterrupted: on SIGINT/SIGTERM, naming the checkpoint and the resume command.
    """
    live = Live()
    with Interrupts() as interrupts:
        live.interrupts = interrupts
        try:
            return _pipeline(prepare.resolve_config(config, data, overrides), out, quiet, resume, live)
        except KeyboardInterrupt:
            signum = interrupts.signum or int(signal.SIGINT)
            run_dir = live.run_dir or Path(out or ".")
            raise TrainingInterrupted(interrupted_message(signum, run_dir, live.ckpt), signum, str(run_dir)) from None
        finally:
            if live.spill is not None:  # the decoded-image file is a cache of this process
                with contextlib.suppress(OSError):
                    live.spill.unlink(missing_ok=True)
                    live.spill.parent.rmdir()


def _pipeline(cfg: TrainConfig, out: str | Path | None, quiet: bool, resume: bool, live: Live) -> TrainResult:
    from ..runtime import tune_allocator

    tune_allocator()
    t_start = time.perf_counter()
    ctx = prepare.context(cfg, out, quiet, resume, live)  # sources, split, checks, defaults
    prepare.decode(ctx)  # every image decoded once
    ctx.network = prepare.network(ctx)
    t_train = time.perf_counter()
    fitted = ctx.approach.fit(ctx)
    train_seconds = time.perf_counter() - t_train
    for p in fitted.network.parameters():
        p.requires_grad_(True)
    if not ctx.rank0:  # another DDP rank: its weights equal rank 0's, which evaluates and writes
        return TrainResult(ctx.run_dir, {}, None, cfg, fitted.history, train_seconds,  # type: ignore[arg-type]
                           ["not rank 0 of the DDP job: rank 0 writes the run folder"], is_global_zero=False)
    scored = finish.score(ctx, fitted)  # threshold on validation, then the test split
    metrics = finish.describe(ctx, fitted, scored, train_seconds, t_start)
    return finish.write_outputs(ctx, fitted, metrics, scored, train_seconds)  # bundle, metrics, report
