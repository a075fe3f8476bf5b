"""PatchCore (Roth et al., "Towards Total Recall in Industrial Anomaly Detection", CVPR 2022)
as an exportable ``nn.Module`` with the same outside as :class:`~.network.Network`.

Frozen EfficientNet-Lite features of two middle stages, each averaged over a 3x3
neighbourhood, the coarser one upsampled onto the finer grid, give one feature vector per
patch. A patch's anomaly score is its distance to the nearest patch of the memory bank
(intact training patches, reduced by greedy k-center coreset); the image score is the
largest patch score re-weighted by how crowded the bank is around its neighbour. The map
is the patch scores upsampled to the image and smoothed with a Gaussian.

``forward`` returns two-class *logits* ``z * onehot(positive)`` with ``z = (s - center) /
scale``, so the softmax probability of the positive class is ``sigmoid(z)``, monotone in
the score: thresholds, evaluation, predictors, serving and ONNX treat it like any
classifier, and the exported graph computes the score itself (features, distances to the
bank, max). Distances are ``|a|^2 - 2ab + |b|^2`` by matmul over bank chunks (exportable,
bounded memory); the bank is a persistent buffer, saved in ``weights.safetensors``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

#: Blocks of timm's EfficientNet-Lite whose outputs make the patch features: stride 8
#: (40 channels for Lite0) and stride 16 (112), the "middle stages" PatchCore takes.
LAYERS = (2, 4)
NEIGHBOURS = 9  # bank neighbours in PatchCore's re-weighting (anomalib's default)
SIGMA = 4.0  # Gaussian smoothing of the map, in input pixels (as in the paper)
BANK_CHUNK = 4096  # bank columns per distance matmul: (queries x 4096) floats at a time
QUERY_CHUNK = 8192  # query rows per matmul in eager mode


class PatchCore(nn.Module):
    """Memory-bank anomaly detector on a frozen backbone, classifier-shaped outside.

    Args:
        backbone: A timm EfficientNet (``conv_stem``, ``bn1``, ``blocks``); only the stem and
            the blocks up to the last of ``layers`` are kept.
        mean, std: Normalisation of the backbone's inputs (applied inside).
        num_classes: Outputs of ``forward`` (2: the positive class gets the score).
        layers: Block indices whose outputs are concatenated into patch features.
    """

    is_anomaly = True  # predictors and Grad-CAM callers use :meth:`anomaly_map` instead
    pool = "avg"  # the card's pool; nothing is pooled here

    def __init__(self, backbone: nn.Module, mean: tuple[float, ...], std: tuple[float, ...],
                 num_classes: int = 2, layers: tuple[int, ...] = LAYERS) -> None:
        super().__init__()
        self.layers = tuple(layers)
        self.stem = nn.Sequential(backbone.conv_stem, backbone.bn1)
        self.blocks = nn.Sequential(*list(backbone.blocks)[: max(layers) + 1])
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        dim = sum(int(self.blocks[i][-1].conv_pwl.out_channels) for i in self.layers)
        self.register_buffer("bank", torch.zeros(1, dim))
        # score -> logit: z = (s - center) / scale; map -> [0, 1]: (m - map_lo) / (map_hi - map_lo)
        self.register_buffer("center", torch.zeros(()))
        self.register_buffer("scale", torch.ones(()))
        self.register_buffer("map_lo", torch.zeros(()))
        self.register_buffer("map_hi", torch.ones(()))
        self.register_buffer("pos_onehot", F.one_hot(torch.tensor(0), num_classes).float())
        k = 2 * int(4 * SIGMA + 0.5) + 1
        g = torch.exp(-((torch.arange(k) - k // 2).float() ** 2) / (2 * SIGMA**2))
        self.register_buffer("gauss", (g / g.sum()).view(1, 1, 1, k), persistent=False)
        for p in self.parameters():
            p.requires_grad_(False)

    @property
    def num_features(self) -> int:
        """Dimension of one patch feature (and of a bank row)."""
        return int(self.bank.shape[1])

    def train(self, mode: bool = True) -> PatchCore:
        # The backbone is frozen for good: BatchNorm keeps its ImageNet statistics.
        return super().train(False)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def patch_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, D, h, w)`` locally aware patch features of images ``(B, 3, H, W)`` in [0, 1]."""
        h = self.stem(self.normalize(x))
        taps = []
        for i, block in enumerate(self.blocks):
            h = block(h)
            if i in self.layers:
                taps.append(F.avg_pool2d(h, 3, stride=1, padding=1))  # the 3x3 neighbourhood
        size = taps[0].shape[-2:]
        taps = [taps[0]] + [F.interpolate(t, size=size, mode="bilinear", align_corners=False) for t in taps[1:]]
        return torch.cat(taps, 1)

    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Patch features as rows ``(B * h * w, D)`` (float32) and the grid ``(h, w)``."""
        f = self.patch_features(x).float()
        return f.permute(0, 2, 3, 1).reshape(-1, f.shape[1]), (int(f.shape[-2]), int(f.shape[-1]))

    def nearest(self, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Euclidean distance of each row of ``q`` to its nearest bank row, and that row."""
        if q.shape[0] > QUERY_CHUNK and not torch.jit.is_tracing():
            parts = [self.nearest(q[s : s + QUERY_CHUNK]) for s in range(0, q.shape[0], QUERY_CHUNK)]
            return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
        best = idx = None
        for s in range(0, self.bank.shape[0], BANK_CHUNK):  # unrolled in the exported graph
            b = self.bank[s : s + BANK_CHUNK]
            # |q|^2 is the same along a row: it is added after the minimum (one pass less).
            m, i = torch.addmm((b * b).sum(1)[None], q, b.T, alpha=-2).min(1)
            if best is None:
                best, idx = m, i
            else:
                better = m < best
                best, idx = torch.where(better, m, best), torch.where(better, i + s, idx)
        return (best + (q * q).sum(1)).clamp_min(0).sqrt(), idx

    def patch_scores(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(B, h, w)`` patch scores, the patch rows ``(B, h*w, D)`` and their neighbours' indices."""
        q, (h, w) = self.embed(x)
        d, idx = self.nearest(q)
        b = x.shape[0]
        return d.view(b, h, w), q.view(b, h * w, -1), idx.view(b, h * w)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """Image anomaly scores ``(B,)`` (PatchCore's re-weighted maximum patch score)."""
        return self._image_score(*self.patch_scores(x))

    def _image_score(self, d: torch.Tensor, q: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        flat = d.flatten(1)
        s, star = flat.max(1)
        rows = torch.arange(flat.shape[0], device=flat.device)
        feat, nn_row = q[rows, star], self.bank[idx[rows, star]]  # (B, D) each
        # The bank's neighbours of the patch's neighbour: a test patch near a crowded part of
        # the bank is less anomalous than one whose neighbour sits alone (paper, eq. 7).
        k = min(NEIGHBOURS, int(self.bank.shape[0]))
        d_nn = (nn_row * nn_row).sum(1, keepdim=True) - 2 * nn_row @ self.bank.T + (self.bank**2).sum(1)[None]
        support = d_nn.topk(k, dim=1, largest=False).indices  # (B, k), the neighbour itself first
        dist = (feat[:, None, :] - self.bank[support]).pow(2).sum(-1).clamp_min(0).sqrt()
        return (1 - dist.softmax(1)[:, 0]) * s

    def anomaly_map(self, x: torch.Tensor) -> torch.Tensor:
        """Per-pixel anomaly scores ``(B, H, W)``: patch scores upsampled and smoothed."""
        d = self.patch_scores(x)[0]
        return self._smooth(d, x.shape[-2:])

    def _smooth(self, d: torch.Tensor, size: Any) -> torch.Tensor:
        m = F.interpolate(d[:, None], size=tuple(size), mode="bilinear", align_corners=False)
        k = self.gauss.shape[-1]
        m = F.conv2d(F.pad(m, (k // 2, k // 2, 0, 0), mode="reflect"), self.gauss)
        m = F.conv2d(F.pad(m, (0, 0, k // 2, k // 2), mode="reflect"), self.gauss.transpose(-1, -2))
        return m[:, 0]

    def scores_and_maps(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Image scores ``(B,)`` and maps ``(B, H, W)`` from one feature pass."""
        d, q, idx = self.patch_scores(x)
        return self._image_score(d, q, idx), self._smooth(d, x.shape[-2:])

    def unit_map(self, m: torch.Tensor) -> torch.Tensor:
        """A map on the model's own fixed scale in [0, 1] (not per image: an intact part's
        map stays cool instead of being stretched to full colour)."""
        return ((m - self.map_lo) / (self.map_hi - self.map_lo).clamp_min(1e-12)).clamp(0, 1)

    def logits(self, s: torch.Tensor) -> torch.Tensor:
        """Two-class logits of image scores: only the positive class's logit moves."""
        return ((s - self.center) / self.scale)[:, None] * self.pos_onehot[None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(self.score(x))

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kw: Any) -> None:
        # A bank of any size loads into a freshly built model (``bundle.load_model``).
        bank = state_dict.get(prefix + "bank")
        if bank is not None and bank.shape != self.bank.shape:
            self.bank = torch.empty_like(bank, device=self.bank.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kw)


# ---------------------------------------------------------------- fitting helpers


@torch.no_grad()
def greedy_coreset(feats: torch.Tensor, ratio: float, *, chunk: int = 16384, proj_dim: int = 64,
                   seed: int = 0) -> torch.Tensor:
    """Indices of a greedy k-center coreset of ``feats`` (``(N, D)``), ``ratio * N`` of them.

    Exact greedy k-center costs ``k * N * D``, which is hours at a million patches; we run it
    on random chunks of ``chunk`` rows (each chunk keeps ``ratio`` of its rows), on a
    Johnson-Lindenstrauss projection to ``proj_dim`` dimensions as the paper does. The
    chunks are a random permutation, so each one mixes patches of many images, and the cost
    is ``ratio * N * chunk * proj_dim``: linear in N.
    """
    n, dim = feats.shape
    if ratio >= 1 or n <= 1:
        return torch.arange(n)
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=g)
    proj = torch.randn(dim, proj_dim, generator=g) / math.sqrt(proj_dim) if dim > proj_dim else None
    keep = []
    for s in range(0, n, chunk):
        idx = perm[s : s + chunk]
        z = feats[idx].float()
        z = z @ proj if proj is not None else z
        keep.append(idx[_greedy(z, max(1, round(ratio * len(idx))))])
    return torch.cat(keep)


def _greedy(z: torch.Tensor, k: int) -> torch.Tensor:
    z2 = (z * z).sum(1)
    sel = torch.empty(k, dtype=torch.long)
    mind = torch.full((len(z),), float("inf"))
    i = 0
    for j in range(k):
        sel[j] = i
        mind = torch.minimum(mind, z2 - 2 * (z @ z[i]) + z2[i])
        i = int(mind.argmax())
    return sel
