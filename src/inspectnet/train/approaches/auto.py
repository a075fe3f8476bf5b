"""``auto``: features first (seconds), then fine-tuning within ``--time-budget``; validation
decides which model is kept, and the run says which and why.

One extraction serves both: the features approach's head (its L2 chosen by cross-validation
on train+val, refitted on all of it) and finetune's own average-pooled head (the first
columns of the same features). Fine-tuning then trains for as many epochs as the budget
allows, estimated from the extraction's speed. The two meet on the validation images: the
features model by its out-of-fold probabilities there (no fold saw the image it scores),
the fine-tuned one by its predictions, over the same views.
"""

from __future__ import annotations

import time
import torch

from ...models import Network
from .. import loop
from ..approach import Context, Fitted, register_approach
from ..prepare import network as build_network
from ..heads import cached_features, head_on_features
from .features import Features, fit_cv
from .finetune import Finetune, _features_candidate, _Heads

# A joint epoch (forward and backward through the top blocks, one view) costs about this many
# forward passes of the frozen extraction per training image; validation adds one per image.
EPOCH_COST = 3.0


@register_approach
class Auto(Finetune):
    name = "auto"
    description = "features first, then fine-tuning within --time-budget; validation keeps the better"

    def fit(self, ctx: Context) -> Fitted:
        self._t0 = time.perf_counter()
        if not ctx.cfg.cv_folds or "val" not in ctx.cache:
            ctx.say("  auto: no validation split or cv_folds=0: the features approach alone")
            ctx.cfg.pool = "catavgmax-mid"
            ctx.network = build_network(ctx)  # falls back along the pool chain where it must
            ctx.save_config()
            return Features().fit(ctx)
        return super().fit(ctx)

    def fit_heads(self, ctx: Context, network: Network) -> _Heads:
        """Both heads from one extraction; the features model's by CV on train+val."""
        candidate = _features_candidate(ctx)
        t = time.perf_counter()
        feats = cached_features(ctx, candidate or network)
        n_views = (len(ctx.cache["train"]) + len(ctx.cache["val"])) * ctx.cfg.tta_views
        self._seconds_per_image = (time.perf_counter() - t) / max(n_views, 1)
        heads = self._candidate_by_cv(ctx, candidate, feats) if candidate is not None else None
        if candidate is not None:
            cols = candidate.avg_columns()
            feats = (feats[0][..., cols], feats[1][..., cols] if feats[1] is not None else None)
        hinfo = head_on_features(ctx, network, feats)
        own = _Heads(state={k: v.clone() for k, v in network.state_dict().items()},
                     val_loss=loop.val_loss(network, ctx.cache.get("val"), ctx.device),
                     val_loss_views=hinfo.get("val_loss_views"), val_balanced_accuracy=hinfo["val_balanced_accuracy"],
                     candidate=None, candidate_loss=None)
        if heads is not None:
            own.candidate, own.candidate_loss, own.candidate_fitted = heads
        return own

    def _candidate_by_cv(self, ctx: Context, candidate: Network,
                         feats: tuple[torch.Tensor, torch.Tensor | None]) -> tuple[Network, float, Fitted]:
        """The features model by CV on train+val, and its loss on the val images, out of fold."""
        fitted, info = fit_cv(ctx, candidate, feats)
        ctx.say(f"  features model: {fitted.notes[0]}")
        n_val = len(ctx.cache["val"])  # the out-of-fold probabilities come in train, then val order
        return candidate, loop.log_loss(info["oof_probs"][-n_val:], ctx.cache["val"].labels), fitted

    def joint_epochs(self, ctx: Context, heads: _Heads) -> tuple[int, float | None]:
        """As many epochs as the rest of the budget holds (at least one), and the budget as a
        hard stop: the cosine schedule then runs to its end instead of being cut off."""
        left = ctx.cfg.time_budget * 60 - (time.perf_counter() - self._t0)
        per_epoch = self._seconds_per_image * (EPOCH_COST * len(ctx.cache["train"]) + len(ctx.cache["val"]))
        epochs = int(max(1, min(ctx.cfg.epochs, left // max(per_epoch, 1e-3))))
        ctx.say(f"  auto: {left / 60:.1f} of {ctx.cfg.time_budget:g} minutes left; about {per_epoch:.0f} s an epoch, "
                f"so {epochs} joint epoch(s)")
        return epochs, max(left, 1.0)
