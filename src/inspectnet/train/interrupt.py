"""Stop training cleanly on Ctrl-C or SIGTERM, and know which process of a DDP job we are.

A signal that lands in the middle of an optimiser step would leave half-updated weights,
so inside a Lightning stage the handler only *records* the signal; :class:`StopOnSignal`
acts on it at the end of the next training batch (the point where Lightning's own
step-based checkpoints are taken): it saves ``RUN/checkpoints/<stage>-last.ckpt`` and
stops the stage. Outside a stage (decoding, feature extraction, evaluation) the signal
raises ``KeyboardInterrupt`` at once: there is no half-done state worth keeping there, and
the bundle and reports are written atomically or inside a :meth:`Interrupts.deferred`
block. A second signal always stops at once (the last epoch's checkpoint stays).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import lightning as L
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from ..io import atomic_write

SIGNAL_NAMES = {int(signal.SIGINT): "Ctrl-C (SIGINT)", int(signal.SIGTERM): "SIGTERM"}


def is_rank_zero() -> bool:
    """True in the process that owns the run folder: rank 0 of a DDP job, or a lone process.

    Before ``trainer.fit`` there is no trainer to ask, and Lightning's ``ddp`` launcher
    re-runs the whole command for the other ranks, so the environment is the only witness:
    ``RANK`` (torchrun), ``SLURM_PROCID`` (srun with several tasks), else ``NODE_RANK`` and
    ``LOCAL_RANK`` (set by Lightning's launcher in the processes it starts).
    """
    env = os.environ
    if "RANK" in env:
        return int(env["RANK"]) == 0
    if int(env.get("SLURM_NTASKS", "1") or 1) > 1 and "SLURM_PROCID" in env:
        return int(env["SLURM_PROCID"]) == 0
    return int(env.get("NODE_RANK", "0") or 0) == 0 and int(env.get("LOCAL_RANK", "0") or 0) == 0


class _Stop(BaseException):
    """Raised inside a Lightning stage to leave ``trainer.fit`` after a checkpoint.

    A ``BaseException`` that is not ``KeyboardInterrupt``: Lightning answers
    ``KeyboardInterrupt`` with ``sys.exit(1)``, and this one it re-raises after its
    ``on_exception`` hooks and teardown.
    """


class Interrupts:
    """SIGINT/SIGTERM handlers for the length of ``train()``; the previous ones come back after.

    Only installed in the main thread (Python allows signal handlers nowhere else); from
    another thread ``train()`` runs with the process's handlers as they are.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._defer = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> Interrupts:
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.getsignal(s)
                signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for s, h in self._old.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)
        self._old = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        first = self.signum is None
        if first:
            self.signum = signum
        if self._defer and first:
            return  # acted on at the next batch end (StopOnSignal)
        raise KeyboardInterrupt

    def reclaim_sigterm(self) -> None:
        """Put our SIGTERM handler back in place of the one Lightning installs for ``fit``."""
        if self._old and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._handle)

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """Record signals instead of raising them; raise on leaving the block if one came."""
        prev, self._defer = self._defer, True
        try:
            yield
        finally:
            self._defer = prev
        if self.signum is not None and not prev:
            raise KeyboardInterrupt

    @property
    def requested(self) -> bool:
        return self.signum is not None


class StopOnSignal(L.Callback):
    """Save a checkpoint at a consistent point and leave the stage once a signal was recorded.

    Checked at every training batch end and at each epoch start. With several processes
    (DDP) the ranks agree first (one max-reduce of a flag per batch, as Lightning does for
    SIGTERM), so all of them save and stop at the same batch instead of one waiting in a
    collective for the others.
    """

    def __init__(self, interrupts: Interrupts, ckpt_path: Path) -> None:
        self.interrupts = interrupts
        self.ckpt_path = ckpt_path
        self.saved = False

    def _agreed(self, trainer: L.Trainer) -> bool:
        flag = self.interrupts.requested
        if trainer.world_size > 1:
            t = torch.tensor(float(flag), device=trainer.strategy.root_device)
            flag = bool(trainer.strategy.reduce(t, reduce_op="max") > 0)
        return flag

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        # After an epoch's last batch, let its validation and end-of-epoch checkpoint happen
        # (on_train_epoch_start stops next): resumed from a checkpoint taken here, Lightning
        # would count the epoch as done and skip its validation.
        if batch_idx + 1 >= trainer.num_training_batches:
            return
        if self._agreed(trainer):
            # Mid-epoch: Lightning resumes from here (the epoch's remaining batch count).
            trainer.save_checkpoint(self.ckpt_path)
            self.saved = True
            raise _Stop

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning's SIGTERM handler (installed for fit, restored after) broadcasts a tensor
        # from inside the handler, which deadlocks DDP ranks that are in another collective at
        # that moment (seen: 2 CPU ranks hung). Ours only records the signal; the ranks agree
        # at the next batch end.
        self.interrupts.reclaim_sigterm()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # A signal during validation: the epoch's checkpoint was written by ModelCheckpoint.
        if self._agreed(trainer):
            raise _Stop

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        # Lightning kills the other ranks it launched on KeyboardInterrupt; do the same for ours
        # so that none is left waiting for rank 0.
        from lightning.pytorch.strategies.launchers import _SubprocessScriptLauncher

        launcher = getattr(trainer.strategy, "launcher", None)
        if isinstance(exception, _Stop) and isinstance(launcher, _SubprocessScriptLauncher):
            launcher.kill(signal.SIGKILL)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to a temporary file beside their target, then renamed onto it.

    Lightning's own save moves a file from the system's temporary folder, which is a copy into
    place when the run folder is on another file system: a SIGKILL during it left a truncated
    checkpoint that ``--resume`` could not read.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        # Lightning's own format (its resume state, never our model bundle), written beside
        # the target and renamed onto it.
        atomic_write(path, lambda tmp: super(AtomicCheckpointIO, self).save_checkpoint(checkpoint, tmp, storage_options))


def interrupted_message(signum: int, run_dir: Path, ckpt: Path | None) -> str:
    what = SIGNAL_NAMES.get(int(signum), f"signal {signum}")
    where = f"checkpoint {ckpt}" if ckpt is not None and ckpt.is_file() else "no checkpoint yet (it starts over)"
    return f"training interrupted by {what}; {where}. Continue with: inspectnet train --resume {run_dir}"
