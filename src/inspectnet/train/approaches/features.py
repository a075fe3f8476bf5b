"""Transfer learning by feature extraction: a frozen pretrained base runs once over the
images, and a logistic-regression head is fitted on the cached pooled features."""

from __future__ import annotations

from typing import Any

import torch

from ...config import TrainConfig
from ...models import ModelInfo, Network
from ..approach import Approach, Context, Fitted, register_approach
from ..heads import cached_features, fit_head_cv, head_on_features, head_params, install_head


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
            "augment_rot90": cfg.orientation == "any", "augment_rotation": 0.0, "augment_zoom": 0.0,
            "precision": "32",
            # Average and max pooling of the last map and the block before it (5-fold CV on the
            # demo train+val images 0.905 -> 0.924); the pipeline falls back to catavgmax / avg
            # where a backbone has no block list or no pooling layer.
            "pool": "avg" if info.name == "seed-cnn" else "catavgmax-mid",
        }

    def fit(self, ctx: Context) -> Fitted:
        network = ctx.network
        assert network is not None
        if ctx.cfg.cv_folds and "val" in ctx.cache:
            return fit_cv(ctx, network)[0]
        ctx.say(f"  feature extraction: frozen {ctx.info.name} base (BatchNorm frozen), logistic-regression head "
                f"on cached pooled features ({ctx.cfg.tta_views} view(s)), L2 chosen on validation")
        info = head_on_features(ctx, network, cached_features(ctx, network))
        row = {"stage": "head", "epoch": 1, "val_loss": info["val_loss"],
               "val_balanced_accuracy": info["val_balanced_accuracy"], "l2": info["l2"]}
        return Fitted(network, [row], [f"head L2={info['l2']:g} chosen on validation"],
                      params_trainable=head_params(network))


def fit_cv(ctx: Context, network: Network, feats: tuple[torch.Tensor, torch.Tensor | None] | None = None
           ) -> tuple[Fitted, dict[str, Any]]:
    """The head on train+val, its L2 strength chosen by k-fold cross-validation there.

    Every image of train and val takes part in the choice and in the final fit; the
    out-of-fold probabilities stand in for validation (the threshold is chosen on them).
    ``feats``: the train and val features when they are already extracted (``auto``).

    Returns:
        The fitted model and ``fit_head_cv``'s info (``oof_probs`` in train, then val order).
    """
    k = ctx.cfg.cv_folds
    if feats is None:
        ctx.say(f"  feature extraction: frozen {ctx.info.name} base (BatchNorm frozen), logistic-regression head "
                f"on cached pooled features ({ctx.cfg.tta_views} view(s)), L2 chosen by {k}-fold cross-validation "
                "on train+val, then refitted on all of it")
    for p in network.parameters():
        p.requires_grad_(False)
    f_tr, f_va = feats if feats is not None else cached_features(ctx, network)
    assert f_va is not None
    y = torch.cat([ctx.cache["train"].labels, ctx.cache["val"].labels])
    head, info = fit_head_cv(torch.cat([f_tr, f_va]), y, ctx.n_classes, ctx.class_weights, folds=k,
                             seed=ctx.cfg.seed)
    install_head(network, head.to(ctx.device))
    row = {"stage": "head", "epoch": 1, "val_loss": info["cv_loss"], "val_acc": info["cv_accuracy"],
           "l2": info["l2"], "cv_folds": k}
    note = (f"{network.pool} head, L2={info['l2']:g} chosen by {k}-fold cross-validation on {len(y)} train+val "
            f"images (out-of-fold log loss {info['cv_loss']:.4f}, accuracy {info['cv_accuracy']:.4f}); "
            "refitted on all")
    fitted = Fitted(network, [row], [note], params_trainable=head_params(network), val_probs=info["oof_probs"],
                    val_labels=y.numpy(), val_name=f"cv{k} (train+val, out of fold)")
    return fitted, info
