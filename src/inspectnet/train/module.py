"""The LightningModule: steps, optimiser, schedule and per-epoch metrics.

The plain ``Network`` it wraps imports no Lightning, so it exports and serves on its own.
Batches arrive as uint8 images; conversion to float and augmentation happen here, on the
batch and on the batch's device, after transfer (cheap on CPU, free on GPU).
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..data.augment import BatchAugment
from ..evaluate.metrics import _balanced_accuracy


def set_bn_eval(module: nn.Module) -> None:
    """Keep BatchNorm running statistics frozen: small batches of dull metal would
    otherwise overwrite ImageNet statistics and make the loss jump at unfreezing."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


class ClassifierModule(L.LightningModule):
    """Train a ``Network`` with cross-entropy, optional class weights and augmentation.

    Args:
        network: The model (``inspectnet.models.Network``).
        lr: Head learning rate.
        base_lr_mult: The base's learning rate as a fraction of ``lr`` (1.0 from scratch).
        weight_decay: Decoupled weight decay.
        optimizer: ``adam``, ``adamw`` or ``sgd``.
        class_weights: Per-class loss weights, or None.
        augment: The batch augmentation (identity at eval).
        freeze_bn: Keep BatchNorm layers in eval mode while training (fine-tuning).
        warmup_epochs: Linear warm-up before cosine decay.
        label_smoothing: Cross-entropy label smoothing.
    """

    def __init__(
        self,
        network: nn.Module,
        lr: float = 1e-3,
        base_lr_mult: float = 1.0,
        weight_decay: float = 1e-4,
        optimizer: str = "adamw",
        class_weights: torch.Tensor | None = None,
        augment: BatchAugment | None = None,
        freeze_bn: bool = False,
        warmup_epochs: int = 0,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        self.network = network
        self.augment = augment or BatchAugment(False, 0, 0)
        self.lr, self.base_lr_mult, self.weight_decay = lr, base_lr_mult, weight_decay
        self.optimizer_name = optimizer
        self.freeze_bn = freeze_bn
        self.warmup_epochs = warmup_epochs
        self.label_smoothing = label_smoothing
        self.register_buffer("class_weights", class_weights if class_weights is not None else torch.tensor([]))
        self._val_probs: list[torch.Tensor] = []
        self._val_labels: list[torch.Tensor] = []
        self._train_loss: list[float] = []
        self._train_correct = 0
        self._train_seen = 0

    # ---- data on the device -------------------------------------------------------------
    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float().div_(255.0)
        return x.contiguous(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)

    def _loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        w = self.class_weights if self.class_weights.numel() else None
        return F.cross_entropy(logits.float(), y, weight=w, label_smoothing=self.label_smoothing)

    def train(self, mode: bool = True) -> ClassifierModule:  # type: ignore[override]
        super().train(mode)
        if mode and self.freeze_bn:
            set_bn_eval(self.network)
        return self

    # ---- steps ----------------------------------------------------------------------------
    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        images, y = batch
        self.augment.train()
        x = self.augment(self._prepare(images))
        logits = self.network(x)
        loss = self._loss(logits, y)
        self._train_loss.append(float(loss.detach()))
        self._train_correct += int((logits.argmax(1) == y).sum())
        self._train_seen += int(y.numel())
        self.log("train_loss", loss, prog_bar=True, on_step=True, on_epoch=False, batch_size=len(y))
        return loss

    def on_train_epoch_start(self) -> None:
        self._train_loss, self._train_correct, self._train_seen = [], 0, 0

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # A Ctrl-C checkpoint is mid-epoch: the resumed epoch's training loss and accuracy
        # still cover the batches before it.
        checkpoint["train_epoch_sums"] = {"loss": list(self._train_loss), "correct": self._train_correct,
                                          "seen": self._train_seen}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        sums = checkpoint.get("train_epoch_sums")
        if sums is not None:
            self._train_loss, self._train_correct, self._train_seen = list(sums["loss"]), sums["correct"], sums["seen"]

    def on_train_batch_start(self, batch: object, batch_idx: int) -> None:
        # Lightning restores each submodule's own train/eval flag around validation and at
        # fit start (it does not go through our ``train()``), which switched BatchNorm back
        # to batch statistics: the loss jumped from 0.36 to 3.2 at unfreezing. Enforce it
        # on every batch; 50 flag writes cost nothing.
        if self.freeze_bn:
            set_bn_eval(self.network)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        images, y = batch
        logits = self.network(self._prepare(images)).float()
        self._val_probs.append(logits.softmax(1).cpu())
        self._val_labels.append(y.cpu())

    def on_validation_epoch_end(self) -> None:
        if not self._val_probs:
            return
        probs = torch.cat(self._val_probs)
        y = torch.cat(self._val_labels)
        self._val_probs, self._val_labels = [], []
        if self.trainer.world_size > 1:
            # Each DDP rank saw a slice of the validation set. Balanced accuracy is not a mean of
            # per-rank values, so gather every prediction (DistributedSampler pads the slices to
            # equal length by repeating up to world_size - 1 images) and compute once, the same
            # numbers on every rank: early stopping and the best epoch then agree across ranks.
            dev = self.trainer.strategy.root_device
            probs = self.all_gather(probs.to(dev)).reshape(-1, probs.shape[1]).cpu()
            y = self.all_gather(y.to(dev)).reshape(-1).cpu()
        loss = F.nll_loss(probs.clamp_min(1e-7).log(), y).item()
        pred = probs.argmax(1)
        n = probs.shape[1]
        cm = np.zeros((n, n), dtype=np.int64)
        np.add.at(cm, (y.numpy(), pred.numpy()), 1)
        self.log("val_loss", loss, prog_bar=True)
        self.log("val_acc", float((pred == y).float().mean()), prog_bar=True)
        self.log("val_balanced_accuracy", _balanced_accuracy(cm))
        # Validation runs at the end of each training epoch, so this epoch's training numbers
        # are complete here; logging them now keeps one row per epoch consistent.
        if self._train_seen:
            self.log("train_loss_epoch", float(np.mean(self._train_loss)), sync_dist=True)
            self.log("train_acc", self._train_correct / self._train_seen, sync_dist=True)

    # ---- optimiser ----------------------------------------------------------------------------
    def _param_groups(self) -> list[dict[str, Any]]:
        head = list(self.network.get_classifier().parameters())
        head_ids = {id(p) for p in head}
        base = [p for p in self.network.parameters() if p.requires_grad and id(p) not in head_ids]
        groups = [{"params": [p for p in head if p.requires_grad], "lr": self.lr}]
        if base:
            groups.append({"params": base, "lr": self.lr * self.base_lr_mult})
        return groups

    def configure_optimizers(self) -> Any:
        groups = self._param_groups()
        name = self.optimizer_name
        if name == "sgd":
            opt = torch.optim.SGD(groups, momentum=0.9, nesterov=True, weight_decay=self.weight_decay)
        elif name == "adam":
            opt = torch.optim.Adam(groups, weight_decay=self.weight_decay)
        else:
            opt = torch.optim.AdamW(groups, weight_decay=self.weight_decay)
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        per_epoch = max(total // max(self.trainer.max_epochs or 1, 1), 1)
        warm = self.warmup_epochs * per_epoch

        def factor(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            progress = (step - warm) / max(total - warm, 1)
            return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
