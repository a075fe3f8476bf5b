"""Anomaly detection trained on intact parts only: PatchCore (``models/patchcore.py``).

The frozen EfficientNet-Lite base runs once over the intact training images; their patch
features, reduced by greedy k-center coreset, become the memory bank. No label of a damaged
image is needed to fit: damaged images in validation only set the threshold, and without
them the threshold is a high quantile of the intact validation scores. The network's
logits carry the score (``PatchCore.logits``), so thresholding, evaluation, the bundle,
predictors and ONNX treat it like any classifier.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ...config import TrainConfig
from ...errors import DataError
from ...models import ModelInfo, create_model, model_info
from ...models.patchcore import PatchCore, greedy_coreset
from ..approach import Approach, Context, Fitted, register_approach

if TYPE_CHECKING:
    from ...data.sources import Sample

PREFIX = "patchcore-"
ANOMALY_CLASS = "damaged"  # the positive class of a data set that holds intact images only


@register_approach
class Anomaly(Approach):
    name = "anomaly"
    description = "PatchCore on intact images only: memory bank of frozen Lite patch features, anomaly maps"
    distributed = False  # one extraction, one coreset, in one process
    needs_all_classes = False
    default_model = PREFIX + "efficientnet_lite0"

    def defaults(self, cfg: TrainConfig, info: ModelInfo) -> dict[str, Any]:
        # One view: the score is a maximum over patches and the map is per pixel; averaging
        # flipped views would cost 8x and blur the map. ``validate`` filled tta_views for
        # classifiers (from orientation); the bank is fitted and thresholded on one view.
        cfg.tta_views = 1
        # The model's own input size, not the photos' (the classifiers' default): the bank grows
        # with the patches per image (S/8)^2 and so does each patch's search, so scoring costs
        # S^4. At 288 px a real 912-image bank took over 10 min to score 641 images; at 224 px
        # 4 min, with image AUROC 0.864 (bench/notes/real_anomaly.md). --img-size overrides.
        return {"img_size": info.default_img_size, "weights": "auto", "lr": 1e-3, "optimizer": "adamw", "patience": 0, "pool": "avg",
                "augment_rot90": False, "augment_rotation": 0.0, "augment_zoom": 0.0, "precision": "32"}

    def classes(self, samples: list[Sample], cfg: TrainConfig) -> list[str]:
        """Two classes, the anomalous one possibly without images; intact ones in train."""
        from ...evaluate.metrics import pick_positive

        found = sorted({s.label for s in samples})
        if len(found) == 1 and found[0] != (cfg.positive or ANOMALY_CLASS):
            found = sorted([found[0], cfg.positive or ANOMALY_CLASS])
        if len(found) != 2:
            raise DataError(f"approach=anomaly needs intact images and at most one other class (the anomaly); "
                            f"got class(es) {', '.join(found)}; merge the defect classes into one folder, "
                            "or use another --approach")
        train = [s.label for s in samples if s.split == "train"]
        positive = pick_positive(found, {c: train.count(c) for c in found}, cfg.positive)
        normal = next(c for c in found if c != positive)
        if normal not in train:
            raise DataError(f"approach=anomaly trains on the {normal!r} images of the train split, and it has "
                            f"none ({len(train)} training images, all {positive!r})")
        return found

    def fit(self, ctx: Context) -> Fitted:
        net = _patchcore(ctx)
        cfg, cache, pos = ctx.cfg, ctx.cache, ctx.classes.index(ctx.positive)
        normal = 1 - pos
        train = cache["train"].images[cache["train"].labels == normal]
        ctx.say(f"  anomaly: PatchCore memory bank of {len(train)} intact training images on frozen "
                f"{ctx.info.name[len(PREFIX):]} blocks {net.layers}, coreset {cfg.coreset_ratio:g}")
        feats = _bank_features(net, train, cfg, ctx.device)
        sel = greedy_coreset(feats, cfg.coreset_ratio, seed=cfg.seed)
        net.bank = feats[sel.to(feats.device)].contiguous().to(ctx.device)
        del feats
        notes = [f"memory bank: {len(sel):,} patches x {net.num_features} features "
                 f"({net.bank.numel() * 4 / 2**20:.1f} MiB), coreset {cfg.coreset_ratio:g} of "
                 f"{len(train)} intact training images"]
        val_probs, note = _calibrate(ctx, net, pos)
        notes.append(note)
        row = {"stage": "bank", "epoch": 1, "bank_patches": len(sel), "train_images": len(train)}
        return Fitted(net, [row], notes, params_trainable=0, val_probs=val_probs)


def _patchcore(ctx: Context) -> PatchCore:
    """The context's network as PatchCore: as built, or a plain Lite network's base wrapped
    (``--model efficientnet_lite2``; the card then records ``patchcore-efficientnet_lite2``)."""
    net = ctx.network
    if isinstance(net, PatchCore):
        return net
    name = PREFIX + ctx.info.name
    try:
        info = model_info(name)
    except Exception:  # noqa: BLE001 - any lookup failure means: not a supported base
        from ...errors import ConfigError

        raise ConfigError(f"approach=anomaly needs an EfficientNet-Lite base; got --model {ctx.info.name}; "
                          "use efficientnet_lite0, efficientnet_lite1 or efficientnet_lite2") from None
    pc = create_model(name, ctx.n_classes, pretrained=False)
    assert isinstance(pc, PatchCore) and net is not None
    pc.stem.load_state_dict(torch.nn.Sequential(net.backbone.conv_stem, net.backbone.bn1).state_dict())
    pc.blocks.load_state_dict(torch.nn.Sequential(*list(net.backbone.blocks)[: len(pc.blocks)]).state_dict())
    ctx.info, ctx.cfg.model = info, name
    ctx.save_config()
    ctx.network = pc.to(ctx.device)
    return ctx.network  # type: ignore[return-value]


@torch.inference_mode()
def _bank_features(net: PatchCore, images: torch.Tensor, cfg: TrainConfig, device: torch.device) -> torch.Tensor:
    """Patch features ``(N * h * w, D)`` of uint8 images, refusing beyond ``bank_max_mb``."""
    net.eval()
    if len(images) == 0:
        raise DataError("approach=anomaly found no intact training image to build its memory bank from")
    probe = net.embed(images[:1].to(device).float().div(255))[0]
    per_image = probe.shape[0] * probe.shape[1] * 4
    need = len(images) * per_image / 2**20
    if need > cfg.bank_max_mb:
        fit = int(cfg.bank_max_mb * 2**20 // per_image)
        raise DataError(
            f"the memory bank would collect {len(images)} images x {probe.shape[0]} patches x {probe.shape[1]} "
            f"features x 4 bytes = {need:,.0f} MiB before the coreset, over --bank-max-mb {cfg.bank_max_mb}; "
            f"train on at most {fit} intact images, lower --img-size, or raise --bank-max-mb")
    out = torch.empty(len(images) * probe.shape[0], probe.shape[1])
    step = probe.shape[0]
    for s in range(0, len(images), cfg.batch_size):
        x = images[s : s + cfg.batch_size].to(device).float().div_(255)
        q = net.embed(x)[0]
        out[s * step : s * step + len(q)] = q.cpu()
    return out


@torch.inference_mode()
def _scores(net: PatchCore, images: torch.Tensor, device: torch.device, batch: int) -> torch.Tensor:
    return torch.cat([net.score(images[s : s + batch].to(device).float().div_(255)).cpu()
                      for s in range(0, len(images), batch)]) if len(images) else torch.zeros(0)


def _calibrate(ctx: Context, net: PatchCore, pos: int) -> tuple[np.ndarray | None, str]:
    """Set ``center``/``scale`` (score -> logit) and the map's display range from the intact
    validation scores; the validation probabilities and a note on the threshold's source.

    ``center`` is the ``anomaly_quantile`` of the intact validation scores, so that without
    damaged validation images (the pipeline's threshold is then 0.5) flagging means "above
    that quantile"; with them the pipeline picks the threshold for the target recall.
    """
    cfg, cache = ctx.cfg, ctx.cache
    split = "val" if "val" in cache else "train"
    labels = cache[split].labels
    s = _scores(net, cache[split].images, ctx.device, cfg.batch_size)
    intact = s[labels != pos]
    q = cfg.anomaly_quantile
    center = float(torch.quantile(intact, q)) if len(intact) else float(s.max())
    median = float(intact.median()) if len(intact) else 0.0
    # The median intact image gets p(positive) = 1 - q: the probability reads as a tail share.
    scale = max((center - median) / math.log(q / (1 - q)), 1e-6)
    n_dam = int((labels == pos).sum())
    platt = _platt(s.double().numpy(), (labels == pos).numpy()) if split == "val" and n_dam and len(intact) else None
    if platt is not None:  # damaged images in validation: p(damaged | score) fitted on them
        center, scale = platt
    net.center.fill_(center)
    net.scale.fill_(scale)
    net.pos_onehot.zero_()[pos] = 1
    net.map_lo.fill_(median * 0.5)
    net.map_hi.fill_(max(center * 1.25, median * 0.5 + 1e-6))
    if split == "train":
        return None, (f"no validation split: scores calibrated on the training images (optimistic: their "
                      f"patches are in the bank); threshold at their {q:g} quantile")
    probs = net.logits(s.to(net.center.device)).softmax(1).cpu().numpy()
    if platt is not None:
        return probs, (f"score -> probability fitted on {n_dam} damaged and {len(intact)} intact validation "
                       "images (logistic); they set the decision")
    if n_dam:
        return probs, (f"validation's {n_dam} damaged images do not rank above its intact ones; threshold = "
                       f"the {q:g} quantile of the {len(intact)} intact validation scores (--anomaly-quantile)")
    return probs, (f"no damaged image in validation: threshold = the {q:g} quantile of the scores of the "
                   f"{len(intact)} intact validation images (--anomaly-quantile)")


def _platt(scores: np.ndarray, damaged: np.ndarray) -> tuple[float, float] | None:
    """``(center, scale)`` of the logistic fit p(damaged | s) = sigmoid((s - center) / scale).

    Platt scaling of the score on validation: unlike a temperature it moves the boundary too,
    so the argmax decides where validation's damaged and intact images part. None when the
    fit finds no positive slope (the score does not rank damaged images higher there).
    """
    from sklearn.linear_model import LogisticRegression

    mu, sd = float(scores.mean()), float(scores.std()) or 1.0
    lr = LogisticRegression(C=100.0, max_iter=1000).fit(((scores - mu) / sd)[:, None], damaged.astype(int))
    a, b = float(lr.coef_[0, 0]), float(lr.intercept_[0])
    if not (a > 1e-6 and math.isfinite(b)):
        return None
    return mu - b * sd / a, sd / a
