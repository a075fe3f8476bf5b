"""The exportable model: normalisation baked in front of any backbone.

``Network`` takes float images in [0, 1] (``(B, 3, H, W)``) so that preprocessing is one
fixed rule everywhere (torch, ONNX, REST): decode, resize, divide by 255. Mean and std
travel inside the module as buffers, and so inside the exported graph.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


MID_POOL = "catavgmax-mid"


def timm_pool(pool: str) -> str:
    """The timm global-pool type behind one of our pool names."""
    return "catavgmax" if pool == MID_POOL else pool


class Network(nn.Module):
    """``backbone`` with a normalisation layer, exposing the same classifier contract."""

    def __init__(self, backbone: nn.Module, mean: tuple[float, ...], std: tuple[float, ...],
                 pool: str = "avg") -> None:
        super().__init__()
        self.backbone = backbone
        self.pool = pool  # avg | catavgmax | catavgmax-mid (see TrainConfig.pool)
        # ``catavgmax-mid``: the output of the block before the last (timm's
        # ``forward_intermediates(extra_blocks=True)`` numbering) joins the last map as channels.
        self.tap = len(backbone.blocks) - 1 if pool == MID_POOL else None
        self.tap_channels = 0
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        if self.tap is not None:
            with torch.no_grad():  # the tapped block's width, whatever the architecture
                was = backbone.training
                backbone.eval()
                _, (t,) = backbone.forward_intermediates(torch.zeros(1, 3, 64, 64), indices=[self.tap],
                                                         extra_blocks=True)
                backbone.train(was)
            self.tap_channels = int(t.shape[1])
        if pool != "avg":
            self.reset_classifier(int(backbone.num_classes))

    @property
    def num_features(self) -> int:
        """Channels of ``forward_features``'s map (the tapped block's included)."""
        return int(self.backbone.num_features) + self.tap_channels

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if self.tap is None:
            return self.backbone.forward_features(self.normalize(x))
        # One pass, no hooks: the block before the head adds mid-level channels (edges, notches)
        # that the ImageNet-specific last block has already mixed away.
        final, (t,) = self.backbone.forward_intermediates(self.normalize(x), indices=[self.tap], extra_blocks=True)
        if t.shape[-2:] != final.shape[-2:]:
            t = F.adaptive_max_pool2d(t, final.shape[-2:])
        return torch.cat([final, t], 1)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.backbone.forward_head(x, pre_logits=pre_logits)

    def pooled_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled pre-classifier features: what the ``features`` approach trains a head on."""
        return self.forward_head(self.forward_features(x), pre_logits=True)

    def avg_columns(self) -> slice:
        """The columns of :meth:`pooled_features` that are the last map's average pool: all
        of an ``avg`` network's pooled features, the first block of a ``catavgmax(-mid)`` one
        (timm concatenates the average pool before the max pool)."""
        return slice(0, int(self.backbone.num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.backbone.get_classifier()

    def reset_classifier(self, num_classes: int) -> None:
        if self.pool == "avg":
            self.backbone.reset_classifier(num_classes)
        else:  # timm's default argument would silently put average pooling back
            self.backbone.reset_classifier(num_classes, global_pool=timm_pool(self.pool))
        if self.tap_channels:
            # timm sizes the classifier for its own last map; ours has the tapped channels too.
            self.backbone.classifier = nn.Linear(2 * self.num_features, num_classes)
