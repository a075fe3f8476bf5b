"""The exportable model: normalisation baked in front of any backbone.

``Network`` takes float images in [0, 1] (``(B, 3, H, W)``) so that preprocessing is one
fixed rule everywhere (torch, ONNX, REST): decode, resize, divide by 255. Mean and std
travel inside the module as buffers, and so inside the exported graph.
"""

from __future__ import annotations

import torch
import torch.nn as nn


class Network(nn.Module):
    """``backbone`` with a normalisation layer, exposing the same classifier contract."""

    def __init__(self, backbone: nn.Module, mean: tuple[float, ...], std: tuple[float, ...],
                 pool: str = "avg") -> None:
        super().__init__()
        self.backbone = backbone
        self.pool = pool  # timm global-pool type in front of the classifier
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    @property
    def num_features(self) -> int:
        return int(self.backbone.num_features)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_features(self.normalize(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.backbone.forward_head(x, pre_logits=pre_logits)

    def pooled_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled pre-classifier features: what the ``features`` approach trains a head on."""
        return self.forward_head(self.forward_features(x), pre_logits=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.backbone.get_classifier()

    def reset_classifier(self, num_classes: int) -> None:
        if self.pool == "avg":
            self.backbone.reset_classifier(num_classes)
        else:  # timm's default argument would silently put average pooling back
            self.backbone.reset_classifier(num_classes, global_pool=self.pool)
