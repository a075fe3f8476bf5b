"""Augmentation on whole batches of tensors, one random draw per image.

Per-image PIL transforms cost more CPU than a small CNN's forward pass; here a batch gets
its flips, rotations and zooms as one ``affine_grid`` + ``grid_sample`` call, on whatever
device the batch lives on.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


class BatchAugment(torch.nn.Module):
    """Random horizontal/vertical flip, rotation (+-degrees) and zoom (+-fraction), per image.

    Args:
        flip: Flip left-right and up-down, each with probability 0.5 (top views have no "up").
        rotation: Maximum rotation in degrees (the course's ``RandomRotation(0.1)`` = 36 deg).
        zoom: Maximum zoom as a fraction (``RandomZoom(0.1)``).
    """

    def __init__(self, flip: bool = True, rotation: float = 36.0, zoom: float = 0.1, rot90: bool = False) -> None:
        super().__init__()
        self.flip, self.rotation, self.zoom, self.rot90 = flip, rotation, zoom, rot90

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if not self.training:
            return x
        b = x.shape[0]
        dev = x.device

        def rand(*shape: int) -> torch.Tensor:
            return torch.rand(*shape, generator=generator).to(dev)

        if self.rot90 and x.shape[-1] == x.shape[-2]:
            # A transpose per image plus the two flips below reach all 8 flip/rot90 views,
            # exactly (no interpolation): a top view of a part has no "up".
            t = (rand(b) < 0.5).view(b, 1, 1, 1)
            x = torch.where(t, x.transpose(-1, -2), x)
        if self.rotation == 0 and self.zoom == 0:
            if not self.flip:
                return x
            fx = (rand(b) < 0.5).view(b, 1, 1, 1)
            fy = (rand(b) < 0.5).view(b, 1, 1, 1)
            x = torch.where(fx, x.flip(-1), x)
            return torch.where(fy, x.flip(-2), x)

        angle = (rand(b) * 2 - 1) * math.radians(self.rotation)
        scale = 1 + (rand(b) * 2 - 1) * self.zoom
        sx = torch.ones(b, device=dev)
        sy = torch.ones(b, device=dev)
        if self.flip:
            sx = torch.where(rand(b) < 0.5, -sx, sx)
            sy = torch.where(rand(b) < 0.5, -sy, sy)
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        theta = torch.zeros(b, 2, 3, device=dev, dtype=x.dtype)
        theta[:, 0, 0] = cos * sx
        theta[:, 0, 1] = -sin * sy
        theta[:, 1, 0] = sin * sx
        theta[:, 1, 1] = cos * sy
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        # "reflection" fills the corners with tray-like texture rather than black wedges.
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def dihedral_views(x: torch.Tensor, n: int) -> list[torch.Tensor]:
    """The first ``n`` of the 8 flip/rot90 views of a batch (1, 2, 4 or 8)."""
    views = [x, x.flip(-1), x.flip(-2), x.flip(-1).flip(-2)]
    views += [v.transpose(-1, -2) for v in views]
    return views[:n]
