"""From scratch + data augmentation: the course's small CNN, random init, random flips,
rotations and zooms, early stopping on validation loss."""

from __future__ import annotations

from typing import Any

from ...config import TrainConfig
from ...data.augment import BatchAugment
from ...models import ModelInfo
from .. import loop
from ..approach import Approach, Context, Fitted, register_approach


@register_approach
class Scratch(Approach):
    name = "scratch"
    description = "random init + augmentation (the course CNN: seed-cnn)"
    default_model = compare_model = "seed-cnn"

    def defaults(self, cfg: TrainConfig, info: ModelInfo) -> dict[str, Any]:
        # bf16 autocast where it is native: the seed CNN's step runs 1.65x faster on such CPUs.
        bf16 = loop.bf16_native(loop.resolve_device(cfg.device))
        return {
            "weights": "none", "lr": 1e-3, "optimizer": "adamw",
            # From scratch the validation loss sat flat for 16 epochs on the demo set before it fell.
            "patience": 15,
            "augment_rot90": False, "augment_rotation": 36.0, "augment_zoom": 0.1,
            "precision": "bf16" if bf16 else "32",
            # Global average + max pooling instead of Flatten for the seed CNN (validation loss
            # 0.634 -> 0.578 and 0.572 -> 0.468 on two 1200-image medium sets, 40 epochs):
            # Flatten ties its weights to positions, and a chip can be anywhere.
            "pool": "catavgmax" if info.name == "seed-cnn" else "avg",
        }

    def fit(self, ctx: Context) -> Fitted:
        cfg, network = ctx.cfg, ctx.network
        assert network is not None
        ctx.say(f"  from scratch: random init, augmentation flip={cfg.augment_flip} rotation=±{cfg.augment_rotation}° "
                f"zoom=±{cfg.augment_zoom:.0%} rot90={cfg.augment_rot90}, {cfg.optimizer} lr={cfg.lr}, "
                f"up to {cfg.epochs} epochs")
        augment = BatchAugment(cfg.augment_flip, cfg.augment_rotation, cfg.augment_zoom, cfg.augment_rot90)
        stage = loop.Stage("scratch", lr=cfg.lr, base_lr_mult=1.0, epochs=cfg.epochs, augment=augment,
                           freeze_bn=False)
        res = loop.lightning_fit(ctx, network, stage)
        return Fitted(network, res.history, [f"best epoch {res.best_epoch} (lowest validation loss)"],
                      params_trainable=sum(p.numel() for p in network.parameters()))
