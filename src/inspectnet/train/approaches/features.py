"""Transfer learning by feature extraction: a frozen pretrained base runs once over the
images, and a logistic-regression head is fitted on the cached pooled features."""

from __future__ import annotations

from typing import Any

from ...config import TrainConfig
from ...models import ModelInfo
from ..approach import Approach, Context, Fitted, register_approach
from ..heads import cached_features, head_on_features, head_params


@register_approach
class Features(Approach):
    name = "features"
    description = "frozen pretrained base, logistic-regression head on its cached features"
    distributed = False  # one extraction in one process; nothing to spread over ranks

    def defaults(self, cfg: TrainConfig, info: ModelInfo) -> dict[str, Any]:
        return {
            "weights": "auto", "lr": 1e-3, "optimizer": "adamw", "patience": 5,
            # Exact flips and 90-degree turns only: interpolated rotations shift the statistics
            # the head was fitted on.
            "augment_rot90": True, "augment_rotation": 0.0, "augment_zoom": 0.0, "precision": "32",
            # Average and max pooling of the last map and the block before it (5-fold CV on the
            # demo train+val images 0.905 -> 0.924); the pipeline falls back to catavgmax / avg
            # where a backbone has no block list or no pooling layer.
            "pool": "avg" if info.name == "seed-cnn" else "catavgmax-mid",
        }

    def fit(self, ctx: Context) -> Fitted:
        network = ctx.network
        assert network is not None
        ctx.say(f"  feature extraction: frozen {ctx.info.name} base (BatchNorm frozen), logistic-regression head "
                f"on cached pooled features ({ctx.cfg.tta_views} view(s)), L2 chosen on validation")
        info = head_on_features(ctx, network, cached_features(ctx, network))
        row = {"stage": "head", "epoch": 1, "val_loss": info["val_loss"],
               "val_balanced_accuracy": info["val_balanced_accuracy"], "l2": info["l2"]}
        return Fitted(network, [row], [f"head L2={info['l2']:g} chosen on validation"],
                      params_trainable=head_params(network))
