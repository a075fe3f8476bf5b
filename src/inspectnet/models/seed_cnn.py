"""The classic course CNN, exactly: Conv 16/32/64 (3x3, same, ReLU) each followed by a 2x2
max-pool, Dropout(0.2), Flatten, Dense(128, ReLU), Dense(n_classes).

It follows timm's classifier contract (``forward_features``, ``forward_head``,
``num_features``, ``reset_classifier(n, global_pool=...)``) so that Grad-CAM, feature
extraction and fine-tuning treat it like any pretrained backbone. ``global_pool`` replaces
Flatten with global pooling (``catavgmax``: average and max pooling side by side, then
Dense(128)): Flatten ties each of its 2.1 M weights (at 128 px) to one position of the map,
while a defect can sit anywhere on a part in any pose. The ``scratch`` approach uses that
head by default (``--pool auto``); ``--pool avg`` keeps the course's Flatten.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from timm.layers import SelectAdaptivePool2d


class SeedCNN(nn.Module):
    """The from-scratch baseline of the course (Keras ``Sequential`` in the lecture).

    Args:
        num_classes: Output classes.
        img_size: Square input size; fixes the size of the flattened features (as in Keras).
        dropout: Dropout rate before Flatten.
        in_chans: Input channels.
    """

    def __init__(self, num_classes: int = 2, img_size: int = 180, dropout: float = 0.2, in_chans: int = 3) -> None:
        super().__init__()
        self.img_size = img_size
        self.features = nn.Sequential(
            nn.Conv2d(in_chans, 16, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        )
        side = img_size // 8  # three 2x2 pools, floor like Keras "valid" pooling
        self.num_features = 64
        self.feature_info = [dict(num_chs=64, reduction=8, module="features.7")]
        self.dropout = nn.Dropout(dropout)
        # Flatten (the course) or a global pool (``reset_classifier(n, global_pool=...)``).
        self.global_pool: nn.Module = nn.Flatten()
        self.fc1 = nn.Linear(64 * side * side, 128)
        self.act = nn.ReLU(inplace=True)
        self.head_hidden_size = 128
        self.classifier = nn.Linear(128, num_classes)
        self.num_classes = num_classes

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last convolutional feature map ``(B, 64, S/8, S/8)`` (Grad-CAM's layer)."""
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.act(self.fc1(self.global_pool(self.dropout(x))))
        return x if pre_logits else self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A new output layer; with ``global_pool`` (a timm pool type such as ``catavgmax``)
        also global pooling in place of Flatten and a new Dense(128) sized for it."""
        if global_pool is not None:
            self.global_pool = SelectAdaptivePool2d(pool_type=global_pool, flatten=True)
            self.fc1 = nn.Linear(64 * self.global_pool.feat_mult(), 128)
        self.num_classes = num_classes
        self.classifier = nn.Linear(128, num_classes)
